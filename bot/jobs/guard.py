"""Whether a finished fine-tune may be served: it must learn the new text and keep the old style.

A result is judged on both held-out figures, not on the contributed text alone: a job that
learned a few pages of chat by heart while its corpus loss doubled used to be served and
nobody was told. The bound on the corpus figure is ``CHARBOT_FINETUNE_MAX_CORPUS_RISE``
(0.05 nats per character by default, about the spread of that figure between replay seeds).
An admin may still install a refused result on purpose (``force``).
"""

from __future__ import annotations

from dataclasses import dataclass

from model.finetune import FinetuneReport

DEFAULT_MAX_CORPUS_RISE = 0.05


@dataclass(frozen=True)
class Verdict:
    """``ok`` when the result may be served; otherwise ``reasons`` says why not, with the figures."""

    ok: bool
    reasons: tuple[str, ...]
    max_corpus_rise: float = DEFAULT_MAX_CORPUS_RISE

    def text(self) -> str:
        return "; ".join(self.reasons)


def judge(
    report: FinetuneReport, max_corpus_rise: float = DEFAULT_MAX_CORPUS_RISE, keeps_corpus: bool = True
) -> Verdict:
    """Serve only a result better on the held-out contributions whose corpus held-out loss rose by
    at most ``max_corpus_rise`` nats. When the corpus text was not on the machine its figure is
    unknown, and an unknown figure cannot pass: the admin decides (``force``).

    A server's persona (``keeps_corpus`` False) has no old style to keep: it is trained from the
    general base to become its text, so it is judged on its own held-out text alone, where it must
    beat the base it started from."""
    reasons = []
    before, after = report.before.contributed, report.after.contributed
    if not after < before:
        reasons.append(f"it did not get better at the new text (held-out contributions {before:.3f} -> "
                       f"{after:.3f} nats/char); more contributed text usually helps")
    rise = report.corpus_rise if keeps_corpus else 0.0
    if rise is None:
        reasons.append(f"how much of the {report.corpus} style it kept could not be measured "
                       f"({report.corpus_note or 'no corpus text'})")
    elif rise > max_corpus_rise:
        reasons.append(f"it forgot too much of the {report.corpus} style: its held-out loss rose "
                       f"{report.before.corpus:.3f} -> {report.after.corpus:.3f} nats/char ({rise:+.3f}, "
                       f"more than the {max_corpus_rise:g} allowed)")
    return Verdict(not reasons, tuple(reasons), max_corpus_rise)
