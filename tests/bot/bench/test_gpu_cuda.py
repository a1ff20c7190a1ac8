"""``charbot bench --only gpu`` on a GPU: every row of the GPU section, at a tiny size."""

from __future__ import annotations

import json

import pytest

from bot.cli import main
from tests.bot.bench.test_bench import FAKE_CLASSIC
from tests.helpers import made_up_text

pytestmark = pytest.mark.cuda


def test_the_gpu_section_measures_every_row(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(made_up_text(sentences=12_000))  # enough for a GPU-sized batch
    classic = tmp_path / "classic.py"
    classic.write_text(FAKE_CLASSIC)
    out = tmp_path / "bench"
    code = main(["bench", "--quick", "--models", "--size", "1x16", "--chars", "30", "--train-seconds", "1",
                 "--train-text", str(text), "--out", str(out), "--classic", str(classic), "--only", "gpu"])
    results = json.loads((out / "bench.json").read_text())
    assert code == 0, results["errors"]
    g = results["gpu"]
    assert g["device"]["name"] and g["device"]["memory_gib"] > 0
    (single,) = g["single"]
    for way in ("graphs", "no_graphs", "nn_lstm", "cpu_engine"):
        assert single[way]["chars_per_s"] > 0, way
    assert 0 <= single["step"]["overhead_share_of_graph_step"] < 1
    assert {r["replies"] for r in g["concurrent"]} == {1, 64}
    (train,) = g["train"]
    assert train["ours"]["chars_per_s"] > 0 and train["ours"]["device"] == "cuda"
    assert train["vs_classic"] == pytest.approx(train["ours"]["chars_per_s"] / 1000.0)
    assert "## GPU" in (out / "bench.md").read_text()
