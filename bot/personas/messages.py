"""What an admin is told when a persona's training ends, in the persona's terms.

:meth:`bot.jobs.manager.JobOutcome.message` speaks of a corpus, its key and its old style, none
of which a persona has: it is trained from the general base to become its own text, so the one
figure that matters is the held-out loss on that text, before (the general base) and after (the
persona). ``charbot persona create`` and ``retrain`` say it with :func:`training_ended`; the bot posts
:meth:`~bot.jobs.manager.JobOutcome.message`, which words a persona's refusal the same way.
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


def retrain_command(name: str, server: int | None = None, force: bool = False) -> str:
    """The command that trains persona ``name`` again: the slash command, or with ``server`` the CLI's."""
    if server is None:
        return f"/persona retrain {name}" + (" force:True" if force else "")
    return f"charbot persona retrain {name} --server {server}" + (" --force" if force else "")


def training_ended(name: str, outcome: JobOutcome, server: int | None = None) -> str:
    """The persona is trained and speaks, or why it cannot yet (refused, cancelled, failed) and how to train it
    again: with the slash command, or with ``server`` (``charbot persona``) the command line's."""
    report = outcome.report
    figures = f"\n{heldout_line(report)}" if report is not None else ""
    if outcome.state == DONE:
        forced = (" Served because it was forced, although it was no better than the general base on its own text."
                  if outcome.forced else "")
        return (f"The persona **{name}** is trained (job {outcome.job_id}, {report.steps if report else 0} steps) "
                f"and now speaks from v{outcome.version}.{forced}{figures}")
    unable = " It cannot speak until it is trained:"
    if outcome.state == REFUSED:
        return (f"The training of the persona **{name}** (job {outcome.job_id}) was refused: {outcome.error}.{unable} "
                f"`{retrain_command(name, server, force=True)}` serves such a result anyway, or delete it and create "
                f"it again with more text.{figures}")
    again = f" `{retrain_command(name, server)}` trains it again."
    if outcome.state == CANCELLED:
        return (f"The training of the persona **{name}** (job {outcome.job_id}) was cancelled"
                f"{': ' + outcome.error if outcome.error else ''}.{unable}{again}")
    return (f"The training of the persona **{name}** (job {outcome.job_id}) failed: {outcome.error}.{unable}{again}"
            f"{figures}")
