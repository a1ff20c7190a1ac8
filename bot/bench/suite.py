"""One benchmark run: every section, side by side, with the machine's state recorded."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from bot.bench import (
    capacity,
    classic,
    concurrent,
    fidelity,
    generation,
    gpu,
    grounding,
    personas,
    quality,
    training,
)
from bot.bench import step as step_profile
from bot.bench.machine import machine as describe_machine
from bot.bench.stats import median, ratio
from corpora.registry import CORPORA, find_corpus_file
from corpora.shipped import checkpoint_dir
from model import fused_step
from model.charset import VOCAB_SIZE
from model.checkpoint import Checkpoint, checkpoint_name, load_checkpoint
from model.device import cpu_threads, generation_precisions, training_precision
from model.network import CharLSTM, ModelConfig
from model.precision import FAITHFUL_ORDER, auto_precision, label, parse
from model.step_threads import OTHERS_EVERY

SECTIONS = ("single", "concurrent", "train", "fidelity", "quality", "grounding", "gpu", "capacity", "personas")
# A plain run leaves capacity and personas out: capacity starts a real bot process on the shipped checkpoint
# and puts minutes of load on it (``--only capacity``); personas measures a trained persona's checkpoint
# (``--only personas --persona-checkpoint ...``). The others time the engine in this process.
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s not in ("capacity", "personas"))
TARGETS = {
    "single_vs_classic": 25.0,
    "concurrent32_chars_per_s": 15_000.0,
    "loop_lag_p99_ms": 20.0,
    "train_vs_classic": 1.3,
    "gpu_ms_per_char": 0.1,
    "gpu_loop_lag_p99_ms": 20.0,
    "gpu_train_chars_per_s": 1_500_000.0,
    "gpu_train_vs_classic": 20.0,
    "quality_clean_rate": 0.95,
    "quality_invented_rate": {"tale": 0.005, "novel": 0.005, "faq": 0.01},
    "quality_invented_vs_fp32_pp": 0.1,  # the default (auto) precision's invented-word rate over fp32's, at most
    "quality_faq_topic_rate": 0.8,
    "quality_alone_p95_s": 0.5,
    "grounding_hit_at_1": 0.9,  # the paraphrase set's questions whose quoted passage answers them (issue 24)
    "capacity_finished_p95_s": 2.0,  # an open-loop rate is sustained while the finished p95 stays within this
    "capacity_unfinished_rate": 0.01,  # ... and at most this share of requests goes unanswered
    "persona_clean_rate": 0.95,
    "persona_invented_rate": 0.01,
}


@dataclass
class BenchConfig:
    """What to measure. ``quick`` shrinks every count so the run takes seconds (for CI)."""

    out: Path = Path("bench")
    quick: bool = False
    models: list[str] | None = None  # checkpoint paths; None: the shipped ones
    checkpoint_dir: Path | None = None  # where the shipped ones are; None: corpora.shipped.checkpoint_dir()
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(2, 512)])  # (layers, hidden), random weights
    chars: int = 400
    repeats: int = 3
    concurrency: tuple[int, ...] = (1, 8, 32)
    train_seconds: float = 20.0
    train_text: Path | None = None
    train_seqs: int = 128
    train_steps: int = 100
    classic_script: Path | None = None
    threads: int | None = None
    engine_threads: int | None = None  # set by run_bench: ``threads`` as given; None is the engine's own default
    # engine paths to time, by model.precision.label ("fp32", "bf16 fused"); None: every one here (paths_here)
    precisions: tuple[str, ...] | None = None
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    agreement_seeds: int = 8
    quality_seeds: int | None = None  # seeds per prompt in the quality section; None: quality.SEEDS
    agreement_chars: int = 200
    kl_chars: int = 2000
    gpu_train_seqs: tuple[int, ...] = gpu.GPU_TRAIN_SEQS
    gpu_concurrency: tuple[int, ...] = gpu.GPU_CONCURRENCY
    capacity: capacity.CapacityConfig = field(default_factory=capacity.CapacityConfig)
    personas: personas.PersonaBenchConfig | None = None  # the personas section's persona (None: not measured)

    def shrink(self) -> None:
        """The quick version of this run."""
        self.chars = min(self.chars, 80)
        self.repeats = 1
        self.concurrency = tuple(min(n, 4) for n in self.concurrency[:2]) or (1,)
        self.train_seconds = min(self.train_seconds, 2.0)
        self.train_seqs, self.train_steps = min(self.train_seqs, 8), min(self.train_steps, 20)
        self.agreement_seeds, self.agreement_chars, self.kl_chars = 2, 40, 200
        self.gpu_train_seqs = self.gpu_train_seqs[-1:]  # the GPU-sized batch only
        self.gpu_concurrency = (1, self.gpu_concurrency[-1])
        self.capacity.shrink()


@dataclass
class BenchModel:
    name: str
    source: str
    checkpoint: Checkpoint

    @property
    def size(self) -> str:
        return f"{self.checkpoint.config.n_layers}x{self.checkpoint.config.hidden_size}"


def shipped_paths(folder: Path | None = None) -> list[Path]:
    """The shipped checkpoints in ``folder`` (default: :func:`corpora.shipped.checkpoint_dir`)."""
    folder = folder if folder is not None else checkpoint_dir()
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def load_models(cfg: BenchConfig) -> list[BenchModel]:
    paths = shipped_paths(cfg.checkpoint_dir) if cfg.models is None else [Path(p) for p in cfg.models]
    models = [BenchModel(checkpoint_name(p), str(p), load_checkpoint(p)) for p in paths]
    for layers, hidden in cfg.sizes:
        torch.manual_seed(0)
        config = ModelConfig(hidden_size=hidden, n_layers=layers, embed_size=min(64, hidden), dropout=0.0)
        model = CharLSTM(config).eval()
        models.append(BenchModel(f"reference {layers}x{hidden}", "random weights", Checkpoint(model, config)))
    return models


def default_train_text() -> Path | None:
    """The tale corpus's raw file, if it is on this machine (both sides of the comparison read the same file)."""
    return find_corpus_file("tale")


def paths_here() -> tuple[str, ...]:
    """Every engine path on this CPU, most faithful first: the eager step at each native precision,
    and the fused step's precisions where its kernel builds (see :mod:`model.precision`)."""
    found = list(generation_precisions(torch.device("cpu")))
    if fused_step.load_kernel() is not None:
        found += [label(p, "fused") for p in fused_step.PRECISIONS]
    return tuple(sorted(found, key=lambda c: FAITHFUL_ORDER.index(c) if c in FAITHFUL_ORDER else len(FAITHFUL_ORDER)))


def paths_for(m: BenchModel, cfg: BenchConfig) -> list[str]:
    """The paths of ``cfg.precisions`` that can run ``m`` (the fused step needs a hidden size divisible by 8)."""
    c = m.checkpoint.config
    return [p for p in cfg.precisions if parse(p)[1] == "eager"
            or fused_step.unsupported(c.n_layers, c.hidden_size, parse(p)[0], torch.device("cpu")) is None]


def machine() -> dict:
    return describe_machine(gpu.device_facts() if gpu.available() else None)


def run_bench(cfg: BenchConfig, say: Callable[[str], None] = print) -> dict:
    """Measure every section in ``cfg.sections``; return the results (see :mod:`report`)."""
    if cfg.quick:
        cfg.shrink()
    # Engines get --threads only when it was given: otherwise they run as the bot runs them, a lone
    # reply stepping with every core while that is measured faster (model.step_threads). The other
    # sides (classic, reference, training) get the engine's normal count, so those ratios compare code.
    cfg.engine_threads = cfg.threads
    if cfg.threads is None:
        cfg.threads = cpu_threads("generation")
    if cfg.precisions is None:
        cfg.precisions = paths_here()
    main_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # before loading: only engine workers may own thread pools
    try:
        return _run_sections(cfg, say)
    finally:
        torch.set_num_threads(main_threads)


def _run_sections(cfg: BenchConfig, say: Callable[[str], None]) -> dict:
    script = classic.find_script(cfg.classic_script)
    results: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
                     "machine_start": machine(), "classic_script": str(script) if script else None,
                     "targets": TARGETS, "notes": []}
    if script is None:
        results["notes"].append("classic baseline script not found: ratios are missing")
    if cfg.engine_threads is None and cpu_threads("boost") > cfg.threads:
        results["notes"].append(
            f"engines use their default threads: a lone reply steps with {cpu_threads('boost')} while that is "
            f"measured faster and no other engine steps; the classic and reference sides use {cfg.threads}")
    models = load_models(cfg) if set(cfg.sections) - {"quality", "capacity", "personas", "grounding"} else []
    say(f"bench: {len(models)} model(s): " + ", ".join(f"{m.name} ({m.size})" for m in models)
        + f"; {cfg.threads} thread(s)")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    results["section_seconds"] = timings
    results["errors"] = {}
    sections: dict[str, Callable[[], object]] = {
        "single": lambda: [_single(m, cfg, script, say) for m in models],
        "concurrent": lambda: _concurrent(models, cfg, say),
        "train": lambda: _train(models, cfg, script, say),
        "fidelity": lambda: _fidelity(models, cfg, say),
        "quality": lambda: quality.measure(
            quality.QualityConfig(checkpoint_dir=cfg.checkpoint_dir, quick=cfg.quick,
                                  **({"seeds": tuple(range(1, cfg.quality_seeds + 1))} if cfg.quality_seeds else {})),
            say),
        "gpu": lambda: _gpu(models, cfg, script, say),
        "grounding": lambda: grounding.measure(say),
        "capacity": lambda: _capacity(cfg, say),
        "personas": lambda: _personas(cfg, say),
    }
    if {"single", "concurrent", "fidelity"} & set(cfg.sections):
        try:
            results["auto"] = _auto(models, cfg, say)
        except Exception as exc:
            say(f"auto: failed: {exc}")
            results["errors"]["auto"] = f"{type(exc).__name__}: {exc}"
    for name, measure in sections.items():
        if name not in cfg.sections:
            continue
        mark = time.perf_counter()
        try:
            results[name] = measure()
        except Exception as exc:  # one broken section must not lose the others' figures
            say(f"{name}: failed: {exc}")
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
        timings[name] = time.perf_counter() - mark
    results["seconds"] = time.perf_counter() - started
    results["machine_end"] = machine()
    return results


def _personas(cfg: BenchConfig, say: Callable[[str], None]) -> dict:
    if cfg.personas is None:
        raise ValueError("the personas section needs a persona's checkpoint: --persona-checkpoint PATH")
    cfg.personas.quick = cfg.personas.quick or cfg.quick
    return personas.measure(cfg.personas, say)


def _capacity(cfg: BenchConfig, say: Callable[[str], None]) -> dict:
    """One bot process end to end (:mod:`bot.bench.capacity`), and the open-loop rate it sustains per trigger."""
    if cfg.capacity.checkpoint_dir is None:
        cfg.capacity.checkpoint_dir = cfg.checkpoint_dir
    out = capacity.measure(cfg.capacity, say)
    out["sustained_rate_per_s"] = capacity.sustained(out["runs"], TARGETS["capacity_finished_p95_s"],
                                                     TARGETS["capacity_unfinished_rate"])
    # The refusal bound alone: where a machine too slow for the p95 bound still answers nearly everyone.
    out["answered_rate_per_s"] = capacity.sustained(out["runs"], math.inf, TARGETS["capacity_unfinished_rate"])
    return out


def _concurrent(models: list[BenchModel], cfg: BenchConfig, say: Callable[[str], None]) -> list[dict]:
    rows = []
    for m in models:
        for path in paths_for(m, cfg):
            say(f"concurrent: {m.name} {path}")
            precision, step = parse(path)
            got = concurrent.concurrent_replies(
                m.checkpoint, cfg.concurrency, cfg.chars, corpus=_corpus_of(m), precision=precision,
                threads=cfg.engine_threads, min_replies=1 if cfg.quick else 32, step=step)
            rows += [{"model": m.name, "size": m.size, **row} for row in got]
    return rows


def _fidelity(models: list[BenchModel], cfg: BenchConfig, say: Callable[[str], None]) -> list[dict]:
    rows = []
    for m in models:
        say(f"fidelity: {m.name}")
        kls = [fidelity.kl_against_reference(m.checkpoint, cfg.kl_chars, p) for p in paths_for(m, cfg)]
        agree = fidelity.agreement(m.checkpoint, cfg.agreement_seeds, cfg.agreement_chars)
        rows.append({"model": m.name, "size": m.size, "kl": kls, "agreement": agree})
    return rows


def _auto(models: list[BenchModel], cfg: BenchConfig, say: Callable[[str], None]) -> list[dict]:
    """What the engine's ``auto`` picks for each model on this machine, and the measurements behind it.

    Measured afresh (no cache), with the bench's thread count and the engine's default batch.
    """
    rows = []
    for m in models:
        say(f"auto precision: {m.name}")
        decision = auto_precision(m.checkpoint.model, torch.device("cpu"), threads=cfg.threads)
        rows.append({"model": m.name, "size": m.size, **decision.to_dict()})
    return rows


def _corpus_of(m: BenchModel) -> str:
    """The corpus whose reply path the model is measured through (random-weight models: tale's)."""
    corpus = m.checkpoint.info.get("corpus")
    return corpus if corpus in CORPORA else "tale"


def _single(m: BenchModel, cfg: BenchConfig, script: Path | None, say: Callable[[str], None]) -> dict:
    """Our engine (each path) and the classic script, alternated ``repeats`` times; medians; then the
    step's profile (:mod:`bot.bench.step`).

    Alternating puts both sides under the same background load, so the ratio holds even when
    the machine is busy and the absolute speeds do not. Each run gets a fresh engine, alone in
    the process as a bot's lone reply is: only one engine per process may step a lone reply
    with every core (:mod:`model.step_threads`), and an engine kept from an earlier run would
    hold that right. The engine runs start half a second after the classic script's: an
    engine boosts only while the latest quarter second shows no other process busy, and the
    classic script is one.
    """
    c = m.checkpoint.config
    say(f"single reply: {m.name}")
    row: dict = {"model": m.name, "size": m.size, "source": m.source, "params": m.checkpoint.model.n_params()}
    paths = paths_for(m, cfg)
    speeds: dict[str, list[float]] = {p: [] for p in paths}
    firsts: dict[str, list[float]] = {p: [] for p in paths}
    boosted: dict[str, list[float]] = {p: [] for p in paths}
    classic_runs: list[dict] = []
    for i in range(cfg.repeats):
        time.sleep(2 * OTHERS_EVERY)
        for p in paths:
            precision, step = parse(p)
            probe = generation.SingleReply(m.checkpoint, precision=precision, threads=cfg.engine_threads, step=step)
            try:
                speeds[p].append(probe.chars_per_s(cfg.chars, seed=i + 1))
                firsts[p].append(probe.first_char_ms(seed=i + 1))
                boosted[p].append(probe.boosted_share())
            finally:
                probe.close()
        if script is not None and "classic_error" not in row:
            try:
                classic_runs.append(classic.classic_sample(script, c.hidden_size, c.n_layers, VOCAB_SIZE,
                                                           cfg.chars, cfg.threads))
            except classic.BaselineError as exc:
                row["classic_error"] = str(exc)
    for p in paths:
        cps = median(speeds[p])
        row[p] = {"chars_per_s": cps, "ms_per_char": 1000 / cps, "first_char_ms": median(firsts[p]),
                  "runs_chars_per_s": speeds[p], "chars": cfg.chars, "boosted_share": median(boosted[p])}
    if classic_runs:
        cps = median([r["chars_per_s"] for r in classic_runs])
        row["classic"] = {"chars_per_s": cps, "ms_per_char": 1000 / cps,
                          "runs_chars_per_s": [r["chars_per_s"] for r in classic_runs],
                          "argv": classic_runs[0].get("argv")}
    ref_chars = min(cfg.chars, 100 if cfg.quick else 400)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        row["reference"] = generation.reference_single(m.checkpoint, ref_chars)
        row["reference"]["prime_ms"] = generation.reference_prime_ms(m.checkpoint)
    finally:
        torch.set_num_threads(torch_threads)
    base = row.get("classic", {}).get("chars_per_s")
    for p in paths:
        row[p]["vs_classic"] = ratio(row[p]["chars_per_s"], base)
        row[p]["vs_reference"] = ratio(row[p]["chars_per_s"], row["reference"]["chars_per_s"])
    say(f"step profile: {m.name}")
    torch.set_num_threads(cfg.threads)
    try:  # the step alone, on the classic side's thread count: where a character's time goes, and the floor
        row["step"] = step_profile.profile_steps(m.checkpoint, paths, rounds=2 if cfg.quick else 7,
                                                 steps=2 if cfg.quick else 16, chars=8 if cfg.quick else 64)
    finally:
        torch.set_num_threads(torch_threads)
    return row


def _train(models: list[BenchModel], cfg: BenchConfig, script: Path | None, say: Callable[[str], None]) -> list[dict]:
    text = cfg.train_text or default_train_text()
    if text is None:
        return [{"error": "no training text: pass --train-text FILE"}]
    rows = []
    sizes = sorted({(m.checkpoint.config.n_layers, m.checkpoint.config.hidden_size) for m in models})
    for layers, hidden in sizes:
        say(f"training: {layers}x{hidden}, batch {cfg.train_seqs}x{cfg.train_steps}, {cfg.train_seconds:g} s each")
        row: dict = {"size": f"{layers}x{hidden}", "text": str(text)}
        precisions = ["auto"] + (["fp32"] if training_precision("auto", torch.device("cpu")) != "fp32" else [])
        ours_runs: dict[str, list[dict]] = {p: [] for p in precisions}
        classic_runs: list[dict] = []
        for _ in range(1 if cfg.quick else 2):  # alternate, so every variant meets the same background load
            for precision in precisions:
                ours_runs[precision].append(training.our_training(
                    text, hidden, layers, cfg.train_seqs, cfg.train_steps, cfg.train_seconds, threads=cfg.threads,
                    precision=precision))
            if script is not None and "classic_error" not in row:
                try:
                    classic_runs.append(classic.classic_train(script, text, hidden, layers, cfg.train_seqs,
                                                              cfg.train_steps, cfg.train_seconds, cfg.threads))
                except classic.BaselineError as exc:
                    row["classic_error"] = str(exc)
        for precision, key in (("auto", "ours"), ("fp32", "ours_fp32")):
            runs = ours_runs.get(precision)
            if runs:
                row[key] = {**runs[-1], "chars_per_s": median([r["chars_per_s"] for r in runs]),
                            "runs_chars_per_s": [r["chars_per_s"] for r in runs]}
        if classic_runs:
            row["classic"] = {**classic_runs[-1], "chars_per_s": median([r["chars_per_s"] for r in classic_runs]),
                              "runs_chars_per_s": [r["chars_per_s"] for r in classic_runs]}
        row["vs_classic"] = ratio(row["ours"]["chars_per_s"], row.get("classic", {}).get("chars_per_s"))
        if "ours_fp32" in row:
            row["fp32_vs_classic"] = ratio(row["ours_fp32"]["chars_per_s"], row.get("classic", {}).get("chars_per_s"))
        rows.append(row)
    return rows


def _gpu(models: list[BenchModel], cfg: BenchConfig, script: Path | None, say: Callable[[str], None]) -> dict:
    """The GPU rows (see :mod:`bot.bench.gpu`); on a machine without CUDA, a note saying so."""
    if not gpu.available():
        return {"skipped": "no CUDA GPU here"}
    out: dict = {"device": gpu.device_facts(), "single": [], "concurrent": [], "train": []}
    for m in models:
        say(f"gpu single reply: {m.name}")
        out["single"].append({"model": m.name, "size": m.size,
                              **gpu.single_reply(m.checkpoint, cfg.chars, max(3, cfg.repeats))})
    for m in models:
        say(f"gpu concurrent: {m.name}")
        rows = gpu.many_replies(m.checkpoint, cfg.chars, _corpus_of(m), cfg.gpu_concurrency)
        out["concurrent"] += [{"model": m.name, "size": m.size, **row} for row in rows]
    text = cfg.train_text or default_train_text()
    if text is None:
        out["train"].append({"error": "no training text: pass --train-text FILE"})
        return out
    for layers, hidden in sorted({(m.checkpoint.config.n_layers, m.checkpoint.config.hidden_size) for m in models}):
        say(f"gpu training: {layers}x{hidden}, batches {cfg.gpu_train_seqs} x {cfg.train_steps}")
        out["train"] += gpu.training_rows(text, hidden, layers, cfg.train_steps, cfg.train_seconds, script,
                                          cfg.gpu_train_seqs)
    return out
