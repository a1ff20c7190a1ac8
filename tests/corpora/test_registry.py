"""Finding corpora: data folder, shared folder, clear errors; train and eval by corpus name."""

from __future__ import annotations

import json

import pytest

from bot.cli import main
from corpora import registry
from corpora.paths import PROJECT_ROOT
from corpora.registry import CORPORA, CorpusMissing, CorpusUnverified, find_corpus_file, load_corpus
from corpora.style import ReplyStyle
from model.train import TrainConfig
from tests.helpers import register_mini


def test_every_corpus_says_where_it_comes_from_and_how_it_is_used():
    for name, c in CORPORA.items():
        assert c.name == name and c.title and c.source and c.description and c.cleaning
        assert c.url.startswith("https://") and c.sha256 and len(c.sha256) == 64
        assert 0 < c.val_fraction < 1 and c.stop and all(c.stop)
        assert c.prime(c.example_prompt).strip()


def test_each_corpus_carries_its_reply_style():
    assert CORPORA["faq"].style == ReplyStyle(layout="question", prompt_required=True, prompt_label="question",
                                              source_label="From the FAQ")
    assert CORPORA["tale"].style == CORPORA["novel"].style == ReplyStyle(layout="prose", prompt_label="prompt")


def test_only_the_faq_is_grounded_and_every_corpus_says_how_many_candidates_it_draws():
    assert [name for name, c in CORPORA.items() if c.grounded] == ["faq"]  # no verbatim copying of the books
    assert all(c.best_of >= 1 for c in CORPORA.values())


def test_a_corpus_holds_out_what_training_holds_out_unless_it_says_otherwise():
    assert all(c.val_fraction == TrainConfig().val_fraction for c in CORPORA.values())


def test_data_dir_comes_from_the_environment_else_the_project(monkeypatch, tmp_path):
    monkeypatch.delenv(registry.DATA_DIR_ENV, raising=False)
    assert registry.data_dir() == PROJECT_ROOT / "data"
    monkeypatch.setenv(registry.DATA_DIR_ENV, str(tmp_path))
    assert registry.search_dirs()[0] == tmp_path
    assert registry.search_dirs()[1] == registry.SHARED_DIR


def test_data_folder_wins_over_the_shared_folder(monkeypatch, tmp_path):
    mini = register_mini(monkeypatch, tmp_path, write=False)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / mini.corpus.filename).write_bytes(mini.raw)
    monkeypatch.setattr(registry, "SHARED_DIR", shared)
    assert find_corpus_file("mini") == shared / mini.corpus.filename
    mini.path.write_bytes(mini.raw)
    assert find_corpus_file("mini") == mini.path


def test_missing_corpus_says_where_it_looked_and_how_to_get_it(monkeypatch, tmp_path):
    mini = register_mini(monkeypatch, tmp_path, write=False)
    with pytest.raises(CorpusMissing) as err:
        load_corpus("mini")
    msg = str(err.value)
    assert "charbot corpora fetch mini" in msg and str(mini.data_dir) in msg and registry.DATA_DIR_ENV in msg


def test_a_wrong_file_under_the_corpus_name_is_refused(monkeypatch, tmp_path):
    mini = register_mini(monkeypatch, tmp_path)
    mini.path.write_bytes(mini.raw[:-20])
    with pytest.raises(CorpusUnverified, match="not a known edition.*--force"):
        load_corpus("mini")


def test_load_corpus_cleans_and_records_the_raw_sha256(monkeypatch, tmp_path):
    mini = register_mini(monkeypatch, tmp_path)
    data = load_corpus("mini")
    assert data.text == mini.raw.decode("ascii").replace("\r\n", "\n")
    assert data.source_sha256 == mini.corpus.sha256
    assert data.name == "mini"


def test_unknown_corpus_names_the_known_ones():
    with pytest.raises(KeyError, match="tale"):
        load_corpus("poems")


def test_corpora_list_reports_presence_and_checksums(monkeypatch, tmp_path, capsys):
    mini = register_mini(monkeypatch, tmp_path)
    register_mini(monkeypatch, tmp_path, name="gone", write=False)
    register_mini(monkeypatch, tmp_path, name="bad", seed=1)
    (mini.data_dir / "bad.txt").write_text("not the text\n")
    assert main(["corpora", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["corpora"]}
    assert rows["mini"]["present"] and rows["mini"]["verified"] and rows["mini"]["bytes"] == len(mini.raw)
    assert rows["mini"]["path"] == str(mini.path) and rows["mini"]["matches"] == "mirror"
    assert not rows["gone"]["present"] and rows["gone"]["path"] is None
    assert rows["bad"]["present"] and not rows["bad"]["verified"]
    assert main(["corpora", "list"]) == 0
    out = capsys.readouterr().out
    assert "charbot corpora fetch gone" in out and "NOT a known edition" in out and "sha256 OK" in out


def test_train_and_eval_by_corpus_name(monkeypatch, tmp_path, capsys):
    register_mini(monkeypatch, tmp_path)
    out = tmp_path / "run.safetensors"
    argv = ["train", "mini", "--out", str(out), "--steps", "4", "--hidden", "16", "--layers", "1", "--embed", "8",
            "--batch-seqs", "4", "--batch-steps", "16", "--eval-every", "2", "--device", "cpu", "--json"]
    assert main(argv) == 0
    trained = json.loads(capsys.readouterr().out)
    assert main(["eval", str(out), "mini", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["split"] == "val" and ev["text"] == "mini"
    assert ev["loss_nats"] == pytest.approx(trained["val_loss_nats"], abs=1e-6)


def test_train_by_name_of_a_missing_corpus_is_one_clear_line(monkeypatch, tmp_path, capsys):
    register_mini(monkeypatch, tmp_path, write=False)
    assert main(["train", "mini", "--out", str(tmp_path / "x.safetensors"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "charbot corpora fetch mini" in err
    assert not (tmp_path / "x.safetensors").exists()

