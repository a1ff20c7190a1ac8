"""The bench's personas section: a persona's replies scored, many personas loaded, the report says so."""

from __future__ import annotations

from pathlib import Path

from bot.bench.personas import PersonaBenchConfig, measure
from bot.bench.report import _personas_section
from bot.bench.suite import TARGETS
from corpora.voices import is_voice


def test_many_personas_are_loaded_answered_unloaded_and_reported(base_checkpoint, tmp_path):
    text = tmp_path / "grimm.txt"
    text.write_text("Once upon a time a princess sat by the well and wept. " * 20)
    cfg = PersonaBenchConfig(Path(base_checkpoint), text, "story", servers=2, per_server=2, max_loaded=1,
                             length=40, seeds=(1,), prompts=("Once upon a time",))
    got = measure(cfg, say=lambda _line: None)
    assert got["replies"] == 1 and 0.0 <= got["clean_rate"] <= 1.0
    many = got["many"]
    assert many["personas"] == 4 and many["servers"] == 2
    assert many["cold_after_unload_p50_s"] is not None  # with one loaded at most, the others were unloaded
    assert not is_voice("g1-bench0")  # the bench's personas are gone from the process afterwards
    report = "\n".join(_personas_section({"personas": got, "targets": TARGETS}))
    assert "## Personas" in report and "4 personas across 2 servers" in report
