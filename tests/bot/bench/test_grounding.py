"""``charbot bench --only grounding``: the served passage index scored on the paraphrase set, against the target."""

from __future__ import annotations

import json

from bot.bench import report
from bot.cli import main
from corpora.registry import CorpusMissing, load_corpus


def _row(hits: int, headings: int, mask: bool) -> dict:
    return {"passages": 262, "build_s": 0.5, "paraphrase_hits": hits, "paraphrases": 32,
            "paraphrase_hit_at_1": hits / 32, "heading_hits": headings, "headings": 16,
            "heading_hit_at_1": headings / 16, "mask_question_answered": mask, "mask_question_quoted": "",
            "ms_per_search": 1.0, "missed": []}


def test_the_report_sets_the_index_against_the_target():
    lines = "\n".join(report._grounding_section({"targets": {"grounding_hit_at_1": 0.9},
                                                 "grounding": {"bm25": _row(1, 12, False)}}))
    assert "## Grounding" in lines and "| BM25 (served) | 1/32 (3%) (missed) | 12/16 | missed |" in lines
    assert report._grounding_section({"grounding": {"skipped": "no faq"}})[-1] == "Skipped: no faq."


def test_the_bench_section_scores_the_served_index(tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--only", "grounding", "--out", str(out), "--json"]) == 0
    g = json.loads((out / "bench.json").read_text())["grounding"]
    md = (out / "bench.md").read_text()
    try:
        load_corpus("faq")
    except CorpusMissing:
        assert "skipped" in g and "## Grounding\n\nSkipped: " in md
        return
    row = g["bm25"]
    assert row["passages"] > 100 and row["paraphrases"] >= 20
    assert len(row["missed"]) == row["paraphrases"] - row["paraphrase_hits"]
    assert "| BM25 (served) |" in md
