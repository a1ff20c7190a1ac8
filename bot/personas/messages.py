"""What an admin is told when a persona's training ends, in the persona's terms.

:meth:`bot.jobs.manager.JobOutcome.message` speaks of a corpus, its key and its old style, none
of which a persona has: it is trained from the general base to become its own text, so the one
figure that matters is the held-out loss on that text, before (the general base) and after (the
persona). The /persona cog and ``charbot persona create`` both say it with :func:`training_ended`.
"""

from __future__ import annotations

from bot.jobs.manager import JobOutcome
from bot.store.jobs import CANCELLED, DONE, REFUSED
from model.evaluate import bits
from model.finetune import FinetuneReport


def heldout_line(report: FinetuneReport) -> str:
    """The held-out loss on the persona's own text before and after, in nats and bits per character."""
    b, a = report.before.contributed, report.after.contributed
    line = (f"Held-out loss on its own text (the last {report.heldout_chars:,} characters, not trained on): "
            f"{b:.3f} -> {a:.3f} nats/char ({bits(b):.3f} -> {bits(a):.3f} bits/char), the general base "
            "before and the persona after.")
    if report.heldout_chars < report.min_heldout_chars:
        line += (f" It rests on fewer than {report.min_heldout_chars:,} characters, so it is noisy; more text "
                 "gives a firmer figure.")
    return line


def training_ended(name: str, outcome: JobOutcome) -> str:
    """The persona is trained and speaks, or why it cannot yet (refused, cancelled, failed)."""
    report = outcome.report
    figures = f"\n{heldout_line(report)}" if report is not None else ""
    if outcome.state == DONE:
        forced = (" Served because it was forced, although it was no better than the general base on its own text."
                  if outcome.forced else "")
        return (f"The persona **{name}** is trained (job {outcome.job_id}, {report.steps if report else 0} steps) "
                f"and now speaks from v{outcome.version}.{forced}{figures}")
    unable = " It cannot speak until it is trained: delete it and create it again"
    if outcome.state == REFUSED:
        return (f"The persona **{name}** was created, but its training (job {outcome.job_id}) was refused: "
                f"{outcome.error}.{unable} with more text, or forced.{figures}")
    if outcome.state == CANCELLED:
        return (f"The persona **{name}** was created, but its training (job {outcome.job_id}) was cancelled"
                f"{': ' + outcome.error if outcome.error else ''}.{unable}.")
    return (f"The persona **{name}** was created, but its training (job {outcome.job_id}) failed: {outcome.error}."
            f"{unable}.{figures}")
