"""The ``charbot`` command as a user meets it: help everywhere, JSON that parses, one-line errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys

import pytest

from bot.cli import build_parser, main
from model.checkpoint import load_checkpoint
from model.network import ModelConfig
from model.train import TrainConfig
from tests.helpers import eventually

TINY = ["--hidden", "16", "--layers", "1", "--embed", "8", "--dropout", "0", "--batch-seqs", "4",
        "--batch-steps", "16", "--eval-every", "5", "--lr", "0.01", "--warmup", "2", "--quiet"]


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command, e.g. ("train",), ("corpora", "list")."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths.extend(command_paths(sub, (*prefix, name)))
    return paths


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "cats.txt"
    path.write_text("the cat sat on the mat. \u201cMeow,\u201d it said.\n" * 120, encoding="utf-8")
    return path


@pytest.fixture
def trained(tmp_path, text_file, capsys):
    out = tmp_path / "cats.safetensors"
    code, stdout, _ = run_main(capsys, "train", str(text_file), "--out", str(out), "--steps", "10", "--json", *TINY)
    assert code == 0
    return out, json.loads(stdout)


def test_top_level_help(capsys):
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    for name in ("train", "eval", "sample"):
        assert name in out


def test_every_sub_command_has_help(capsys):
    paths = command_paths(build_parser())
    assert {("train",), ("eval",), ("sample",)} <= set(paths)
    for path in paths:
        code, out, err = run_main(capsys, *path, "--help")
        assert code == 0, (path, err)
        assert out.startswith("usage: charbot " + " ".join(path)), path


@pytest.mark.slow
def test_installed_entry_point_help():
    done = subprocess.run([sys.executable, "-m", "bot", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: charbot" in done.stdout


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("charbot")
    except PackageNotFoundError:  # a source tree on PYTHONPATH, as on a GPU machine (make gpu-check)
        installed = "0+unknown"
    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out.strip() == f"charbot {installed}"


def test_cli_defaults_match_the_library_defaults():
    """``charbot train`` with no options trains exactly what TrainConfig()/ModelConfig() describe."""
    args = build_parser().parse_args(["train", "x.txt", "--out", "x.safetensors"])
    t, m = TrainConfig(), ModelConfig()
    cli = {"n_seqs": args.batch_seqs, "n_steps": args.batch_steps, "lr": args.lr, "warmup_steps": args.warmup,
           "weight_decay": args.weight_decay, "grad_clip": args.clip, "val_fraction": args.val_fraction,
           "eval_every": args.eval_every, "patience": args.patience, "seed": args.seed, "device": args.device,
           "threads": args.threads, "precision": args.precision, "weight_drop": args.weight_drop,
           "embed_dropout": args.embed_dropout, "input_dropout": args.input_dropout,
           "layer_dropout": args.layer_dropout, "output_dropout": args.output_dropout}
    assert cli == {k: getattr(t, k) for k in cli}
    assert (args.hidden, args.layers, args.embed, args.dropout) == (m.hidden_size, m.n_layers, m.embed_size, m.dropout)
    assert (args.steps, args.epochs, args.minutes) == (None, None, None)  # so the default budget is one epoch
    assert {f.name for f in dataclasses.fields(TrainConfig)} - set(cli) == {
        "min_lr_ratio", "eval_max_chars", "max_steps", "epochs", "minutes", "log_every"}


def test_train_eval_sample_json(tmp_path, text_file, trained, capsys):
    out, result = trained
    assert result["out"] == str(out) and result["steps"] == 10 and result["stopped"] == "budget"
    assert result["val_loss_nats"] > 0 and result["val_bpc"] > result["val_loss_nats"]

    code, stdout, _ = run_main(capsys, "eval", str(out), str(text_file), "--json")
    assert code == 0
    ev = json.loads(stdout)
    assert ev["split"] == "val"  # the text it was trained on: the held-out part
    assert ev["loss_nats"] == pytest.approx(result["val_loss_nats"], rel=1e-6)  # the recorded figure reproduces
    assert ev["recorded_val_loss_nats"] == result["val_loss_nats"]

    code, stdout, _ = run_main(capsys, "sample", str(out), "--prime", "The \u201ccat\u201d", "--seed", "7",
                               "--length", "30", "--json")
    assert code == 0
    s = json.loads(stdout)
    assert s["prime"] == 'The "cat"' and s["seed"] == 7 and s["finish"] == "length" and len(s["text"]) == 30


def test_eval_of_other_text_uses_all_of_it(tmp_path, trained, capsys):
    other = tmp_path / "other.txt"
    other.write_text("a completely different text about dogs.\n" * 20)
    code, stdout, _ = run_main(capsys, "eval", str(trained[0]), str(other), "--json")
    assert code == 0 and json.loads(stdout)["split"] == "all"


def test_sample_same_seed_same_text_other_seed_other_text(trained, capsys):
    out = str(trained[0])
    texts = []
    for seed in ("7", "7", "8"):
        code, stdout, _ = run_main(capsys, "sample", out, "--prime", "Do I need", "--seed", seed,
                                   "--temperature", "1.0", "--length", "60")
        assert code == 0 and stdout.startswith("Do I need")
        texts.append(stdout)
    assert texts[0] == texts[1] != texts[2]


def test_sample_stop_escapes(trained, capsys):
    code, stdout, _ = run_main(capsys, "sample", str(trained[0]), "--seed", "1", "--temperature", "1", "--length",
                               "200", "--stop", "\\n", "--json")
    assert code == 0
    s = json.loads(stdout)
    assert "\n" not in s["text"]


def test_resume_through_the_cli(tmp_path, text_file, trained, capsys):
    out, _ = trained
    code, stdout, _ = run_main(capsys, "train", str(text_file), "--out", str(out), "--resume", "--steps", "15",
                               "--json", "--quiet")
    assert code == 0 and json.loads(stdout)["steps"] == 15


def test_init_from_through_the_cli(tmp_path, text_file, trained, capsys):
    out, _ = trained
    tuned = tmp_path / "tuned.safetensors"
    code, stdout, _ = run_main(capsys, "train", str(text_file), "--out", str(tuned), "--init-from", str(out),
                               "--steps", "5", "--json", *TINY)
    assert code == 0 and json.loads(stdout)["steps"] == 5
    from model.checkpoint import load_checkpoint

    assert load_checkpoint(tuned).info["parent"]["path"] == str(out)


def one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0]


def test_eval_missing_checkpoint(tmp_path, text_file, capsys):
    code, out, err = run_main(capsys, "eval", str(tmp_path / "missing.safetensors"), str(text_file))
    one_line_error(code, err, "missing.safetensors", "no such file")
    assert out == ""


def test_eval_missing_text(trained, tmp_path, capsys):
    code, _, err = run_main(capsys, "eval", str(trained[0]), str(tmp_path / "nothing.txt"))
    one_line_error(code, err, "nothing.txt")


def test_eval_corrupt_checkpoint(trained, text_file, capsys):
    out, _ = trained
    data = bytearray(out.read_bytes())
    data[-10] ^= 0xFF
    out.write_bytes(bytes(data))
    code, _, err = run_main(capsys, "eval", str(out), str(text_file))
    one_line_error(code, err, str(out), "checksum")


def test_eval_corrupt_checkpoint_json(tmp_path, text_file, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    code, out, err = run_main(capsys, "eval", str(bad), str(text_file), "--json")
    one_line_error(code, err, "bad.safetensors")
    assert "bad.safetensors" in json.loads(out)["error"]


@pytest.mark.slow
def test_errors_in_a_real_process_have_no_traceback(tmp_path, text_file):
    done = subprocess.run([sys.executable, "-m", "bot", "eval", str(tmp_path / "nope.safetensors"),
                           str(text_file)], capture_output=True, text=True, timeout=120)
    one_line_error(done.returncode, done.stderr, "nope.safetensors")


@pytest.mark.parametrize("argv,words", [
    (["--temperature", "3"], ["temperature must be a number from 0 to 2"]),
    (["--temperature", "nan"], ["temperature"]),
    (["--top-p", "0"], ["top_p"]),
    (["--top-k", "-1"], ["top_k"]),
    (["--length", "0"], ["max_chars"]),
])
def test_sample_bad_settings(trained, capsys, argv, words):
    code, _, err = run_main(capsys, "sample", str(trained[0]), *argv)
    one_line_error(code, err, *words)


def test_sample_non_number_temperature_is_a_usage_error(trained, capsys):
    code, _, err = run_main(capsys, "sample", str(trained[0]), "--temperature", "hot")
    assert code == 2 and "Traceback" not in err and "invalid float value: 'hot'" in err


def test_train_errors(tmp_path, text_file, capsys):
    code, _, err = run_main(capsys, "train", str(tmp_path / "none.txt"), "--out", str(tmp_path / "m.safetensors"))
    one_line_error(code, err, "none.txt")
    code, _, err = run_main(capsys, "train", str(text_file), "--out", str(tmp_path / "m.safetensors"), "--resume",
                            "--init-from", "x.safetensors")
    one_line_error(code, err, "cannot be combined")
    code, _, err = run_main(capsys, "train", str(text_file), "--out", str(tmp_path / "m.safetensors"), "--resume")
    one_line_error(code, err, "no training state")
    code, _, err = run_main(capsys, "train", str(text_file), "--out", str(tmp_path / "m.safetensors"),
                            "--batch-seqs", "64", "--batch-steps", "200")
    one_line_error(code, err, "cats.txt", "too short")
    code, _, err = run_main(capsys, "train", str(text_file), "--out", str(tmp_path / "m.safetensors"), "--lr", "0")
    one_line_error(code, err, "lr")
    code, _, err = run_main(capsys, "train", str(tmp_path), "--out", str(tmp_path / "m.safetensors"))
    one_line_error(code, err, "is a folder")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    code, _, err = run_main(capsys, "train", str(binary), "--out", str(tmp_path / "m.safetensors"))
    one_line_error(code, err, "not UTF-8")


def test_train_into_an_unwritable_place(tmp_path, text_file, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a folder")
    code, _, err = run_main(capsys, "train", str(text_file), "--out", str(blocker / "m.safetensors"), "--steps",
                            "5", *TINY)
    one_line_error(code, err, "file")


@pytest.mark.slow
async def test_ctrl_c_saves_the_state_and_resume_continues(tmp_path, text_file, capsys):
    """A real process, a real SIGINT: the run stops at a step boundary, says so, and --resume picks it up."""
    import signal

    out = tmp_path / "m.safetensors"
    proc = subprocess.Popen([sys.executable, "-m", "bot", "train", str(text_file), "--out", str(out),
                             "--steps", "1000000", "--json", *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        log = tmp_path / "m.log.json"

        def validated() -> bool:
            assert proc.poll() is None, proc.stderr.read()
            return log.exists()

        await eventually(validated, timeout=120, interval=0.1, what="the first validation")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr  # the state is saved, but the run did not finish
    assert "stopping after this step" in stderr and "Traceback" not in stderr
    first = json.loads(stdout)
    assert first["stopped"] == "interrupted" and first["steps"] >= 5
    code, stdout, _ = run_main(capsys, "train", str(text_file), "--out", str(out), "--resume", "--steps",
                               str(first["steps"] + 3), "--json")
    assert code == 0
    second = json.loads(stdout)
    assert second["stopped"] == "budget" and second["steps"] == first["steps"] + 3


def test_train_precision_is_chosen_on_the_command_line(tmp_path, text_file, capsys):
    out = tmp_path / "fp32.safetensors"
    code, _, _ = run_main(capsys, "train", str(text_file), "--out", str(out), "--steps", "4", "--json",
                          "--precision", "fp32", *TINY)
    assert code == 0
    assert load_checkpoint(out).info["precision"] == "fp32"
    code, _, err = run_main(capsys, "train", str(text_file), "--out", str(out), "--precision", "fp16", *TINY)
    assert code == 2 and "fp16" in err
