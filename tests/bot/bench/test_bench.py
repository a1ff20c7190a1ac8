"""``charbot bench --quick`` runs every section at a tiny size and writes valid JSON and Markdown."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bot.bench import classic, report
from bot.bench.classic import BaselineError, find_script, run_classic
from bot.bench.stats import percentile
from bot.bench.suite import BenchConfig, load_models, paths_here
from bot.cli import main
from corpora.paths import PROJECT_ROOT
from model.device import bf16_matmul_supported, cpu_threads
from model.precision import label

# what the engine runs here: each native precision, and the fused step's where its kernel builds
NATIVE = list(paths_here())


def test_percentile_interpolates():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    assert math.isnan(percentile([], 50))


FAKE_CLASSIC = """
import json, sys
what = sys.argv[1]
print("some chatter first")
print(json.dumps({"what": "classic-" + what, "chars_per_s": 100.0 if what == "sample" else 1000.0,
                  "ms_per_char": 10.0, "argv": sys.argv[1:]}))
"""


def test_classic_baseline_is_the_given_script_else_the_one_beside_the_project(tmp_path, monkeypatch):
    assert classic.CLASSIC_SCRIPT.relative_to(PROJECT_ROOT.parent) == Path("shared/baselines/classic_charrnn.py")
    given = tmp_path / "mine.py"
    assert find_script(given) is None
    given.write_text("")
    assert find_script(given) == given
    default = tmp_path / "shared" / "baselines" / "classic_charrnn.py"
    monkeypatch.setattr(classic, "CLASSIC_SCRIPT", default)
    assert find_script() is None
    default.parent.mkdir(parents=True)
    default.write_text("")
    assert find_script() == default


def test_classic_failure_is_reported(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nprint('no json here')\nsys.exit(3)\n")
    with pytest.raises(BaselineError, match="exit 3"):
        run_classic(bad, ["sample"], timeout_s=30)
    bad.write_text("print('no json here')\n")
    with pytest.raises(BaselineError, match="no JSON"):
        run_classic(bad, ["sample"], timeout_s=30)


def test_quick_bench_writes_json_and_markdown(tmp_path, repeating_text, capsys):
    """Every section at a tiny size; the classic side is a stand-in script with known speeds
    (the real one takes seconds just to import torch) so the ratios can be checked exactly."""
    text = tmp_path / "text.txt"
    text.write_text(repeating_text * 3)
    classic = tmp_path / "classic.py"
    classic.write_text(FAKE_CLASSIC)
    out = tmp_path / "bench"
    code = main(["bench", "--quick", "--models", "--size", "1x16", "--chars", "30", "--train-seconds", "0.5",
                 "--train-text", str(text), "--out", str(out), "--threads", "1", "--classic", str(classic), "--json",
                 "--only", "single", "concurrent", "train", "fidelity", "quality"])  # GPU rows: test_gpu_cuda.py
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads((out / "bench.json").read_text())
    assert printed == {"json": str(out / "bench.json"), "markdown": str(out / "bench.md"), "errors": {}}
    assert results["errors"] == {}
    (single,) = results["single"]
    assert single["size"] == "1x16"
    for precision in NATIVE:  # every precision the engine has here, int8 included where oneDNN has it
        assert single[precision]["chars_per_s"] > 0
    assert {r["precision"] for r in results["concurrent"]} == set(NATIVE)
    (auto,) = results["auto"]  # what auto picked, and why
    assert label(auto["precision"], auto["step"]) in NATIVE and auto["reason"]
    assert [m["precision"] for m in auto["measured"]] == (NATIVE if len(NATIVE) > 1 else [])
    assert {r["replies"] for r in results["concurrent"]} == {1, 4}
    step = single["step"]  # each path's step against the weight-traffic floor, and where a character goes
    assert [p["path"] for p in step["paths"]] == NATIVE and step["errors"] == {}
    for p in step["paths"]:
        assert p["weight_bytes"] > 0 and p["floor"]["us"] > 0 and p["floor_ratio"] > 0
        assert set(p["step_us"]) == {"1", "32"} and p["breakdown"]["calls"]
        if "fused" in p["path"] and cpu_threads("boost") > 1:  # a crowd's step shared among the cores
            assert p["shared_us"] > 0 and p["shared_threads"] == cpu_threads("boost")
        else:
            assert p["shared_us"] is None
    assert all(r["aggregate_chars_per_s"] > 0 and r["loop_lag_p99_ms"] >= 0 for r in results["concurrent"])
    assert results["train"][0]["ours"]["chars_per_s"] > 0
    fid = results["fidelity"][0]
    assert fid["kl"][0]["kl_max"] < 1e-4 and fid["agreement"]["engine_equals_generate"] == 2
    assert [k["precision"] for k in fid["kl"]] == NATIVE and fid["kl"][0]["meets_bounds"]
    assert single["fp32"]["vs_classic"] == pytest.approx(single["fp32"]["chars_per_s"] / 100.0)
    assert single["classic"]["argv"] == ["sample", "--hidden", "16", "--layers", "1", "--vocab", "96", "--chars", "30"]
    train = results["train"][0]
    assert train["vs_classic"] == pytest.approx(train["ours"]["chars_per_s"] / 1000.0)
    assert train["classic"]["argv"][:2] == ["train", "--text"]
    assert train["ours"]["precision"] == ("bf16" if bf16_matmul_supported() else "fp32")
    if bf16_matmul_supported():  # what the default precision is worth, measured beside it
        assert train["ours_fp32"]["precision"] == "fp32" and train["fp32_vs_classic"] > 0
    md = (out / "bench.md").read_text()
    assert " - CPU: " in md.splitlines()[2] and results["machine_start"]["cpu"]["model"]
    for heading in ("## Auto precision", "## Single reply", "## Step", "1 row / floor", "## Concurrent replies",
                    "## Training", "## Fidelity",
                    "## Reply quality", "Invented words at the default precision beside fp32"):
        assert heading in md
    assert {(r["corpus"], r["n"]) for r in results["quality"]} == {
        (c, n) for c in ("tale", "novel", "faq") for n in ("1", "default")}
    for r in results["quality"]:  # the default precision's invented-word rate beside fp32's
        assert r["reference"]["precision"] == "fp32" and 0 <= r["reference"]["invented_rate"] <= 1
        assert r["invented_vs_reference_pp"] == pytest.approx(100 * (r["invented_rate"]
                                                                     - r["reference"]["invented_rate"]))
    assert "| reference 1x16 | 1x16 |" in md


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the note on machines without CUDA")
def test_without_a_gpu_the_gpu_section_says_so(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--models", "--size", "1x8", "--only", "gpu", "--out", str(out)]) == 0
    assert json.loads((out / "bench.json").read_text())["gpu"] == {"skipped": "no CUDA GPU here"}
    assert "## GPU\n\nSkipped: no CUDA GPU here." in (out / "bench.md").read_text()


def test_bench_refuses_bad_options(tmp_path, capsys):
    assert main(["bench", "--size", "2by512", "--out", str(tmp_path)]) == 2
    assert "LAYERSxHIDDEN" in capsys.readouterr().err
    assert main(["bench", "--train-text", str(tmp_path / "missing.txt"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_bench_measures_the_shipped_checkpoints_of_the_folder_it_is_given(tiny_checkpoint_dir):
    models = load_models(BenchConfig(checkpoint_dir=tiny_checkpoint_dir, sizes=[]))
    assert [(m.name, m.source) for m in models] == [
        (name, str(tiny_checkpoint_dir / f"{name}.safetensors")) for name in ("faq", "novel", "tale")]


class _Configured(Exception):
    """Raised in place of the run, carrying the configuration the command built."""


def test_bench_reads_the_checkpoint_folder_from_the_env_file(tmp_path, monkeypatch):
    monkeypatch.delenv("CHARBOT_CHECKPOINT_DIR", raising=False)
    env = tmp_path / "bench.env"
    env.write_text(f"CHARBOT_CHECKPOINT_DIR={tmp_path / 'weights'}\n")

    def configured(cfg: BenchConfig, say: object) -> None:
        raise _Configured(cfg)

    monkeypatch.setattr("bot.bench.suite.run_bench", configured)
    with pytest.raises(_Configured) as got:
        main(["bench", "--env-file", str(env), "--out", str(tmp_path / "bench")])
    assert got.value.args[0].checkpoint_dir == tmp_path / "weights"


def test_quality_measures_what_a_reader_notices_per_corpus_and_candidate_count(tiny_checkpoint_dir):
    from bot.bench.quality import PROMPTS, QualityConfig, measure
    from bot.bench.report import markdown
    from bot.bench.suite import TARGETS

    assert all(len(p) >= 10 for p in PROMPTS.values())  # at least 10 prompts per corpus
    rows = measure(QualityConfig(checkpoint_dir=tiny_checkpoint_dir, quick=True), say=lambda line: None)
    assert [(r["corpus"], r["n"]) for r in rows] == [(c, n) for c in ("tale", "novel", "faq") for n in ("1", "default")]
    for r in rows:
        assert r["replies"] == 2 and 0 <= r["invented_rate"] <= 1 and 0 <= r["clean_rate"] <= 1
        assert r["alone_p95_s"] >= r["alone_p50_s"] > 0 and r["crowd"]["replies"] == 4
        assert r["crowd"]["posted_chars_per_s"] >= 0 and r["crowd"]["loop_lag_p99_ms"] >= 0
        assert r["mean_candidates"] == (1 if r["n"] == "1" else 8 if r["corpus"] != "faq" else 16)
    faq = [r for r in rows if r["corpus"] == "faq"]
    assert all("topic_rate" in r and "source_rate" in r for r in faq)
    md = markdown({"targets": TARGETS, "machine_start": {"when": "now", "torch": "x", "cpu_count": 2, "cuda": None},
                   "config": {"threads": 1, "quick": True}, "quality": rows})
    assert "## Reply quality" in md and "| faq | default | 2 |" in md


def test_the_report_says_what_auto_picked_also_where_only_fp32_runs():
    from bot.bench.report import markdown
    from bot.bench.suite import TARGETS

    base = {"targets": TARGETS, "machine_start": {"when": "now", "torch": "x", "cpu_count": 2, "cuda": None},
            "config": {"threads": 1, "quick": True}}
    only = {"model": "m", "size": "1x8", "precision": "fp32", "reason": "only fp32 runs natively here",
            "measured": [], "seconds": 0.0}
    assert "| m | fp32 | - | - | - | - | - | - | only fp32 runs natively here |" in markdown({**base, "auto": [only]})
    failed = {**only, "precision": "bf16", "reason": "the fastest within the bounds", "measured": [
        {"precision": "bf16", "fidelity": {"kl_mean": 5e-6, "top1_agreement": 0.999},
         "speed": {"lone_ms": 0.2, "crowd_ms": 0.8, "crowd": 32, "score_ms": 0.4}, "error": None},
        {"precision": "int8", "fidelity": None, "speed": None, "error": "RuntimeError: no kernel"}]}
    md = markdown({**base, "auto": [failed]})
    assert "| m | **bf16** | bf16 | 5.0e-06 | 99.90% | 0.200 ms | 0.800 ms (32) | 0.400 ms |  |" in md
    assert "| m |  | int8 | - | - | - | - (-) | - | RuntimeError: no kernel |" in md


def test_the_invented_word_comparison_is_judged_only_when_clear_of_the_noise():
    """A difference within the noise of the 0.1-point limit (one-sided 95%) is called unresolved, not met or missed."""
    def row(p: float, q: float, words: int) -> dict:
        return {"invented_rate": p, "words": words, "reference": {"invented_rate": q, "words": words}}

    small, large = row(0.0124, 0.0099, 2_300), row(0.0232, 0.0231, 184_000)
    se_small, se_large = report.difference_se_pp(small), report.difference_se_pp(large)
    assert 0.25 < se_small < 0.35 and 0.03 < se_large < 0.06  # the sampling noise of ~2,300 and ~184,000 words
    assert report.difference_verdict(0.25, se_small, 0.1) == " (unresolved: more --quality-seeds)"
    assert report.difference_verdict(0.01, se_large, 0.1) == " (met)"
    assert report.difference_verdict(0.30, se_large, 0.1) == " (missed)"
    assert report.difference_verdict(0.0, 0.0, None) == ""


def test_quality_seeds_must_be_positive(tmp_path, capsys):
    assert main(["bench", "--quality-seeds", "0", "--out", str(tmp_path)]) == 2
    assert "--quality-seeds must be at least 1" in capsys.readouterr().err
