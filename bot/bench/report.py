"""Write a bench run as ``bench.json`` (everything) and ``bench.md`` (the tables people read)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bot.bench.grounding import report_lines as _grounding_section
from bot.bench.machine import describe_cpu
from model.checkpoint import atomic_write_bytes
from model.precision import FAITHFUL_ORDER, label


def _f(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def _load(machine: dict) -> str:
    load = machine.get("load_avg")
    return "/".join(f"{x:.2f}" for x in load) if load else "?"


def _mark(ok: bool | None) -> str:
    return "" if ok is None else (" (met)" if ok else " (missed)")


def markdown(results: dict) -> str:
    """The report people read: each of :data:`SECTIONS` in turn, a section without results left out."""
    return "\n".join(line for section in SECTIONS for line in section(results)) + "\n"


def _header(results: dict) -> list[str]:
    """The title, the machine and run the figures come from, and the run's notes and failed sections."""
    m0, m1 = results["machine_start"], results.get("machine_end", {})
    lines = [
        "# charbot bench",
        "",
        f"{m0['when']} - torch {m0['torch']} - CPU: {describe_cpu(m0.get('cpu', '?'))} - {m0['cpu_count']} CPUs - "
        f"GPU: {m0['cuda'] or 'none'} - "
        f"{results['config']['threads']} torch thread(s) - load average {_load(m0)} at start, "
        f"{_load(m1)} at end - {'quick' if results['config']['quick'] else 'full'} run, "
        f"{_f(results.get('seconds'), 0)} s",
        "",
        "Ratios compare figures taken in this run on this machine; absolute speeds move with the load.",
    ]
    for note in results.get("notes", []):
        lines += ["", f"Note: {note}"]
    for section, error in results.get("errors", {}).items():
        lines += ["", f"The {section} section failed: {error}"]
    return lines


def _auto_picks(results: dict) -> dict[str, str]:
    """The path auto picked per model (``"bf16 fused"``, model.precision.label), for the tables that star it."""
    return {r["model"]: label(r["precision"], r.get("step", "eager")) for r in results.get("auto") or []}


def _paths(rows: list[dict]) -> list[str]:
    """The engine paths with figures in ``rows`` (keyed by label), most faithful first."""
    return [p for p in FAITHFUL_ORDER if any(p in r for r in rows)]


def _single_section(results: dict) -> list[str]:
    """One reply at a time: each precision of the engine against the reference and the classic recipe."""
    if not results.get("single"):
        return []
    t, auto = results["targets"], _auto_picks(results)
    precisions = _paths(results["single"])
    lines = ["", "## Single reply", "",
             f"Target: at least {t['single_vs_classic']:g}x the classic recipe (chars/s). "
             "The precision auto picked for each model is marked *.", "",
             "First character: time to the first character of an 85-character prompt primed inside the batch "
             "by the eager step (fp32); nn.LSTM prime: the same prompt read by one nn.LSTM call.", "",
             "| model | size | " + " | ".join(f"engine {p} chars/s (ms/char)" for p in precisions)
             + " | first char (fp32) | nn.LSTM prime | reference nn.LSTM chars/s | classic chars/s | "
             + " | ".join(f"{p} / classic" for p in precisions) + " |",
             "|---|---|" + "---|" * (2 * len(precisions) + 4)]
    for r in results["single"]:
        cells = [r["model"], r["size"]]
        for p in precisions:
            star = "*" if auto.get(r["model"]) == p else ""
            cells.append(f"{_f(r[p]['chars_per_s'])}{star} ({_f(r[p]['ms_per_char'], 3)})" if p in r else "-")
        cells.append(_f(r["fp32"]["first_char_ms"], 1, " ms") if "fp32" in r else "-")
        cells.append(_f(r["reference"].get("prime_ms"), 1, " ms"))
        cells.append(_f(r["reference"]["chars_per_s"]))
        cells.append(_f(r.get("classic", {}).get("chars_per_s")))
        for p in precisions:
            v = r.get(p, {}).get("vs_classic")
            cells.append(_f(v, 1, "x") + _mark(None if v is None else v >= t["single_vs_classic"]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _shared(path: dict) -> str:
    """A fused path's shared 32-row step, with its thread count; '-' for the others and on one core."""
    if path.get("shared_us") is None:
        return "-"
    return f"{_f(path['shared_us'], 0, ' us')} ({path['shared_threads']} threads)"


def _step_section(results: dict) -> list[str]:
    """Each path's step at 1 and 32 rows against the weight-traffic floor, and where a lone row's character goes."""
    rows = [r for r in results.get("single") or [] if r.get("step", {}).get("paths")]
    if not rows:
        return []
    auto = _auto_picks(results)
    lines = ["", "## Step", "",
             "One step alone (`FastStep.step`), the paths interleaved, medians. Floor: the time to read the step's "
             "weight bytes once, warm, on one core of this machine (the faster of a `torch.sum` over a float32 "
             "buffer of those bytes and the fused kernel's plain read loop); a lone row's step can do no better. "
             "Per character: a step and a draw at 1 row, as the engine does them. In brackets, the same by the "
             "thread's CPU time, which other processes' load inflates far less. Shared: the fused step of 32 rows "
             "with its rows shared among the kernel's threads, one per core (what a crowd's steps get when the "
             "engine's probes find it faster). The path auto picked is marked *.",
             "", "| model | path | weights | step 1 row | step 32 rows | 32 rows, shared | floor (how) | 1 row / floor "
             "| per character | calls per character |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for p in r["step"]["paths"]:
            fl, b = p["floor"], p["breakdown"]
            star = "*" if auto.get(r["model"]) == p["path"] else ""
            cpu = p.get("step_cpu_us", {})
            lines.append(
                f"| {r['model']} | {p['path']}{star} | {p['weight_bytes'] / 1e6:.2f} MB | "
                f"{_f(p['step_us'].get('1'), 0, ' us')} ({_f(cpu.get('1'), 0)}) | "
                f"{_f(p['step_us'].get('32'), 0, ' us')} ({_f(cpu.get('32'), 0)}) | "
                f"{_shared(p)} | "
                f"{_f(fl['us'], 0, ' us')} ({fl['how']}; {_f(fl.get('cpu_us'), 0)}) | "
                f"{_f(p['floor_ratio'], 2, 'x')} ({_f(p.get('floor_ratio_cpu'), 2, 'x')}) | "
                f"{_f(b['us_per_char'], 0, ' us')} | {_f(b['calls_per_char'], 0)} |")
        for name, error in r["step"].get("errors", {}).items():
            lines.append(f"| {r['model']} | {name} | - | - | - | - | - | - | - | {error} |")
    for r in rows:
        for p in r["step"]["paths"]:
            calls = p["breakdown"]["calls"]
            lines += ["", f"Where a character goes, {r['model']}, {p['path']}, 1 row (torch.profiler, own time per "
                      f"character; {_f(p['breakdown']['us_per_char'], 0, ' us')} unprofiled):", "",
                      "| call | us per character | calls per character |", "|---|---|---|"]
            shown = calls[:8]
            lines += [f"| {c['call']} | {_f(c['us_per_char'], 1)} | {_f(c['calls_per_char'], 1)} |" for c in shown]
            rest = calls[len(shown):]
            if rest:
                lines.append(f"| {len(rest)} other calls | {_f(sum(c['us_per_char'] for c in rest), 1)} | "
                             f"{_f(sum(c['calls_per_char'] for c in rest), 1)} |")
    return lines


def _concurrent_section(results: dict) -> list[str]:
    """Many replies at once through the bot's reply path: throughput, latency, event-loop lag."""
    if not results.get("concurrent"):
        return []
    t, auto = results["targets"], _auto_picks(results)
    lines = ["", "## Concurrent replies", "",
             f"Target with 32 replies: at least {t['concurrent32_chars_per_s']:,.0f} chars/s in aggregate, "
             f"event-loop lag p99 at most {t['loop_lag_p99_ms']:g} ms. "
             f"Path: {results['concurrent'][0]['path']}. The precision auto picked is marked *.", "",
             "| model | precision | replies | aggregate chars/s | latency p50 | latency p99 | loop lag p99 |",
             "|---|---|---|---|---|---|---|"]
    for r in results["concurrent"]:
        big = r["replies"] >= 32
        star = "*" if auto.get(r["model"]) == r["precision"] else ""
        lines.append(
            f"| {r['model']} | {r['precision']}{star} | {r['replies']} | {_f(r['aggregate_chars_per_s'])}"
            f"{_mark(r['aggregate_chars_per_s'] >= t['concurrent32_chars_per_s'] if big else None)} | "
            f"{_f(r['latency_p50_s'], 2, ' s')} | {_f(r['latency_p99_s'], 2, ' s')} | "
            f"{_f(r['loop_lag_p99_ms'], 1, ' ms')}{_mark(r['loop_lag_p99_ms'] <= t['loop_lag_p99_ms'])} |")
    return lines


def _train_section(results: dict) -> list[str]:
    """Training speed, ours (as a user runs it, and in plain fp32) against the classic recipe."""
    if not results.get("train"):
        return []
    t = results["targets"]
    lines = ["", "## Training", "", f"Target: at least {t['train_vs_classic']:g}x the classic recipe. Ours is "
             "`train()` as a user runs it (precision auto: bf16 autocast where the CPU has native bf16, "
             "float32 weights and validation), and in plain fp32 for comparison.", "",
             "| size | batch | ours | precision | chars/s | classic chars/s | ours / classic |",
             "|---|---|---|---|---|---|---|"]
    for r in results["train"]:
        if "ours" not in r:
            lines.append(f"| - | - | {r.get('error', '-')} | - | - | - | - |")
            continue
        classic_cps = _f(r.get("classic", {}).get("chars_per_s"))
        for key, vs, name in (("ours", "vs_classic", "default"), ("ours_fp32", "fp32_vs_classic", "fp32")):
            if key not in r:
                continue
            o, v = r[key], r.get(vs)
            target = None if v is None or key != "ours" else v >= t["train_vs_classic"]
            lines.append(f"| {r['size']} | {o['seqs']}x{o['steps_per_seq']} | {name} | {o.get('precision', '-')} | "
                         f"{_f(o['chars_per_s'])} | {classic_cps} | {_f(v, 2, 'x')}{_mark(target)} |")
    return lines


def _fidelity_section(results: dict) -> list[str]:
    """How far the fast step's distributions are from the reference, and which texts came out exactly equal."""
    if not results.get("fidelity"):
        return []
    lines = ["", "## Fidelity", "",
             "KL(reference || fast step) per character in nats over real text (the measure auto applies to the "
             "model's own text); bounds: KL mean at most 1e-3, top-1 agreement at least 99%.", "",
             "| model | text | precision | KL mean | KL p99 | KL max | top-1 agreement | within bounds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["fidelity"]:
        for k in r["kl"]:
            lines.append(
                f"| {r['model']} | {k['text']} | {k['precision']} | {k['kl_mean']:.1e} | {k['kl_p99']:.1e} | "
                f"{k['kl_max']:.1e} | {k['top1_agreement']:.2%} | {'yes' if k.get('meets_bounds') else 'no'} |")
    lines += ["", "Texts compared exactly (fp32 engine):", "",
              "| model | engine = generate | alone = in a crowd |", "|---|---|---|"]
    for r in results["fidelity"]:
        a = r["agreement"]
        lines.append(f"| {r['model']} | {a['engine_equals_generate']}/{a['replies']} | "
                     f"{a['alone_equals_crowd']}/{a['replies']} |")
    return lines


def _auto_section(results: dict) -> list[str]:
    """What the engine's auto picked per model, why, and the measurement behind it (model.precision)."""
    rows = results.get("auto")
    if not rows:
        return []
    lines = ["", "## Auto precision", "",
             "What `precision=auto` picks at load on this machine: the fastest precision whose KL against the fp32 "
             "reference (teacher-forced on 16 x 128 characters the model wrote itself) is at most 1e-3 nats/char "
             "with top-1 agreement at least 99%; fastest = smallest geometric mean of the step time at 1 row and at "
             "a crowd, ties within 5% to the more faithful.", "",
             "| model | picked | precision | KL mean | top-1 | step 1 row | step crowd | geometric mean | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        picked = label(r["precision"], r.get("step", "eager"))
        if not r["measured"]:
            lines.append(f"| {r['model']} | {picked} | - | - | - | - | - | - | {r['reason']} |")
        for m in r["measured"]:
            f, sp = m.get("fidelity") or {}, m.get("speed") or {}
            lines.append(
                f"| {r['model']} | {'**' + picked + '**' if m['precision'] == picked else ''} | "
                f"{m['precision']} | {_e(f.get('kl_mean'))} | {_pct(f.get('top1_agreement'), 2)} | "
                f"{_f(sp.get('lone_ms'), 3, ' ms')} | {_f(sp.get('crowd_ms'), 3, ' ms')} ({sp.get('crowd', '-')}) | "
                f"{_f(sp.get('score_ms'), 3, ' ms')} | {m.get('error') or ''} |")
    lines += ["", "Measured in " + ", ".join(f"{_f(r['seconds'], 2, ' s')} ({r['model']})" for r in rows) + "."]
    lines += [f"\n{r['model']}: {r['reason']}" for r in rows if r["measured"]]
    return lines


def _e(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _quality_section(results: dict) -> list[str]:
    """The reply-quality table: what a person reads, and how long it takes, per corpus and n."""
    rows, t = results.get("quality"), results["targets"]
    if not rows:
        return []
    clean_t, topic_t, p95_t = t.get("quality_clean_rate"), t.get("quality_faq_topic_rate"), t.get("quality_alone_p95_s")
    invented_t = t.get("quality_invented_rate", {})
    served = ", ".join(f"{c} {p}" for c, p in dict((r["corpus"], r["precision"]) for r in rows).items())
    lines = ["", "## Reply quality", "",
             f"Through the bot's reply path with the served checkpoints at the default precision ({served}), "
             f"a fixed set of prompts per corpus and seeds, target length {rows[0]['length']} characters. "
             f"Targets: clean endings at least {_pct(clean_t, 0)}; invented words at most "
             + ", ".join(f"{_pct(v)} ({c})" for c, v in invented_t.items())
             + f"; FAQ topic rate at least {_pct(topic_t, 0)}; p95 alone at most {p95_t} s at the default n; "
             "with the crowd, the concurrency targets above (posted characters). n = default is the bot's: "
             "several candidates when idle, falling to 1 under load (mean n shown).", "",
             "| corpus | n | replies | invented words | clean endings | FAQ topic | source shown | mean chars "
             "| mean n alone | p50 alone | p95 alone | crowd | p50 crowd | p95 crowd | posted chars/s crowd "
             "| loop lag p99 | mean n crowd |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["crowd"]
        inv_t = invented_t.get(r["corpus"])
        default = r["n"] == "default"
        lines.append(
            f"| {r['corpus']} | {r['n']} | {r['replies']} | {_pct(r['invented_rate'], 2)}"
            f"{_mark(None if inv_t is None else r['invented_rate'] <= inv_t)} | {_pct(r['clean_rate'])}"
            f"{_mark(None if clean_t is None else r['clean_rate'] >= clean_t)} | "
            f"{_pct(r.get('topic_rate'))}{_mark(None if 'topic_rate' not in r else r['topic_rate'] >= topic_t)} | "
            f"{_pct(r.get('source_rate'))} | {_f(r['mean_chars'])} | {_f(r['mean_candidates'], 1)} | "
            f"{_f(r['alone_p50_s'], 3, ' s')} | {_f(r['alone_p95_s'], 3, ' s')}"
            f"{_mark(r['alone_p95_s'] <= p95_t if default and p95_t is not None else None)} | {c['replies']} | "
            f"{_f(c['latency_p50_s'], 2, ' s')} | {_f(c['latency_p95_s'], 2, ' s')} | {_f(c['posted_chars_per_s'])}"
            f"{_mark(c['posted_chars_per_s'] >= t['concurrent32_chars_per_s'] if c['replies'] >= 32 else None)} | "
            f"{_f(c['loop_lag_p99_ms'], 1, ' ms')}{_mark(c['loop_lag_p99_ms'] <= t['loop_lag_p99_ms'])} | "
            f"{_f(c['mean_candidates'], 1)} |")
    lines += _reference_lines(rows, t)
    examples = {r["corpus"]: r["invented_examples"] for r in rows if r.get("invented_examples") and r["n"] != "1"}
    for corpus, words in examples.items():
        lines.append(f"\nInvented words ({corpus}, default n): {', '.join(words)}")
    return lines


def difference_se_pp(r: dict) -> float:
    """The standard error of the invented-word difference, in points: two binomial rates over their words.

    Once two replies part at one different character they are different texts, so the two rates
    are nearly independent samples and differ by sampling noise of this size.
    """
    ref = r["reference"]
    var = sum(p * (1 - p) / w for p, w in ((r["invented_rate"], r["words"]), (ref["invented_rate"], ref["words"])) if w)
    return 100 * math.sqrt(var)


ONE_SIDED_95 = 1.645  # standard errors: a one-sided 95% bound


def difference_verdict(diff: float, se: float, limit: float | None) -> str:
    """Met when the one-sided 95% upper bound of the difference is within the limit (a
    non-inferiority test), missed when its lower bound is past it, otherwise unresolved."""
    if limit is None:
        return ""
    if diff + ONE_SIDED_95 * se <= limit:
        return " (met)"
    if diff - ONE_SIDED_95 * se > limit:
        return " (missed)"
    return " (unresolved: more --quality-seeds)"


def _reference_lines(rows: list[dict], t: dict) -> list[str]:
    """The default precision's invented-word rate beside fp32's, on the same prompts and seeds (alone)."""
    rows = [r for r in rows if "reference" in r]
    if not rows:
        return []
    limit = t.get("quality_invented_vs_fp32_pp")
    lines = ["", f"Invented words at the default precision beside {rows[0]['reference']['precision']}, the same "
             f"prompts and seeds (replies alone). Target: at most {limit} percentage points worse; met or missed "
             "only when the difference is clear of it at one-sided 95% (1.645 standard errors; one shown after ±).", "",
             "| corpus | n | default precision | invented words | at " + rows[0]["reference"]["precision"]
             + " | difference | clean endings | at " + rows[0]["reference"]["precision"] + " |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref, diff = r["reference"], r["invented_vs_reference_pp"]
        se = difference_se_pp(r)
        lines.append(f"| {r['corpus']} | {r['n']} | {r['precision']} | {_pct(r['invented_rate'], 2)} | "
                     f"{_pct(ref['invented_rate'], 2)} | {diff:+.2f} ± {se:.2f} pp"
                     f"{difference_verdict(diff, se, limit)} | {_pct(r['clean_rate'])} | "
                     f"{_pct(ref['clean_rate'])} |")
    return lines


def _gpu_section(results: dict) -> list[str]:
    """The GPU section: single reply four ways, many replies, training against the classic recipe."""
    g, t = results.get("gpu"), results["targets"]
    if not g:
        return []
    if "skipped" in g:
        return ["", "## GPU", "", f"Skipped: {g['skipped']}."]
    d = g["device"]
    lines = ["", "## GPU", "", f"{d['name']} ({d['memory_gib']} GiB, compute {d['capability']}, CUDA {d['torch_cuda']},"
             f" bf16 {'yes' if d['bf16'] else 'no'}).", "",
             f"Single reply, ms per character (target with CUDA graphs: at most {t['gpu_ms_per_char']:g}). "
             "Overhead: the share of a graphed step that is not GPU work (copies, launch, synchronisation).", "",
             "| model | size | CUDA graphs | no graphs | nn.LSTM on GPU | CPU engine | graphs / nn.LSTM | "
             "GPU work per step | overhead share |", "|---|---|---|---|---|---|---|---|---|"]
    for r in g["single"]:
        ms = r["graphs"]["ms_per_char"]
        lines.append(f"| {r['model']} | {r['size']} | {_f(ms, 3)}{_mark(ms <= t['gpu_ms_per_char'])} | "
                     f"{_f(r['no_graphs']['ms_per_char'], 3)} | {_f(r['nn_lstm']['ms_per_char'], 3)} | "
                     f"{_f(r['cpu_engine']['ms_per_char'], 3)} | {_f(r['graphs']['vs_nn_lstm'], 1, 'x')} | "
                     f"{_f(r['step']['gpu_ms_per_step'], 3, ' ms')} | "
                     f"{_f(100 * r['step']['overhead_share_of_graph_step'], 0, '%')} |")
    lines += ["", f"Many replies on the GPU through the bot's reply path (target: loop lag p99 at most "
              f"{t['gpu_loop_lag_p99_ms']:g} ms).", "",
              "| model | replies | aggregate chars/s | latency p50 | latency p99 | loop lag p99 |",
              "|---|---|---|---|---|---|"]
    for r in g["concurrent"]:
        lines.append(f"| {r['model']} | {r['replies']} | {_f(r['aggregate_chars_per_s'])} | "
                     f"{_f(r['latency_p50_s'], 2, ' s')} | {_f(r['latency_p99_s'], 2, ' s')} | "
                     f"{_f(r['loop_lag_p99_ms'], 1, ' ms')}{_mark(r['loop_lag_p99_ms'] <= t['gpu_loop_lag_p99_ms'])} |")
    lines += ["", f"Training on the GPU (targets: at least {t['gpu_train_chars_per_s']:,.0f} chars/s at a GPU-sized "
              f"batch and {t['gpu_train_vs_classic']:g}x the classic recipe on the same GPU).", "",
              "| size | batch | ours chars/s | precision | classic chars/s | ours / classic |",
              "|---|---|---|---|---|---|"]
    for r in g["train"]:
        if "ours" not in r:
            lines.append(f"| - | - | {r.get('error', '-')} | - | - | - |")
            continue
        o, v = r["ours"], r.get("vs_classic")
        lines.append(f"| {r['size']} | {r['seqs']}x{r['steps_per_seq']} | {_f(o['chars_per_s'])}"
                     f"{_mark(o['chars_per_s'] >= t['gpu_train_chars_per_s'])} | {o.get('precision', '-')} | "
                     f"{_f(r.get('classic', {}).get('chars_per_s'))} | "
                     f"{_f(v, 1, 'x')}{_mark(None if v is None else v >= t['gpu_train_vs_classic'])} |")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:,.0f} ms"


def _three(q: dict) -> str:
    """p50 / p95 / p99 in seconds."""
    return " / ".join(_f(q.get(k), 2) for k in ("p50", "p95", "p99")) + " s"


def _capacity_load(r: dict) -> str:
    if r["load"] == "open":
        return f"open, {r['rate_per_s']:g}/s ({_f(r.get('arrivals_per_s'), 1)} arrived/s)"
    if r["load"] == "closed":
        return f"closed, {r['people']} people"
    return f"burst of {r['people']}"


def _capacity_section(results: dict) -> list[str]:
    """One bot process end to end: finished replies, waits, refusals, the bot's own loop lag (bot.bench.capacity)."""
    cap = results.get("capacity")
    if not cap:
        return []
    t, bot = results["targets"], cap["bot"]
    settings = ", ".join(f"{k}={v}" for k, v in bot["settings"].items())
    lines = ["", "## Capacity", "",
             f"One `charbot run` process on `{bot['checkpoint']}` ({settings}; every other limit at its default) "
             f"against the fake Discord, asked `{bot['prompt']}`. A reply is finished when its final edit (the one "
             "with the Continue and Another buttons) is posted; first text is the first snapshot a person sees. "
             "Closed: each person waits for their reply to finish before asking again. Open: Poisson arrivals, "
             "each from someone new. Refused: the bot's `charbot_replies_total` outcomes of the run's trigger; "
             "unanswered: requests without a finished reply, what the person read. Loop lag: bucket bounds of "
             "the bot's `charbot_event_loop_lag_observed_seconds` (one sample per 0.5 s), so p99 lies in a range; "
             "met or missed only when the whole range is on one side of the target.", "",
             "| load | trigger | requests | finished | finished/s | posted chars/s | mean chars "
             "| first text p50 / p95 / p99 | finished p50 / p95 / p99 | unanswered | refused (bot's count) "
             "| loop lag p99 (max) | gateway latency median (max) | load average before, after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in cap["runs"]:
        lag, gw = r["loop_lag_s"], r["gateway_latency_s"]
        p99, above, target = lag["p99_at_most"], lag.get("p99_above", 0.0), t["loop_lag_p99_ms"] / 1000
        lag_ok = None if p99 is None or (p99 > target > above) else p99 <= target  # unresolved within a bucket
        refused = ", ".join(f"{k} {v}" for k, v in r["refused_by_kind"].items()) or "none"
        load = "/".join(f"{x:.1f}" for x in r["load_avg_start"] or []) + ", " + "/".join(
            f"{x:.1f}" for x in r["load_avg_end"] or [])
        lines.append(
            f"| {_capacity_load(r)} | {r['trigger']} | {r['requests']} | {r['finished']} | "
            f"{_f(r['finished_per_s'], 1)} | {_f(r['posted_chars_per_s'])} | {_f(r['mean_chars'])} | "
            f"{_three(r['first_text_s'])} | {_three(r['finished_s'])} | {_pct(r['unfinished_rate'])} | {refused} | "
            f"{_ms(above).removesuffix(' ms')}-{_ms(p99)}{_mark(lag_ok)}"
            f" (≤ {_ms(lag['max_at_most'])}) | {_ms(gw['median'])} ({_ms(gw['max'])}) | {load} |")
    reasons = Counter()
    for r in cap["runs"]:
        reasons.update(r["unfinished_because"])
    if reasons:
        lines += ["", "Unanswered because: " + "; ".join(f"{n} x \"{why}\"" for why, n in reasons.most_common(6))]
    sustained, answered = cap.get("sustained_rate_per_s") or {}, cap.get("answered_rate_per_s") or {}
    for trigger, rate in sustained.items():
        lines += ["", f"Sustained ({trigger}, open loop): "
                  + (f"up to {rate:g} requests/s" if rate is not None else "not even the lowest rate measured")
                  + f" with the finished p95 at most {t['capacity_finished_p95_s']:g} s and at most "
                  f"{_pct(t['capacity_unfinished_rate'], 0)} unanswered"]
        if trigger in answered:
            most = answered[trigger]
            lines[-1] += (f"; at most {_pct(t['capacity_unfinished_rate'], 0)} unanswered (any wait) up to "
                          + (f"{most:g} requests/s." if most is not None else "no rate measured."))
        else:
            lines[-1] += "."
    return lines


def _personas_section(results: dict) -> list[str]:
    """A server's persona: how its replies read, and what many personas cost one process (bot.bench.personas)."""
    r = results.get("personas")
    if not r:
        return []
    t, many = results["targets"], r["many"]
    clean_ok = r["clean_rate"] >= t["persona_clean_rate"]
    invented_ok = r["invented_rate"] <= t["persona_invented_rate"]
    return ["", "## Personas", "",
            f"`{r['checkpoint']}` as a {r['style']} persona, {r['replies']} replies of {r['length']} characters "
            "through the bot's reply path (persona loaded on demand):", "",
            "| clean endings | invented words | alone p50 / p95 |", "|---|---|---|",
            f"| {_pct(r['clean_rate'])}{_mark(clean_ok)} | {_pct(r['invented_rate'], 2)}{_mark(invented_ok)} | "
            f"{_f(r['alone_p50_s'], 2)} / {_f(r['alone_p95_s'], 2)} s |", "",
            f"{many['personas']} personas across {many['servers']} servers in one process, each from its own "
            f"checkpoint file: resident memory {_f(many['rss_before_mb'])} MB before, {_f(many['rss_loaded_mb'])} MB "
            f"with all loaded ({_f(many['mb_per_persona'], 1)} MB each). A reply from a loaded persona "
            f"p50 {_f(many['warm_reply_p50_s'], 2)} s, p95 {_f(many['warm_reply_p95_s'], 2)} s; the first reply of "
            f"each (its load included) p50 {_f(many['first_reply_p50_s'], 2)} s; with at most {many['max_loaded']} "
            f"loaded, a reply from one that had been unloaded p50 {_f(many['cold_after_unload_p50_s'], 2)} s, p95 "
            f"{_f(many['cold_after_unload_p95_s'], 2)} s. Invented words: " + (", ".join(r["invented_examples"])
                                                                             or "none") + "."]


# The report's sections in the order it shows them; each gives its lines, none when it has no results.
SECTIONS: tuple[Callable[[dict], list[str]], ...] = (
    _header, _auto_section, _single_section, _step_section, _concurrent_section, _train_section, _fidelity_section,
    _quality_section, _grounding_section, _gpu_section, _capacity_section, _personas_section,
)


def write_report(results: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``bench.json`` and ``bench.md`` under ``out``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "bench.json", out / "bench.md"
    text = json.dumps(_finite(results), indent=1, allow_nan=False, default=_jsonable)
    atomic_write_bytes(js, (text + "\n").encode())
    atomic_write_bytes(md, markdown(results).encode())
    return js, md


def _finite(value: object) -> object:
    """The results with NaN and infinities as null, so the JSON is valid for every reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
