"""The model card: ``checkpoints/MODEL_CARD.md`` written from the shipped checkpoints themselves.

Every figure comes from a checkpoint's metadata or is measured when the card is made (the
held-out loss with the same function as ``charbot eval``; samples from a fixed seed and a
fixed prime), so the card cannot drift from the weights it describes. Experiments that are not
shipped (e.g. a corpus trained from scratch against one fine-tuned) come from a JSON file:
each row names a checkpoint to measure, or gives figures to report as they are.

When the general base model is shipped (``base.safetensors``, trained on the mixture of
:mod:`corpora.mixture`), it gets a row of its own: its loss on the mixture's held-out split and
on each part's held-out split, next to each part's own shipped checkpoint and the difference,
against :data:`BASE_MAX_GAP`. Without it the card is made as before.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from corpora.heldout import NotThisCorpus, measure_heldout, trained_fraction
from corpora.mixture import GENERAL_BASE, MIXTURES
from corpora.registry import CORPORA, CorpusMissing, get_corpus
from corpora.shipped import CARD_NAME, checkpoint_dir
from model import __version__
from model.checkpoint import Checkpoint, checkpoint_file, load_checkpoint
from model.evaluate import bits
from model.sample import SampleSettings, generate

TEMPERATURES = (0.5, 0.8, 1.0)
SAMPLE_SEED = 1234
SAMPLE_CHARS = 300
REPRODUCE_TOLERANCE = 0.01
# Issue 25's target for the general base: on each part's held-out split, at most this much worse (nats/char)
# than the part's own shipped checkpoint, so starting from the base gives up next to nothing of either book.
BASE_MAX_GAP = 0.05
_ROW_NUMBERS = ("val_loss_nats", "n_params", "train_chars", "train_seconds", "chars_seen", "target_val_bpc")


class CardError(ValueError):
    """The card cannot be made as asked (no checkpoints, a malformed experiments file)."""


@dataclass
class Sample:
    temperature: float
    text: str
    finish: str


@dataclass
class Row:
    """One model on the card: a shipped checkpoint or an experiment."""

    label: str
    corpus: str
    checkpoint: str | None = None
    info: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    val_loss_nats: float | None = None
    measured: bool = False
    target_val_bpc: float | None = None
    note: str = ""
    samples: list[Sample] = field(default_factory=list)
    prime: str = ""
    target_text: tuple[str, str] | None = None  # (target, met) where the target is no bits/char bound

    @property
    def bpc(self) -> float | None:
        return bits(self.val_loss_nats) if self.val_loss_nats is not None else None

    @property
    def met(self) -> bool | None:
        if self.target_val_bpc is None or self.bpc is None:
            return None
        return self.bpc <= self.target_val_bpc

    @property
    def recorded(self) -> float | None:
        value = self.info.get("val_loss_nats")
        return float(value) if isinstance(value, (int, float)) else None


def show_path(path: str | Path) -> str:
    """``path`` relative to the working folder when it is inside it, so the card names no machine."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def architecture(config: dict) -> str:
    if not config:
        return "-"
    return (f"{config['n_layers']}-layer LSTM, hidden {config['hidden_size']}, embedding {config['embed_size']}, "
            f"dropout {config['dropout']:g}, {config['vocab_size']} characters")


def _measure(row: Row, ck: Checkpoint) -> None:
    """Fill in the held-out loss: measured now if the corpus is here, else the recorded one."""
    try:
        result = measure_heldout(ck, row.corpus)
    except CorpusMissing as exc:
        row.val_loss_nats = row.recorded
        row.note = (row.note + " " if row.note else "") + f"Loss as recorded, not re-measured: {exc}."
        return
    except NotThisCorpus as exc:
        raise CardError(f"{row.label}: {exc}") from None
    row.val_loss_nats, row.measured = result.loss_nats, True


def _samples(ck: Checkpoint, corpus_name: str, seed: int, length: int) -> tuple[str, list[Sample]]:
    corpus = get_corpus(corpus_name)
    prime = corpus.prime(corpus.example_prompt)
    out = []
    for t in TEMPERATURES:
        settings = SampleSettings(temperature=t, max_chars=length, stop=corpus.stop, seed=seed)
        g = generate(ck.model, [prime], settings)[0]
        out.append(Sample(t, g.text, g.finish))
    return prime, out


def checkpoint_row(label: str, path: str | Path, corpus: str | None, *, target: float | None,
                   note: str = "", samples: bool = False, seed: int = SAMPLE_SEED,
                   length: int = SAMPLE_CHARS, device: str = "cpu") -> Row:
    """A card row for a checkpoint file: its metadata, measured held-out loss, and optional samples."""
    ck = load_checkpoint(path, device=device)
    name = corpus or ck.info.get("corpus")
    if name not in CORPORA:
        raise CardError(f"{label}: {path} was trained on {name!r}, not a registered corpus; "
                        f"give \"corpus\" for this row")
    row = Row(label, name, str(path), ck.info, ck.config.to_dict(), target_val_bpc=target, note=note)
    _measure(row, ck)
    if samples:
        row.prime, row.samples = _samples(ck, name, seed, length)
    return row


def _number(value: object, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CardError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def load_experiments(path: str | Path, targets: dict[str, float]) -> list[Row]:
    """Rows from a JSON file: a list (or ``{"experiments": [...]}``) of objects.

    A row with ``"checkpoint"`` is measured like a shipped one (``"corpus"`` defaults to the
    checkpoint's own); a row without gives ``"corpus"``, ``"val_loss_nats"`` and optionally
    ``n_params``, ``train_chars``, ``train_seconds``, ``chars_seen``, ``device``, ``parent``,
    reported as given. Both may have ``"label"`` and ``"note"``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CardError(f"{path}: no such experiments file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CardError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict):
        data = data.get("experiments")
    if not isinstance(data, list):
        raise CardError(f"{path}: expected a list of experiments (or {{\"experiments\": [...]}})")
    rows = []
    for i, item in enumerate(data, 1):
        where = f"{path}: experiment {i}"
        if not isinstance(item, dict):
            raise CardError(f"{where}: expected an object")
        corpus = item.get("corpus")
        if corpus is not None and corpus not in CORPORA:
            raise CardError(f"{where}: unknown corpus {corpus!r} (corpora: {', '.join(CORPORA)})")
        label = str(item.get("label") or item.get("checkpoint") or f"experiment {i}")
        note = str(item.get("note", ""))
        if "checkpoint" in item:
            ck_path = Path(str(item["checkpoint"]))
            if not ck_path.is_absolute() and not ck_path.exists() and (path.parent / ck_path).exists():
                ck_path = path.parent / ck_path
            row = checkpoint_row(label, ck_path, corpus, target=None, note=note)
        else:
            if corpus is None or "val_loss_nats" not in item:
                raise CardError(f"{where}: give \"checkpoint\", or \"corpus\" and \"val_loss_nats\"")
            info = {k: _number(item[k], where, k) for k in _ROW_NUMBERS if k in item and k != "target_val_bpc"}
            for key in ("device", "parent"):
                if key in item:
                    info[key] = item[key]
            row = Row(label, corpus, None, info, {}, val_loss_nats=info.get("val_loss_nats"), note=note)
        row.target_val_bpc = targets.get(row.corpus, get_corpus(row.corpus).target_val_bpc)
        rows.append(row)
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _ancestors(info: dict) -> tuple[list[dict], bool | None]:
    """The checkpoints ``info``'s was made from, nearest first, and how the chain ends: True
    trained from scratch, False not known further, None nothing recorded at all."""
    chain: list[dict] = []
    record = info.get("parent", ...)
    while isinstance(record, dict):
        chain.append(record)
        record = record.get("parent", ...)
    if isinstance(record, str) and record:  # recorded as a bare path
        chain.append({"path": record})
        record = ...
    if record is None:
        return chain, True
    return chain, (False if chain else None)


def _one_parent(record: dict) -> str:
    loss = record.get("val_loss_nats")
    loss_txt = f", held-out loss {loss:.4f} nats/char" if isinstance(loss, (int, float)) else ""
    return f"{record.get('path')} (corpus {record.get('corpus')}{loss_txt})"


def _parent(info: dict) -> str:
    """Where a checkpoint comes from, back to the start where its ancestry is known: "continued
    from" a checkpoint of its own corpus, "fine-tuned from" another's."""
    chain, from_scratch = _ancestors(info)
    if from_scratch is None:
        return "-"
    if not chain:
        return "trained from scratch"
    links, corpus = [], info.get("corpus")
    for record in chain:
        verb = "continued" if corpus is not None and record.get("corpus") == corpus else "fine-tuned"
        links.append(f"{verb} from {_one_parent(record)}")
        corpus = record.get("corpus")
    text = ", itself ".join(links)
    return text + (", itself trained from scratch" if from_scratch and len(chain) > 1 else "")


def _lifetime(info: dict) -> tuple[float, float] | None:
    """Training seconds and characters seen in all, the ancestors' included; None when a part is not known."""
    chain, from_scratch = _ancestors(info)
    if not chain or not from_scratch:
        return None
    parts = [info, *chain]
    if not all(isinstance(p.get(k), (int, float)) for p in parts for k in ("train_seconds", "chars_seen")):
        return None
    return sum(p["train_seconds"] for p in parts), sum(p["chars_seen"] for p in parts)


def _target(row: Row) -> tuple[str, str]:
    if row.target_text is not None:
        return row.target_text
    if row.target_val_bpc is None:
        return "no target set", "-"
    met = row.met
    nats = row.target_val_bpc * math.log(2)
    return (f"<= {nats:.2f} nats ({row.target_val_bpc:.3f} bits)/char",
            "-" if met is None else ("yes" if met else "no"))


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _table(rows: list[Row]) -> list[str]:
    lines = ["| model | corpus | architecture | parameters | training text (chars) | training time | "
             "characters seen | device | held-out loss (nats/char) | bits/char | target | met | parent |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        info = r.info
        target, met = _target(r)
        loss = _fmt(r.val_loss_nats, ".4f") + ("" if r.measured or r.val_loss_nats is None else " (reported)")
        lines.append(
            f"| {r.label} | {r.corpus} | {architecture(r.config)} | {_fmt(info.get('n_params'), ',.0f')} | "
            f"{_fmt(info.get('train_chars'), ',.0f')} | {_duration(info.get('train_seconds'))} | "
            f"{_fmt(info.get('chars_seen'), ',.0f')} | {info.get('device', '-')} | {loss} | {_fmt(r.bpc, '.4f')} | "
            f"{target} | {met} | {_parent(info)} |"
        )
    return lines


def _training_lines(row: Row) -> list[str]:
    """The architecture and training bullets, the same for a corpus's checkpoint and the base's."""
    info = row.info
    train_chars = info.get("train_chars")
    epochs = info.get("chars_seen", 0) / train_chars if train_chars else None
    cfg = info.get("train_config") or {}
    return [
        f"- Architecture: {architecture(row.config)}; {_fmt(info.get('n_params'), ',.0f')} parameters.",
        f"- Training: {_fmt(info.get('steps'), ',.0f')} steps of {cfg.get('n_seqs', '-')} x {cfg.get('n_steps', '-')} "
        f"characters, {_fmt(info.get('chars_seen'), ',.0f')} characters seen ({_fmt(epochs, '.1f')} epochs), "
        f"{_duration(info.get('train_seconds'))} on {info.get('device', '-')} (torch {info.get('torch', '-')}) "
        f"computing in {info.get('precision', 'fp32')}, "
        f"peak learning rate {cfg.get('lr', '-')}"
        + (f", ended by {info['stopped']}." if info.get("stopped") else "."),
        *_lifetime_lines(info),
    ]


def _lifetime_lines(info: dict) -> list[str]:
    lifetime = _lifetime(info)
    if lifetime is None:
        return []
    seconds, chars = lifetime
    return [f"- In all, with the checkpoints it grew from: {_duration(seconds)} of training, "
            f"{chars:,.0f} characters seen."]


def _loss_lines(row: Row) -> list[str]:
    """The held-out loss measured for the card, the one recorded, and the one before 16-bit storage."""
    info = row.info
    lines = []
    if row.measured:
        lines.append(f"- Held-out loss: **{row.val_loss_nats:.4f} nats/char = {row.bpc:.4f} bits/char**, measured "
                     f"for this card over the whole held-out split with "
                     f"`evaluate_loss`, as `charbot eval {show_path(row.checkpoint)} {row.corpus}` does.")
        if row.recorded is not None:
            ok = abs(row.recorded - row.val_loss_nats) <= REPRODUCE_TOLERANCE
            lines.append(f"- Recorded in the checkpoint: {row.recorded:.4f} nats/char "
                         f"({'reproduced' if ok else 'NOT reproduced'} within {REPRODUCE_TOLERANCE}).")
    elif row.val_loss_nats is not None:
        lines.append(f"- Held-out loss: {row.val_loss_nats:.4f} nats/char = {row.bpc:.4f} bits/char.")
    if "val_loss_fp32_nats" in info:
        lines.append(f"- Before conversion to {info.get('storage_dtype')}: {info['val_loss_fp32_nats']:.4f} nats/char.")
    return lines


def _sample_lines(corpus_name: str, prime: str, samples: list[Sample], seed: int, length: int,
                  lead: str = "Samples") -> list[str]:
    corpus = get_corpus(corpus_name)
    lines = [f"{lead}: seed {seed}, prime {json.dumps(prime)} (the bot's framing of "
             f"{json.dumps(corpus.example_prompt)}), stop at {json.dumps(list(corpus.stop))}, "
             f"at most {length} characters.", ""]
    for s in samples:
        body = prime + s.text
        fence = _fence(body)
        lines += [f"Temperature {s.temperature} (ended by {s.finish}):", "", fence, body, fence, ""]
    return lines


def _section(row: Row, seed: int, length: int) -> list[str]:
    corpus = get_corpus(row.corpus)
    info = row.info
    lines = [f"## {row.corpus}: {corpus.title}", ""]
    if row.checkpoint is None:
        return [*lines, f"Not shipped yet: there was no `{row.corpus}.safetensors` when this card was made.", ""]
    lines += [
        f"- Checkpoint: `{Path(row.checkpoint).name}` ({info.get('storage_dtype', 'float32')} weights), "
        f"{_parent(info)}.",
        f"- Data: {corpus.description}. Source: {corpus.source}. Cleaning: {corpus.cleaning}",
        f"- Training text: {_fmt(info.get('train_chars'), ',.0f')} characters; held-out split: {corpus.held_out} "
        f"({_fmt(info.get('val_chars'), ',.0f')} characters, never trained on).",
        *_training_lines(row),
        *_loss_lines(row),
    ]
    target, met = _target(row)
    lines.append(f"- Target: {target}; met: {met}.")
    if row.note:
        lines.append(f"- Note: {row.note}")
    return [*lines, "", *_sample_lines(row.corpus, row.prime, row.samples, seed, length)]


@dataclass
class PartFigure:
    """The base's held-out loss on one part's own held-out split, next to the part's own shipped checkpoint."""

    part: str
    base_loss: float | None
    own: Row | None  # the part's shipped checkpoint (None: not shipped)
    note: str = ""

    @property
    def comparable(self) -> bool:
        """Whether both figures are on the same characters: the own checkpoint held out the part's own split."""
        return (self.base_loss is not None and self.own is not None and self.own.val_loss_nats is not None
                and trained_fraction(self.own.info) == get_corpus(self.part).val_fraction)

    @property
    def gap(self) -> float | None:
        """Base minus own, nats/char: what starting from the base gives up on this part (negative: gains)."""
        return self.base_loss - self.own.val_loss_nats if self.comparable else None

    @property
    def met(self) -> bool | None:
        return None if self.gap is None else self.gap <= BASE_MAX_GAP


@dataclass
class BaseReport:
    """The general base on the card: its own row (mixture held-out loss) and its figure on each part."""

    row: Row
    parts: list[PartFigure]
    samples: dict[str, tuple[str, list[Sample]]] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        results = [p.met for p in self.parts]
        return None if None in results else all(results)


def base_report(path: str | Path, corpus_rows: list[Row], *, samples: bool = True, seed: int = SAMPLE_SEED,
                length: int = SAMPLE_CHARS, device: str = "cpu") -> BaseReport:
    """Measure the general base at ``path`` on its mixture and on each part, beside ``corpus_rows``' figures.

    A part's figure is measured on the part's own held-out split, held out for the base because
    the base trained only on the parts' training splits (:func:`corpora.heldout.trained_on_part`).
    """
    ck = load_checkpoint(path, device=device)
    row = Row(GENERAL_BASE, GENERAL_BASE, str(path), ck.info, ck.config.to_dict())
    _measure(row, ck)
    shipped = {r.corpus: r for r in corpus_rows if r.checkpoint}
    parts = []
    for part in MIXTURES[GENERAL_BASE]:
        try:
            figure = PartFigure(part, measure_heldout(ck, part).loss_nats, shipped.get(part))
        except CorpusMissing as exc:
            figure = PartFigure(part, None, shipped.get(part), f"not measured: {exc}")
        except NotThisCorpus as exc:
            raise CardError(f"{GENERAL_BASE}: {exc}") from None
        if figure.own is not None and figure.base_loss is not None and not figure.comparable:
            figure.note = (f"{part}.safetensors held out another fraction of {part} "
                           f"({trained_fraction(figure.own.info):g}), so the figures are on other characters")
        parts.append(figure)
    report = BaseReport(row, parts)
    met = report.met
    row.target_text = (f"within {BASE_MAX_GAP} nats/char of each part's own checkpoint",
                       "-" if met is None else ("yes" if met else "no"))
    if samples:
        report.samples = {part: _samples(ck, part, seed, length) for part in MIXTURES[GENERAL_BASE]}
    return report


def _base_section(report: BaseReport, seed: int, length: int) -> list[str]:
    row, info = report.row, report.row.info
    parts = MIXTURES[GENERAL_BASE]
    lines = [
        f"## {GENERAL_BASE}: the general base model ({' + '.join(parts)})", "",
        f"- Checkpoint: `{Path(row.checkpoint).name}` ({info.get('storage_dtype', 'float32')} weights), "
        f"{_parent(info)}; personas start from it.",
        f"- Data: the training splits of {' and '.join(parts)} together "
        f"({_fmt(info.get('train_chars'), ',.0f')} characters); held-out split: their held-out splits together "
        f"({_fmt(info.get('val_chars'), ',.0f')} characters, never trained on; `corpora/mixture.py`). "
        f"`grimms.txt` is no part of it.",
        *_training_lines(row),
        *_loss_lines(row),
    ]
    if row.note:
        lines.append(f"- Note: {row.note}")
    lines += [
        "", f"On each part's own held-out split (the characters that part's checkpoint is measured on; the base "
        f"trained only on the parts' training splits), next to the part's own shipped checkpoint. Target: the base "
        f"within {BASE_MAX_GAP} nats/char of each; met: {_target(row)[1]}.", "",
        "| held-out split | base (nats/char) | base (bits/char) | own checkpoint | own (nats/char) | "
        f"base - own (nats/char) | within {BASE_MAX_GAP} |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in report.parts:
        own = f"`{Path(f.own.checkpoint).name}`" if f.own is not None else "not shipped"
        own_loss = f.own.val_loss_nats if f.own is not None else None
        met = "-" if f.met is None else ("yes" if f.met else "no")
        lines.append(f"| {f.part} | {_fmt(f.base_loss, '.4f')} | "
                     f"{_fmt(None if f.base_loss is None else bits(f.base_loss), '.4f')} | {own} | "
                     f"{_fmt(own_loss, '.4f')} | {_fmt(f.gap, '+.4f')} | {met} |")
    lines.append("")
    lines += [f"- {f.part}: {f.note}." for f in report.parts if f.note]
    lines += [f"`charbot eval {show_path(row.checkpoint)} {parts[0]}` reproduces a part's figure.", ""]
    for part, (prime, samples) in report.samples.items():
        lines += _sample_lines(part, prime, samples, seed, length, lead=f"Samples framed as {part}")
    return lines


def build_card(
    directory: str | Path | None = None,
    *,
    experiments: str | Path | None = None,
    targets: dict[str, float] | None = None,
    seed: int = SAMPLE_SEED,
    length: int = SAMPLE_CHARS,
    device: str = "cpu",
    command: str = "charbot card",
    bench: list[str | Path] | None = None,
) -> str:
    """The card's Markdown for the shipped checkpoints in ``directory`` (default: the shipped folder)."""
    directory = Path(directory) if directory is not None else checkpoint_dir()
    targets = dict(targets or {})
    for name in targets:
        get_corpus(name)
    extra = load_experiments(experiments, targets) if experiments else []
    rows: list[Row] = []
    for name, corpus in CORPORA.items():
        path = checkpoint_file(directory, name)
        target = targets.get(name, corpus.target_val_bpc)
        if path.is_file():
            rows.append(checkpoint_row(name, path, name, target=target, samples=True, seed=seed, length=length,
                                       device=device))
        else:
            rows.append(Row(name, name, target_val_bpc=target))
    base_path = checkpoint_file(directory, GENERAL_BASE)
    base = (base_report(base_path, rows, seed=seed, length=length, device=device)
            if base_path.is_file() else None)
    if not any(r.checkpoint for r in rows) and base is None:
        expected = ", ".join(checkpoint_file(directory, n).name for n in CORPORA)
        raise CardError(f"no shipped checkpoints in {directory} (expected {expected}); "
                        f"make them with `charbot ship RUN.safetensors NAME`")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [
        "# charbot model card",
        "",
        f"Generated by `{command}` (charbot {__version__}, torch {torch.__version__}) on {now} from the checkpoints "
        f"in `{show_path(directory)}`. Do not edit by hand: every figure comes from the checkpoints' metadata or is "
        "measured when the card is made; regenerate it after shipping.",
        "",
        "Loss is the mean next-character cross-entropy on each corpus's held-out split (the last part of the cleaned "
        "text, never trained on), in nats per character and in bits per character (nats / ln 2)"
        + (f"; the {GENERAL_BASE} model's on its mixture's held-out split, the parts' held-out splits together."
           if base else "."),
        "",
        *_table([r for r in rows if r.checkpoint] + ([base.row] if base else [])),
        "",
    ]
    for r in rows:
        lines += _section(r, seed, length)
    if base:
        lines += _base_section(base, seed, length)
    if extra:
        lines += ["## Experiments", "",
                  "Rows measured from a checkpoint are measured like the shipped ones; rows marked (reported) are "
                  f"given in `{Path(experiments).name}` and copied as they are.", "", *_table(extra), ""]
        lines += [f"- {r.label}: {r.note}" for r in extra if r.note] + ([""] if any(r.note for r in extra) else [])
    for report in bench or []:
        lines += speed_section(report)
    return "\n".join(lines).rstrip("\n") + "\n"


def speed_section(report: str | Path) -> list[str]:
    """A ``charbot bench`` report (its ``bench.md``) as a section of the card, headings moved down.

    The card quotes the report as the bench wrote it, so speed figures, like losses, are
    never typed by hand; the report's own first lines say which machine and when.
    """
    path = Path(report)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CardError(f"{path}: no such bench report (give the bench.md that `charbot bench` wrote)") from None
    except UnicodeDecodeError:
        raise CardError(f"{path}: not a text file") from None
    body = text.strip().splitlines()
    if not body or body[0] != "# charbot bench":
        raise CardError(f"{path}: not a `charbot bench` report (it starts with {body[0][:40]!r})" if body
                        else f"{path}: empty bench report")
    moved = [("##" + line) if line.startswith("#") else line for line in body[1:]]
    return ["## Speed (charbot bench)", "", f"From `{report}`, as `charbot bench` wrote it:", *moved, ""]


def write_card(text: str, out: str | Path | None = None) -> Path:
    """Write the card atomically (default: ``MODEL_CARD.md`` in the shipped checkpoints' folder)."""
    from model.checkpoint import atomic_write_bytes

    out = Path(out) if out is not None else checkpoint_dir() / CARD_NAME
    atomic_write_bytes(out, text.encode("utf-8"))
    return out
