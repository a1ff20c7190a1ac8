"""The model card is made from the checkpoints alone: metadata, measured losses, seeded samples, experiments."""

from __future__ import annotations

import json
import re

import pytest

from bot.cli import main
from corpora import registry
from corpora.card import BASE_MAX_GAP, CardError, Row, base_report, build_card
from corpora.heldout import heldout_codes, measure_heldout
from corpora.release import ship
from model.checkpoint import load_checkpoint
from model.evaluate import bits, evaluate_loss
from tests.helpers import register_base, register_mini, train_tiny


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """Made-up corpora only: 'mini' shipped from scratch, 'sequel' fine-tuned from it, 'later' not shipped.

    Trained once for the module (a few seconds); tests must leave the files as they found them.
    """
    tmp_path = tmp_path_factory.mktemp("card")
    registered = dict(registry.CORPORA)
    registry.CORPORA.clear()  # in place: other modules hold this very dict
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            register_mini(monkeypatch, tmp_path, name="mini", seed=0)
            register_mini(monkeypatch, tmp_path, name="sequel", seed=1)
            register_mini(monkeypatch, tmp_path, name="later", seed=2)
            ckdir = tmp_path / "checkpoints"
            monkeypatch.setenv("CHARBOT_CHECKPOINT_DIR", str(ckdir))
            runs = tmp_path / "runs"
            base = train_tiny("mini", runs / "mini.safetensors")
            tuned = train_tiny("sequel", runs / "sequel-tuned.safetensors", steps=3, init_from=base)
            scratch = train_tiny("sequel", runs / "sequel-scratch.safetensors", steps=3)
            ship(base, "mini")
            ship(tuned, "sequel")
            yield {"dir": ckdir, "base": base, "tuned": tuned, "scratch": scratch, "tmp": tmp_path}
    finally:  # back in their own order: /help and refusals list the corpora in it
        registry.CORPORA.clear()
        registry.CORPORA.update(registered)


def test_card_reports_each_shipped_checkpoint_from_its_metadata(shipped):
    card = build_card(shipped["dir"], length=40)
    for name in ("mini", "sequel"):
        ck = load_checkpoint(shipped["dir"] / f"{name}.safetensors")
        codes, _ = heldout_codes(ck.info, name)
        loss = evaluate_loss(ck.model, codes)
        section = card.split(f"## {name}:")[1].split("\n## ")[0]
        assert f"{loss:.4f} nats/char = {bits(loss):.4f} bits/char" in section
        assert "reproduced within 0.01" in section
        assert f"{ck.model.n_params():,} parameters" in section
        assert "2-layer LSTM, hidden 24, embedding 8" in section
        assert f"{ck.info['train_chars']:,} characters" in section
        assert f"{ck.info['chars_seen']:,} characters seen" in section
        assert f"on {ck.info['device']}" in section
        assert f"computing in {ck.info['precision']}" in section
        assert "bfloat16 weights" in section
    assert "trained from scratch" in card.split("## mini:")[1].split("\n## ")[0]
    assert f"fine-tuned from {shipped['base']}" in card.split("## sequel:")[1]
    assert "Not shipped yet" in card.split("## later:")[1]


def test_card_follows_a_continued_run_back_to_scratch_and_adds_up_its_cost(shipped):
    again = train_tiny("sequel", shipped["tmp"] / "runs" / "sequel-again.safetensors", steps=3,
                       init_from=shipped["tuned"])
    experiments = shipped["tmp"] / "continued.json"
    experiments.write_text(json.dumps([{"label": "sequel continued", "checkpoint": str(again)}]))
    card = build_card(shipped["dir"], experiments=experiments, length=40)
    row = next(line for line in card.splitlines() if line.startswith("| sequel continued"))
    assert (f"continued from {shipped['tuned']} (corpus sequel, held-out loss" in row
            and f"itself fine-tuned from {shipped['base']} (corpus mini" in row
            and row.endswith("itself trained from scratch |"))

    section = card.split("## sequel:")[1].split("\n## ")[0]  # shipped sequel: one fine-tune of mini
    infos = [load_checkpoint(shipped["dir"] / f"{name}.safetensors").info for name in ("sequel", "mini")]
    chars = sum(info["chars_seen"] for info in infos)
    assert "- In all, with the checkpoints it grew from: " in section
    assert f"of training, {chars:,} characters seen." in section
    assert "In all" not in card.split("## mini:")[1].split("\n## ")[0]  # trained from scratch: nothing to add


def test_card_has_three_seeded_samples_per_checkpoint_and_they_repeat(shipped):
    card = build_card(shipped["dir"], seed=7, length=60)
    again = build_card(shipped["dir"], seed=7, length=60)
    strip_date = re.compile(r" on \S+ from the checkpoints")
    assert strip_date.sub("", card) == strip_date.sub("", again)
    section = card.split("## mini:")[1].split("\n## ")[0]
    assert re.findall(r"^Temperature (\S+) \(ended by", section, re.MULTILINE) == ["0.5", "0.8", "1.0"]
    assert 'seed 7, prime "The fox"' in section
    other = build_card(shipped["dir"], seed=8, length=60)
    assert other.split("## mini:")[1].split("Temperature 0.5")[1] != section.split("Temperature 0.5")[1]


def test_card_reports_targets_and_whether_they_are_met(shipped):
    ck = load_checkpoint(shipped["dir"] / "mini.safetensors")
    bpc = ck.info["val_bpc"]
    card = build_card(shipped["dir"], length=40, targets={"mini": bpc + 0.5, "sequel": 0.1})
    assert "Target: <= " in card
    assert card.split("## mini:")[1].split("\n## ")[0].count("met: yes") == 1
    assert card.split("## sequel:")[1].split("\n## ")[0].count("met: no") == 1


def test_card_adds_experiment_rows_measured_or_reported(shipped):
    experiments = shipped["tmp"] / "experiments.json"
    experiments.write_text(json.dumps({"experiments": [
        {"label": "sequel from scratch", "checkpoint": str(shipped["scratch"]), "note": "same steps, no parent"},
        {"label": "sequel fine-tuned", "checkpoint": str(shipped["tuned"])},
        {"label": "classic notebook", "corpus": "sequel", "val_loss_nats": 3.5, "train_seconds": 60},
    ]}))
    card = build_card(shipped["dir"], experiments=experiments, length=40)
    table = card.split("## Experiments")[1]
    scratch = load_checkpoint(shipped["scratch"])
    loss = evaluate_loss(scratch.model, heldout_codes(scratch.info, "sequel")[0])
    row = next(line for line in table.splitlines() if line.startswith("| sequel from scratch"))
    assert f"| {loss:.4f} |" in row and "trained from scratch" in row
    row = next(line for line in table.splitlines() if line.startswith("| sequel fine-tuned"))
    assert "fine-tuned from" in row
    row = next(line for line in table.splitlines() if line.startswith("| classic notebook"))
    assert "3.5000 (reported)" in row and "1.0 min" in row
    assert "same steps, no parent" in table


@pytest.mark.parametrize("content,problem", [
    ("not json", "not valid JSON"),
    ('{"rows": []}', "expected a list"),
    ('[{"corpus": "sequel"}]', "give \\\"checkpoint\\\""),
    ('[{"corpus": "poems", "val_loss_nats": 1}]', "unknown corpus 'poems'"),
    ('[{"corpus": "sequel", "val_loss_nats": "low"}]', "must be a finite number"),
])
def test_malformed_experiments_are_named(shipped, content, problem):
    path = shipped["tmp"] / "bad.json"
    path.write_text(content)
    with pytest.raises(CardError, match=problem):
        build_card(shipped["dir"], experiments=path)


def test_card_without_any_shipped_checkpoint_says_how_to_ship(tmp_path, monkeypatch):
    register_mini(monkeypatch, tmp_path)
    with pytest.raises(CardError, match="charbot ship"):
        build_card(tmp_path / "empty")


def test_card_falls_back_to_the_recorded_loss_when_the_corpus_is_absent(shipped):
    text = shipped["tmp"] / "data" / "sequel.txt"
    hidden = text.rename(text.with_suffix(".away"))
    try:
        card = build_card(shipped["dir"], length=40)
    finally:
        hidden.rename(text)
    section = card.split("## sequel:")[1]
    recorded = load_checkpoint(shipped["dir"] / "sequel.safetensors").info["val_loss_nats"]
    assert f"{recorded:.4f} nats/char" in section and "not re-measured" in section


def test_card_command_writes_model_card_md(shipped, capsys):
    out = shipped["dir"] / "MODEL_CARD.md"
    assert main(["card", "--target", "mini=9", "--length", "40"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    assert text.startswith("# charbot model card") and "`charbot card --target mini=9 --length 40`" in text
    assert main(["card", "--target", "mini"]) == 2
    assert "NAME=BITS_PER_CHAR" in capsys.readouterr().err


def test_card_command_reads_the_checkpoint_folder_from_the_env_file(shipped, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CHARBOT_CHECKPOINT_DIR")
    env = tmp_path / "settings.env"
    env.write_text(f"CHARBOT_CHECKPOINT_DIR={shipped['dir']}\n")
    assert main(["card", "--env-file", str(env), "--length", "20", "--out", "-"]) == 0
    card = capsys.readouterr().out
    assert f"from the checkpoints in `{shipped['dir']}`" in card and "## mini:" in card and "Not shipped yet" in card
    assert f"`charbot card --env-file {env} --length 20`" in card


def test_card_quotes_bench_reports_as_a_speed_section(shipped, tmp_path, capsys):
    report = tmp_path / "bench.md"
    report.write_text("# charbot bench\n\nsome GPU - quick run\n\n## GPU\n\n"
                      "| model | ms/char |\n|---|---|\n| x | 0.08 |\n")
    out = tmp_path / "card.md"
    assert main(["card", "--length", "20", "--bench", str(report), "--out", str(out)]) == 0
    text = out.read_text()
    assert f"--bench {report}" in text.splitlines()[2]
    speed = text.split("## Speed (charbot bench)", 1)[1]
    assert "some GPU - quick run" in speed and "\n#### GPU\n" in speed and "| x | 0.08 |" in speed
    report.write_text("# Something else\n")
    assert main(["card", "--bench", str(report), "--out", str(out)]) == 2
    assert "not a `charbot bench` report" in capsys.readouterr().err
    assert main(["card", "--bench", str(tmp_path / "none.md"), "--out", str(out)]) == 2
    assert "no such bench report" in capsys.readouterr().err


@pytest.fixture(scope="module")
def shipped_base(tmp_path_factory):
    """Made-up tale and novel shipped from scratch, and the base trained on both; faq not shipped."""
    tmp_path = tmp_path_factory.mktemp("card-base")
    registered = dict(registry.CORPORA)
    registry.CORPORA.clear()
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            register_base(monkeypatch, tmp_path)
            ckdir = tmp_path / "checkpoints"
            monkeypatch.setenv("CHARBOT_CHECKPOINT_DIR", str(ckdir))
            runs = tmp_path / "runs"
            for name in ("tale", "novel"):
                ship(train_tiny(name, runs / f"{name}.safetensors", steps=9), name)
            base = ship(train_tiny("base", runs / "base.safetensors", steps=9), "base").path
            yield {"dir": ckdir, "base": base, "tmp": tmp_path}
    finally:
        registry.CORPORA.clear()
        registry.CORPORA.update(registered)


def test_card_gives_the_base_its_mixture_loss_and_each_parts_next_to_the_parts_own(shipped_base):
    card = build_card(shipped_base["dir"], length=30)
    base = load_checkpoint(shipped_base["base"])
    mixture = measure_heldout(base, "base").loss_nats
    row = next(line for line in card.splitlines() if line.startswith("| base |"))
    assert f"| {mixture:.4f} | {bits(mixture):.4f} |" in row and f"within {BASE_MAX_GAP} nats/char" in row
    section = card.split("## base: the general base model (tale + novel)")[1]
    assert f"{mixture:.4f} nats/char = {bits(mixture):.4f} bits/char" in section
    assert "reproduced within 0.01" in section and "`grimms.txt` is no part of it" in section
    gaps = []
    for part in ("tale", "novel"):
        own = load_checkpoint(shipped_base["dir"] / f"{part}.safetensors")
        own_loss, base_loss = measure_heldout(own, part).loss_nats, measure_heldout(base, part).loss_nats
        gaps.append(base_loss - own_loss)
        line = next(line for line in section.splitlines() if line.startswith(f"| {part} |"))
        assert line == (f"| {part} | {base_loss:.4f} | {bits(base_loss):.4f} | `{part}.safetensors` | "
                        f"{own_loss:.4f} | {base_loss - own_loss:+.4f} | "
                        f"{'yes' if base_loss - own_loss <= BASE_MAX_GAP else 'no'} |")
        assert f"Samples framed as {part}: seed 1234" in section
    assert f"met: {'yes' if max(gaps) <= BASE_MAX_GAP else 'no'}." in section


def test_the_base_is_measured_against_what_is_shipped_and_the_card_builds_without_it(shipped_base):
    corpus_rows = [Row("tale", "tale", "tale.safetensors", {"val_fraction": 0.1}, val_loss_nats=1.0)]
    report = base_report(shipped_base["base"], corpus_rows, samples=False)
    tale, novel = report.parts
    assert tale.gap == tale.base_loss - 1.0 and tale.met == (tale.gap <= BASE_MAX_GAP)
    assert novel.own is None and novel.gap is None and report.met is None  # novel's own is not shipped
    other = Row("tale", "tale", "tale.safetensors", {"val_fraction": 0.2}, val_loss_nats=1.0)
    report = base_report(shipped_base["base"], [other], samples=False)
    assert report.parts[0].gap is None and "other characters" in report.parts[0].note
    away = shipped_base["base"].rename(shipped_base["base"].with_suffix(".away"))
    try:
        card = build_card(shipped_base["dir"], length=20)
    finally:
        away.rename(shipped_base["base"])
    assert "## base" not in card and "| base |" not in card and "## tale:" in card


def test_a_base_trained_on_other_text_is_refused(shipped_base, tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "base.safetensors").write_bytes((shipped_base["dir"] / "tale.safetensors").read_bytes())
    with pytest.raises(CardError, match="base: .* not trained on mixture 'base'"):
        build_card(folder, length=20)
