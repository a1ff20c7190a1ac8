"""The engine's ``auto`` precision: measured on the machine at hand, not guessed from the CPU's name.

Which precision is fastest depends on the chip (native bf16 or int8 instructions, cache
sizes, how the BLAS library treats it), and whether a faster one is faithful enough depends
on the checkpoint. So when an engine is made with ``precision="auto"``, every precision that
runs natively on its device (:func:`model.device.generation_precisions`) is measured, briefly:

- **fidelity** against the fp32 reference (the model's own ``nn.LSTM`` forward): teacher-forced
  over text the model wrote itself with a fixed seed (model/ has no corpus at hand, and its
  own text is what it will be reading back while it replies), :attr:`Probe.rows` sequences of
  :attr:`Probe.chars` characters stepped as one batch from a zero state. A precision qualifies
  when its mean KL(reference || fast step) is at most :attr:`Bounds.kl_mean` nats per
  character and its most likely next character agrees with the reference's at least
  :attr:`Bounds.top1_agreement` of the time.
- **speed**: :meth:`FastStep.step` timed at 1 row (a lone reply's latency) and at
  :attr:`Probe.crowd` rows (throughput under a crowd), the precisions interleaved round by
  round so background load hits them alike, each figure the best round's.

"Fastest" is the smallest geometric mean of the two step times (the square root of their
product): a precision that halves the crowd step but doubles the lone one gains nothing, so
neither a lone reply's latency nor a crowd's throughput is bought with the other. Within
:data:`TIE_MARGIN` of the fastest, the more faithful precision wins (fp32, then bf16, then
int8): a few percent is inside the noise of a short measurement, fidelity is not.

**Step paths.** Each precision may run on more than one path: the eager step (PyTorch calls,
:class:`~model.fast_step.FastStep`) and, where its kernel builds, the fused step
(:mod:`model.fused_step`: one compiled call per character, fp32 or bf16 weights). Each path
on offer is a candidate of its own, labelled ``"fp32"`` (eager) or ``"fp32 fused"``
(:func:`label`), measured and chosen exactly like a precision: the fused step's fidelity is
checked against the same reference (so a kernel that computed the wrong thing would never be
served), and it is served only where it is measured faster. Equally faithful candidates tie
to the eager path; bf16 fused ranks above eager bf16, which also rounds the hidden states.

The decision is cached as JSON, keyed by the checkpoint's weights digest, the CPU (or GPU),
the torch version, the device, the thread count and the precisions on offer, with the
measurements beside it so an operator can read why. A missing, corrupt or unwritable cache
is logged and otherwise ignored: the engine then measures again (a short measurement,
once per load; model/README.md gives its time on one CPU).

**A fine-tuned checkpoint** (a server's persona, a corpus's version) is a new file, so its key
misses the cache. Half of what it would measure is already known, though: a step's time
depends on the tensors' shapes, the machine and the path, not on the values in the weights
(the same matrix products on the same sizes, and no path branches on a value; denormal
numbers aside, which trained weights do not hold), and fine-tuning keeps the shapes. So
where the cache holds a decision for its parent (the checkpoint it was fine-tuned from,
recorded in its info's ``parent``), or for another checkpoint fine-tuned from that parent,
with every other part of the key equal and the same tensor shapes, its step times are reused
(:func:`recheck`) and only fidelity is measured, on this checkpoint's own weights and its own
text, as the full measurement would: fidelity does depend on the weights. Nor is every
candidate's fidelity needed. With the step times fixed, the choice can only be the
relative's choice or a candidate at most :data:`TIE_MARGIN` slower than it, once the
relative's choice is within the bounds here too; so those are checked first, and every
candidate only when the relative's choice fails here. The result is the very decision the
full measurement would reach with those step times, at the cost of the fidelity of one or
two candidates (model/README.md gives the figures).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from model import device as devices
from model import fused_step
from model.checkpoint import atomic_write_bytes, tensors_digest
from model.cpu import cpu_identity
from model.fast_step import FastStep
from model.network import CharLSTM

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when what is measured, or how, changes: older entries are then measured again
CACHE_ENTRIES = 64  # newest kept; every fine-tuned version adds one
TIE_MARGIN = 0.05  # a less faithful precision must be this much faster (geometric mean) to be chosen
# Candidates from the most faithful to the least (ties go to the earlier): see the module docstring.
FAITHFUL_ORDER = ("fp32", "fp32 fused", "bf16 fused", "bf16", "int8", "int8 fused")


def label(precision: str, step: str = "eager") -> str:
    """A candidate's name: the precision, with `` fused`` for the fused step."""
    return precision if step == "eager" else f"{precision} {step}"


def parse(name: str) -> tuple[str, str]:
    """A candidate's precision and step path, from its :func:`label`."""
    precision, _, step = name.partition(" ")
    return precision, step or "eager"


def candidates(model: CharLSTM, device: torch.device, steps: tuple[str, ...] | None = None) -> list[str]:
    """Every (precision, step path) that runs on ``device`` for ``model``, most faithful first.

    The eager step at every precision native there (:func:`model.device.generation_precisions`),
    and the fused step at each of its precisions where its kernel builds here and fits the
    model. ``steps`` keeps only those paths (all of them when that would leave none).
    """
    found = list(devices.generation_precisions(device)) + fused_candidates(model, device)
    found.sort(key=lambda c: FAITHFUL_ORDER.index(c) if c in FAITHFUL_ORDER else len(FAITHFUL_ORDER))
    kept = [c for c in found if steps is None or parse(c)[1] in steps]
    return kept or found


def fused_candidates(model: CharLSTM, device: torch.device) -> list[str]:
    """The fused step's candidates for ``model`` on ``device``: none where its kernel cannot be built."""
    cfg = model.config
    if device.type != "cpu" or fused_step.load_kernel() is None:
        return []
    return [label(p, "fused") for p in fused_step.PRECISIONS
            if fused_step.unsupported(cfg.n_layers, cfg.hidden_size, p, device) is None]


@dataclass(frozen=True)
class Bounds:
    """How close to the fp32 reference a precision must stay to be served (issue 14's bounds)."""

    kl_mean: float = 1e-3  # nats per character, mean of KL(reference || fast step)
    top1_agreement: float = 0.99  # share of positions whose most likely next character is the reference's


@dataclass(frozen=True)
class Probe:
    """How much is measured: small enough to take well under two seconds on a 2-core CPU."""

    rows: int = 16  # sequences read side by side for fidelity
    chars: int = 128  # characters per sequence
    seed: int = 1234  # of the text the model writes for itself
    crowd: int = 32  # rows of the crowd step timing
    steps: int = 8  # steps per timed run
    rounds: int = 5  # timed runs per precision and size; the best counts


@dataclass
class Fidelity:
    """A precision's agreement with the fp32 reference over ``chars`` teacher-forced positions."""

    precision: str
    chars: int
    kl_mean: float
    kl_p99: float
    kl_max: float
    top1_agreement: float
    max_prob_diff: float

    def meets(self, bounds: Bounds) -> bool:
        return self.kl_mean <= bounds.kl_mean and self.top1_agreement >= bounds.top1_agreement


@dataclass
class Speed:
    """Milliseconds per :meth:`FastStep.step` for one row and for a crowd of rows."""

    precision: str
    lone_ms: float
    crowd_ms: float
    crowd: int

    @property
    def score_ms(self) -> float:
        """The figure "fastest" minimises: the geometric mean of the lone and crowd step times."""
        return math.sqrt(self.lone_ms * self.crowd_ms)


@dataclass
class Measured:
    """What was measured of one precision; ``error`` when its path failed to build or step."""

    precision: str
    fidelity: Fidelity | None = None
    speed: Speed | None = None
    error: str | None = None

    def qualifies(self, bounds: Bounds) -> bool:
        return self.error is None and self.speed is not None and self.fidelity is not None \
            and self.fidelity.meets(bounds)

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.speed is not None:
            out["speed"]["score_ms"] = self.speed.score_ms
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Measured:
        speed = d.get("speed")
        if speed is not None:
            speed = Speed(**{k: v for k, v in speed.items() if k != "score_ms"})
        fid = d.get("fidelity")
        return cls(d["precision"], Fidelity(**fid) if fid is not None else None, speed, d.get("error"))


@dataclass
class Decision:
    """The precision and step path ``auto`` resolved to, why, and what it was measured on.

    ``measured`` holds one entry per candidate, named by :func:`label` (``"fp32 fused"``).
    """

    precision: str
    reason: str
    measured: list[Measured] = field(default_factory=list)
    key: dict = field(default_factory=dict)
    seconds: float = 0.0  # the measurement's own time (not a cache hit's)
    when: str = ""
    cached: bool = False
    step: str = "eager"  # "eager" or "fused" (model/fused_step.py)
    lineage: Lineage | None = None  # the checkpoint's file and its parent's, so a relative finds these step times
    speed_key: str = ""  # :func:`speed_key_id`: what the step times depend on

    @property
    def label(self) -> str:
        return label(self.precision, self.step)

    def to_dict(self) -> dict:
        return {"precision": self.precision, "step": self.step, "reason": self.reason,
                "measured": [m.to_dict() for m in self.measured], "key": self.key, "seconds": self.seconds,
                "when": self.when, "lineage": asdict(self.lineage) if self.lineage is not None else None,
                "speed_key": self.speed_key}

    @classmethod
    def from_dict(cls, d: dict) -> Decision:
        lineage = d.get("lineage")
        return cls(d["precision"], d["reason"], [Measured.from_dict(m) for m in d.get("measured", [])],
                   d.get("key", {}), float(d.get("seconds", 0.0)), d.get("when", ""), cached=True,
                   step=d.get("step", "eager"), lineage=Lineage(**lineage) if isinstance(lineage, dict) else None,
                   speed_key=str(d.get("speed_key") or ""))


@dataclass(frozen=True)
class Lineage:
    """Where a checkpoint comes from: its own file, and the file it was fine-tuned from (None: not fine-tuned,
    or not known). Paths are resolved, so two spellings of one file match."""

    path: str | None = None
    parent: str | None = None

    @classmethod
    def of(cls, path: str | Path | None, info: dict | None) -> Lineage:
        """A loaded checkpoint's lineage, from its path and its info (``parent`` is what training records)."""
        parent = info.get("parent") if isinstance(info, dict) else None
        return cls(_resolved(path), _resolved(parent.get("path") if isinstance(parent, dict) else None))


def _resolved(path: str | Path | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


# ---- fidelity -------------------------------------------------------------------------


@torch.no_grad()
def reference_logprobs(model: CharLSTM, codes: torch.Tensor) -> torch.Tensor:
    """Next-character log-probabilities of the fp32 ``nn.LSTM`` forward, (rows, T, V), on the CPU."""
    logits, _ = model(codes.to(model.head.weight.device))
    return F.log_softmax(logits.float(), -1).cpu()


@torch.no_grad()
def teacher_forced(fast: FastStep, codes: torch.Tensor) -> torch.Tensor:
    """Feed ``codes`` (rows, T) through ``fast`` from a zero state; its log-probabilities, (rows, T, V)."""
    rows, length = codes.shape
    zeros = torch.zeros(fast.n_layers, 1, fast.hidden)
    for row in range(rows):
        fast.set_row(row, (zeros, zeros), torch.zeros(fast.vocab))
    out = torch.empty(rows, length, fast.vocab)
    for t in range(length):
        fast.codes[:rows] = codes[:, t].numpy()
        out[:, t] = fast.step(rows)
    return F.log_softmax(out, -1)


def compare(precision: str, reference: torch.Tensor, fast: torch.Tensor) -> Fidelity:
    """KL(reference || fast) per position, top-1 agreement and the largest probability gap."""
    kl = (reference.exp() * (reference - fast)).sum(-1).clamp_min(0).reshape(-1)
    agree = (reference.argmax(-1) == fast.argmax(-1)).float().mean().item()
    return Fidelity(precision=precision, chars=kl.numel(), kl_mean=kl.mean().item(),
                    kl_p99=torch.quantile(kl.double(), 0.99).item(), kl_max=kl.max().item(), top1_agreement=agree,
                    max_prob_diff=(reference.exp() - fast.exp()).abs().max().item())


@torch.no_grad()
def fidelity(model: CharLSTM, codes: torch.Tensor, precision: str, device: torch.device | str | None = None,
             reference: torch.Tensor | None = None, step: str = "eager") -> Fidelity:
    """How faithful the fused step at ``precision`` is to the fp32 reference on ``codes`` ((T,) or (rows, T)).

    The one measure of fidelity: the engine's ``auto`` runs it on the model's own text, the
    bench on a corpus's held-out text. ``reference`` (from :func:`reference_logprobs`) saves
    recomputing it when several precisions are compared on the same codes.
    """
    codes = codes.view(1, -1) if codes.dim() == 1 else codes
    if reference is None:
        reference = reference_logprobs(model, codes)
    fast = FastStep(model, codes.shape[0], device, precision=precision, step=step)
    return compare(label(fast.precision, fast.path), reference, teacher_forced(fast, codes.cpu()))


@torch.no_grad()
def own_text(model: CharLSTM, rows: int, chars: int, seed: int, device: torch.device | None = None) -> torch.Tensor:
    """``rows`` texts of ``chars`` codes the model writes itself (fp32, temperature 1, from a space): (rows, chars).

    Temperature 1 draws from the whole distribution, so the text also visits the less likely
    places where a lower precision would first part from the reference.
    """
    fast = FastStep(model, rows, device, precision="fp32")
    zeros = torch.zeros(fast.n_layers, 1, fast.hidden)
    for row in range(rows):
        fast.set_row(row, (zeros, zeros), torch.zeros(fast.vocab))
    generator = torch.Generator().manual_seed(seed)
    codes = torch.empty(rows, chars, dtype=torch.long)
    codes[:, 0] = 1  # a space (code 0 is a newline)
    for t in range(1, chars):
        fast.codes[:rows] = codes[:, t - 1].numpy()
        probs = F.softmax(fast.step(rows).float(), -1)
        codes[:, t] = torch.multinomial(probs, 1, generator=generator).view(-1)
    return codes


# ---- speed ----------------------------------------------------------------------------


def _step_ms(fast: FastStep, rows: int, steps: int, codes: torch.Tensor) -> float:
    fast.codes[:rows] = codes[:rows].numpy()
    t0 = time.perf_counter()
    for _ in range(steps):
        fast.step(rows)
    return 1000 * (time.perf_counter() - t0) / steps


@torch.no_grad()
def speeds(steps: dict[str, FastStep], probe: Probe) -> dict[str, Speed]:
    """Step times at 1 row and at the crowd, the precisions interleaved round by round; the best round counts."""
    best: dict[str, list[float]] = {p: [math.inf, math.inf] for p in steps}
    crowd = {p: min(probe.crowd, fast.max_batch) for p, fast in steps.items()}
    codes = torch.randint(1, 96, (max(crowd.values(), default=1),), generator=torch.Generator().manual_seed(0))
    for p, fast in steps.items():  # warm-up: oneDNN builds its kernels for each batch size on first use
        _step_ms(fast, 1, 2, codes % fast.vocab)
        _step_ms(fast, crowd[p], 2, codes % fast.vocab)
    for _ in range(probe.rounds):
        for p, fast in steps.items():
            best[p][0] = min(best[p][0], _step_ms(fast, 1, probe.steps, codes % fast.vocab))
            best[p][1] = min(best[p][1], _step_ms(fast, crowd[p], probe.steps, codes % fast.vocab))
    return {p: Speed(p, lone, many, crowd[p]) for p, (lone, many) in best.items()}


# ---- the measurement and the choice -------------------------------------------------------


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (the engine worker's count), then restore."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def _fidelity_pass(model: CharLSTM, device: torch.device, precisions: list[str], max_batch: int,
                   probe: Probe) -> tuple[dict[str, Measured], dict[str, FastStep]]:
    """Each candidate's fidelity on the model's own text, and the steps that were built (for timing them)."""
    rows = min(probe.rows, max_batch)
    codes = own_text(model, rows, probe.chars, probe.seed, device)
    reference = reference_logprobs(model, codes)
    results = {p: Measured(p) for p in precisions}
    steps: dict[str, FastStep] = {}
    for p in precisions:
        try:
            precision, step = parse(p)
            fast = FastStep(model, max_batch, device, precision=precision, step=step)
            if fast.path != step:
                raise RuntimeError(f"the {step} step is not available here")
            results[p].fidelity = compare(p, reference, teacher_forced(fast, codes))
            steps[p] = fast
        except Exception as exc:  # a missing or broken path: not chosen, and said why
            log.warning("precision %s could not be measured: %s", p, exc)
            results[p].error = _said(exc)
    return results, steps


def fidelities(model: CharLSTM, device: torch.device, precisions: list[str], max_batch: int = 64,
               probe: Probe = Probe()) -> list[Measured]:
    """The fidelity half of :func:`measure`, with no timing: each candidate against the fp32 reference on
    the model's own text (a path that fails is recorded with its error)."""
    results, _ = _fidelity_pass(model, device, precisions, max_batch, probe)
    return [results[p] for p in precisions]


@torch.no_grad()
def measure(model: CharLSTM, device: torch.device, precisions: list[str], max_batch: int = 64,
            probe: Probe = Probe()) -> list[Measured]:
    """Fidelity and speed of each of ``precisions`` (candidates, by :func:`label`) on ``device``
    (see the module docstring).

    A precision whose path fails to build or to step is recorded with its error, never raised:
    ``auto`` must come up with something servable wherever a path is missing.
    """
    results, steps = _fidelity_pass(model, device, precisions, max_batch, probe)
    try:
        for p, speed in speeds(steps, probe).items():
            results[p].speed = speed
    except Exception as exc:
        log.warning("precision speeds could not be measured: %s", exc)
        for p in steps:
            results[p].error = results[p].error or _said(exc)
    return [results[p] for p in precisions]


def recheck(model: CharLSTM, device: torch.device, relative: Decision, max_batch: int = 64,
            probe: Probe = Probe(), bounds: Bounds = Bounds(), margin: float = TIE_MARGIN) -> list[Measured]:
    """What :func:`measure` would give ``model``, with the step times ``relative`` (a checkpoint of the same
    shape on this machine, see the module docstring) measured, and only the fidelity that can change the
    choice measured here.

    Fidelity is measured first for the relative's choice and for every candidate at most ``margin``
    slower than it. If the relative's choice is within ``bounds`` here, no other candidate can be chosen:
    the fastest within the bounds is then at most as slow as it, and a more faithful one wins only within
    ``margin`` of that fastest. Otherwise every candidate's fidelity is measured. A candidate left
    unmeasured keeps its step time and no fidelity, so :func:`choose` neither picks nor rejects it; one
    whose path failed for the relative (the same shape and machine) keeps its error.
    """
    chosen = next(m for m in relative.measured if m.precision == relative.label)
    assert chosen.speed is not None
    limit = chosen.speed.score_ms * (1 + margin)
    results = {m.precision: Measured(m.precision, speed=m.speed, error=m.error) for m in relative.measured}
    near = [m.precision for m in relative.measured
            if m.error is None and m.speed is not None and m.speed.score_ms <= limit]
    for m in fidelities(model, device, near, max_batch, probe):
        results[m.precision].fidelity, results[m.precision].error = m.fidelity, m.error
    if not results[relative.label].qualifies(bounds):
        rest = [p for p, m in results.items() if m.error is None and p not in near]
        for m in fidelities(model, device, rest, max_batch, probe):
            results[m.precision].fidelity, results[m.precision].error = m.fidelity, m.error
    return [results[m.precision] for m in relative.measured]


def _said(exc: BaseException) -> str:
    """An error in one short line (oneDNN's run on with advice about environment variables)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:160]}"


def choose(measured: list[Measured], bounds: Bounds = Bounds(), margin: float = TIE_MARGIN) -> tuple[str, str]:
    """The precision to serve and a sentence saying why, from measurements in fidelity order (fp32 first).

    The fastest (smallest :attr:`Speed.score_ms`) among those meeting ``bounds``; a more
    faithful one within ``margin`` of it wins the tie. Nothing qualifying (fp32 itself failing
    would be a bug) falls back to fp32, the reference.
    """
    rejected = []
    for m in measured:
        if m.error is not None:
            rejected.append(f"{m.precision} failed ({m.error})")
        elif m.fidelity is not None and not m.fidelity.meets(bounds):
            rejected.append(f"{m.precision} is outside the bounds (KL {m.fidelity.kl_mean:.2g} nats/char, "
                            f"top-1 {m.fidelity.top1_agreement:.2%})")
    ok = [m for m in measured if m.qualifies(bounds)]
    if not ok:
        return "fp32", "nothing measured within the bounds; the reference precision" + _also(rejected)
    fastest = min(ok, key=lambda m: m.speed.score_ms)
    pick = next(m for m in ok if m.speed.score_ms <= fastest.speed.score_ms * (1 + margin))
    times = ", ".join(f"{m.precision} {m.speed.score_ms:.3f}" for m in ok)
    how = "the fastest within the bounds" if pick is fastest else \
        f"within {margin:.0%} of the fastest ({fastest.precision}) and more faithful"
    return pick.precision, (f"{how}: step time (geometric mean of 1 and {pick.speed.crowd} rows, ms) {times}; "
                            f"KL {pick.fidelity.kl_mean:.2g} nats/char, top-1 {pick.fidelity.top1_agreement:.2%}"
                            + _also(rejected))


def _also(rejected: list[str]) -> str:
    return "; " + "; ".join(rejected) if rejected else ""


def _fused_note(device: torch.device) -> str:
    """Why the fused step was not among the candidates, where it could have been (a CPU without its kernel)."""
    if device.type != "cpu":
        return ""
    why = fused_step.unavailable_reason()
    return "" if why is None else f"; no fused step ({why})"


# ---- the cache ------------------------------------------------------------------------


def device_identity(device: torch.device) -> dict:
    """The processor a step runs on: the CPU's identity, or the GPU's name and capability."""
    if device.type == "cuda":
        return {"gpu": torch.cuda.get_device_name(device),
                "capability": ".".join(map(str, torch.cuda.get_device_capability(device)))}
    return {"cpu": cpu_identity()}


def cache_key(model: CharLSTM, device: torch.device, threads: int | None, precisions: list[str],
              max_batch: int, bounds: Bounds = Bounds()) -> dict:
    """Everything a decision depends on (the fused kernel's version too, where it is a candidate); a
    change to any of it measures again."""
    fused = any(parse(p)[1] == "fused" for p in precisions)
    return {"format": CACHE_FORMAT, "checkpoint": tensors_digest(model.state_dict()), **device_identity(device),
            "device": device.type, "torch": torch.__version__, "threads": threads, "max_batch": max_batch,
            "precisions": list(precisions), "bounds": asdict(bounds),
            "kernel": fused_step.kernel_id() if fused else None}


def key_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def speed_key_id(model: CharLSTM, key: dict) -> str:
    """What a step's time depends on: ``key`` (from :func:`cache_key`) without the weights' digest, with
    the tensors' names and shapes instead (see the module docstring)."""
    shapes = {name: list(t.shape) for name, t in model.state_dict().items()}
    return key_id({**{k: v for k, v in key.items() if k != "checkpoint"}, "shapes": shapes})


def _relative(entries: dict[str, dict], speed_key: str, lineage: Lineage | None,
              precisions: list[str]) -> Decision | None:
    """The newest cached decision whose step times a checkpoint of ``lineage`` may reuse: made for its parent,
    or for another checkpoint fine-tuned from that parent, with the same :func:`speed_key_id`, the same
    candidates and a step time for its choice and for each that did not fail. None when there is none, or no
    parent."""
    if lineage is None or lineage.parent is None:
        return None
    found = []
    for entry in entries.values():
        if not isinstance(entry, dict) or entry.get("speed_key") != speed_key:
            continue
        try:
            decision = Decision.from_dict(entry)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        kin = decision.lineage
        if kin is None or lineage.parent not in (kin.path, kin.parent):
            continue
        if [m.precision for m in decision.measured] != precisions:
            continue
        timed = {m.precision for m in decision.measured if m.speed is not None}
        if decision.label in timed and all(m.error is not None or m.precision in timed for m in decision.measured):
            found.append(decision)
    return max(found, key=lambda d: d.when, default=None)


def read_cache(path: Path) -> dict[str, dict]:
    """The cached decisions by key id; an absent or unreadable file is none (logged)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        log.info("precision cache %s: none yet; measuring", path)
        return {}
    except (OSError, ValueError) as exc:
        log.warning("precision cache %s: not read (%s); measuring and rewriting it", path, exc)
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        log.warning("precision cache %s: not a charbot precision cache; measuring and rewriting it", path)
        return {}
    return entries


def write_cache(path: Path, entries: dict[str, dict]) -> None:
    """Write the newest :data:`CACHE_ENTRIES` decisions atomically; failure is logged, never raised."""
    newest = sorted(entries.items(), key=lambda kv: str(kv[1].get("when", "")) if isinstance(kv[1], dict) else "")
    data = {"format": CACHE_FORMAT, "entries": dict(newest[-CACHE_ENTRIES:])}
    try:
        atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    except OSError as exc:
        log.warning("precision cache %s: not written (%s); the next start measures again", path, exc)


def _cached(entries: dict[str, dict], kid: str, precisions: list[str]) -> Decision | None:
    entry = entries.get(kid)
    if entry is None:
        return None
    try:
        decision = Decision.from_dict(entry)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("precision cache: a damaged entry (%s); measuring again", exc)
        return None
    return decision if decision.label in precisions else None


def auto_precision(model: CharLSTM, device: torch.device, *, threads: int | None = None, max_batch: int = 64,
                   cache: str | Path | None = None, probe: Probe = Probe(), bounds: Bounds = Bounds(),
                   steps: tuple[str, ...] | None = None, lineage: Lineage | None = None) -> Decision:
    """Resolve ``auto`` for ``model`` on ``device``: from ``cache`` when it has this key, else measured (and cached).

    ``threads`` is what the engine's worker will step with; the measurement runs with it too.
    ``steps`` limits the step paths measured (see :func:`candidates`). ``lineage`` says which
    checkpoint file this is and what it was fine-tuned from: where the cache holds that parent's
    decision, or a sibling's, the step times are reused and only fidelity is measured (:func:`recheck`).
    """
    precisions = candidates(model, device, steps)
    key = cache_key(model, device, threads, precisions, max_batch, bounds)
    kid = key_id(key)
    speed_key = speed_key_id(model, key)
    path = Path(cache).expanduser() if cache is not None else None
    entries = read_cache(path) if path is not None else {}
    hit = _cached(entries, kid, precisions)
    if hit is not None:
        log.info("precision auto: %s (cached %s): %s", hit.label, hit.when, hit.reason)
        return hit
    t0 = time.perf_counter()
    if len(precisions) == 1:
        measured = []
        precision, reason = precisions[0], f"only {precisions[0]} runs natively here" + _fused_note(device)
    else:
        relative = _relative(entries, speed_key, lineage, precisions)
        try:
            with torch_threads(threads):
                if relative is not None:
                    measured = recheck(model, device, relative, max_batch, probe, bounds)
                else:
                    measured = measure(model, device, precisions, max_batch, probe)
        except Exception as exc:  # the reference itself failed: serve it anyway, and measure again next time
            log.exception("precision auto: the measurement failed; serving fp32")
            return Decision("fp32", f"the measurement failed ({_said(exc)}); the reference precision", [], key)
        precision, reason = choose(measured, bounds)
        reason = f"{precision}: {reason}{_fused_note(device)}"
        if relative is not None and relative.lineage is not None:
            whose = ("its parent" if relative.lineage.path == (lineage.parent if lineage else None)
                     else "a checkpoint fine-tuned from the same parent")
            reason += (f"; step times as measured for {whose} ({relative.lineage.path}, the same shapes on this "
                       "machine), fidelity measured on this checkpoint")
    chosen, step = parse(precision)
    decision = Decision(chosen, reason, measured, key, time.perf_counter() - t0,
                        datetime.now(timezone.utc).isoformat(timespec="seconds"), step=step, lineage=lineage,
                        speed_key=speed_key)
    log.info("precision auto: %s, measured in %.2f s: %s", precision, decision.seconds, reason)
    if path is not None:
        entries[kid] = decision.to_dict()
        write_cache(path, entries)
    return decision
