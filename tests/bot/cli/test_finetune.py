"""``charbot finetune`` as an operator runs it, and what a killed bot (or CLI) leaves behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.jobs.manager import FinetuneManager
from bot.jobs.settings import FinetuneSettings
from bot.store import open_store
from bot.store.jobs import FinetuneStore
from model.checkpoint import load_checkpoint
from tests.helpers import contributed_texts, eventually

pytestmark = pytest.mark.slow  # starts processes or servers: `make test-fast` skips it

FAST = ["--max-epochs", "3", "--lr", "1e-2", "--threads", "1"]


@pytest.fixture
def setup(tmp_path, base_checkpoint):
    """A bot database with contributions and a checkpoints folder holding the base tale model."""
    db = tmp_path / "charbot.db"

    async def fill() -> None:
        async with await open_store(db) as store:
            for text in contributed_texts():
                await store.add_contribution(1, 2, 3, "tale", text, "modal")

    asyncio.run(fill())
    ckdir = tmp_path / "checkpoints"
    ckdir.mkdir()
    shutil.copy(base_checkpoint, ckdir / "tale.safetensors")
    return tmp_path, db, ckdir


def charbot(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bot", "finetune", *args, "--env-file", "/nonexistent"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture
def run(capsys):
    """``charbot finetune ...`` in this process: exit code, stdout, stderr."""
    from bot.cli import main

    def call(*args: str) -> tuple[int, str, str]:
        code = main(["finetune", *args, "--env-file", "/nonexistent"])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def test_finetune_from_the_command_line_and_ship_the_result(setup, run):
    tmp, db, ckdir = setup
    common = ["--db", str(db), "--checkpoints", str(ckdir), "--state-dir", str(tmp / "state")]
    code, out, err = run("tale", *common, "--minutes", "2", *FAST, "--out", str(tmp / "ship" / "tale-v1.safetensors"),
                         "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["state"] == "done" and result["version"] == 1
    report = result["report"]
    assert report["after"]["contributed"] < report["before"]["contributed"]
    assert report["after"]["corpus"] is not None and report["replay"] == 0.75  # kept the tale, checked it
    assert result["guard"] == {"passed": True, "reasons": [], "forced": False, "max_corpus_rise": 0.05}
    assert result["losses"]["corpus"]["after_bits"] > 0 and result["losses"]["contributed"]["heldout_chars"] > 0
    shipped = load_checkpoint(tmp / "ship" / "tale-v1.safetensors")
    assert shipped.info["finetune"]["after"]["contributed"] == report["after"]["contributed"]

    # Another bot machine installs the shipped file as its next version.
    other = ["--db", str(db), "--checkpoints", str(ckdir), "--state-dir", str(tmp / "other")]
    code, out, err = run("tale", *other, "--install", str(tmp / "ship" / "tale-v1.safetensors"))
    assert code == 0, err
    assert "tale: now serving v2" in out  # v1 is taken in this shared database
    code, out, _ = run("tale", *common, "--rollback", "0")
    assert code == 0 and "now serving base" in out
    code, out, _ = run("tale", *common, "--list")
    assert "serving base" in out and "v1: from base" in out and "job 1: done, by cli:" in out


def test_too_little_text_is_one_clear_line(setup, run):
    tmp, db, ckdir = setup
    code, out, err = run("tale", "--db", str(db), "--checkpoints", str(ckdir), "--min-chars", "100000")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "fine-tuning needs at least 100,000" in err and "more" in err
    code, _, err = run("tale", "--db", str(tmp / "nope.db"))
    assert code == 2 and "no such database" in err


def _job_row(db: Path) -> tuple | None:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT id, state, progress, error FROM jobs ORDER BY id DESC LIMIT 1").fetchone()


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in state


async def test_killing_the_owning_process_mid_job_changes_nothing_served_and_restart_recovers(setup):
    tmp, db, ckdir = setup
    state = tmp / "state"
    common = ["--db", str(db), "--checkpoints", str(ckdir), "--state-dir", str(state)]
    owner = charbot("tale", *common, "--minutes", "5", "--max-epochs", "100000", "--patience", "100000",
                    "--lr", "1e-2", "--threads", "1")

    def training() -> tuple | None:
        assert owner.poll() is None, owner.stderr.read()
        row = _job_row(db)
        return row if row and row[2] and "step" in json.loads(row[2]) else None

    row = await eventually(training, timeout=120, interval=0.1, what="the job to be training")
    child = json.loads(row[2])["pid"]
    os.kill(owner.pid, signal.SIGKILL)  # the whole "bot": the process that owns the job
    owner.wait()
    await eventually(lambda: _gone(child), timeout=60, interval=0.1,
                     what="the training process to stop by itself once its owner was gone")
    assert _job_row(db)[1] == "running"  # nobody recorded the end yet

    async def restart() -> None:
        async with await open_store(db) as store:
            fstore = FinetuneStore(store)
            manager = FinetuneManager(fstore, FinetuneSettings(state_dir=state), lambda c: ckdir / f"{c}.safetensors")
            stale = await manager.recover()
            assert [j.id for j in stale] == [row[0]]
            job = await fstore.job(row[0])
            assert job.state == "failed" and "interrupted" in job.error and "not changed" in job.error
            assert (await manager.served("tale")).version == 0
            assert len(await store.contributions(corpus="tale")) == 8
            assert not (state / "finetune-jobs" / str(row[0])).exists()

    await restart()  # (that the next job then works is shown with a killed bot in tests/bot)


def test_a_job_whose_corpus_loss_cannot_be_checked_is_refused_with_the_figures_and_force_installs_it(
    setup, run, monkeypatch
):
    """Only a verified corpus file counts: with another file in its place the old style cannot be measured
    (nor replayed), so the guard cannot pass the result; --force serves it anyway."""
    tmp, db, ckdir = setup
    data = tmp / "data"
    data.mkdir()
    (data / "fairy-tales.txt").write_text("Not the fairy tales at all.\n")
    monkeypatch.setenv("CHARBOT_DATA_DIR", str(data))  # searched before the shared corpora, by the job too
    common = ["--db", str(db), "--checkpoints", str(ckdir), "--state-dir", str(tmp / "state"), "--minutes", "2",
              *FAST, "--json"]
    code, out, err = run("tale", *common)
    assert code == 1, err
    result = json.loads(out)
    assert result["state"] == "refused" and result["version"] is None and result["path"] is None
    assert result["guard"]["passed"] is False and result["guard"]["max_corpus_rise"] == 0.05
    assert "how much of the tale style it kept could not be measured" in result["error"]
    contributed = result["losses"]["contributed"]
    assert {"before_nats", "after_nats", "before_bits", "after_bits", "heldout_chars", "thin"} <= set(contributed)
    assert contributed["after_nats"] < contributed["before_nats"] and result["losses"]["corpus"] is None
    assert result["report"]["replay"] == 0.0  # nothing verified to replay either
    code, out, _ = run("tale", "--db", str(db), "--checkpoints", str(ckdir), "--state-dir", str(tmp / "state"),
                       "--list")
    assert "serving base" in out and "job 1: failed" in out and "refused: how much of the tale style" in out

    code, out, err = run("tale", *common, "--force")
    assert code == 0, err
    result = json.loads(out)
    assert (result["state"], result["version"]) == ("done", 1)
    assert result["guard"]["forced"] is True and result["guard"]["passed"] is False


def test_a_postgresql_database_is_taken_as_a_url_and_needs_the_shared_state_folder(setup, run, postgres_url):
    tmp, _, ckdir = setup
    code, _, err = run("tale", "--db", postgres_url, "--list")
    assert code == 2 and "--state-dir" in err and "CHARBOT_STATE_DIR" in err and "\n" not in err.strip()
    code, out, err = run("tale", "--db", postgres_url, "--list", "--state-dir", str(tmp / "shared-state"),
                         "--checkpoints", str(ckdir))
    assert code == 0, err
    assert out.startswith(f"tale: serving base ({ckdir / 'tale.safetensors'})")  # read from the server


def test_without_forgotten_takes_deleted_texts_out_of_the_served_model(setup, run):
    tmp, db, ckdir = setup
    common = ["--db", str(db), "--checkpoints", str(ckdir), "--state-dir", str(tmp / "state")]
    code, out, err = run("tale", *common, "--without-forgotten")
    assert code != 0 and "nothing to retrain" in err
    assert run("tale", *common, "--minutes", "2", *FAST, "--json")[0] == 0  # v1 learns user 3's texts

    async def forget() -> None:
        async with await open_store(db) as store:
            assert await store.forget(1, 3) == 8

    asyncio.run(forget())
    code, out, err = run("tale", *common, "--without-forgotten", "--json")
    assert code == 0, err
    assert json.loads(out) == {"corpus": "tale", "version": 0, "path": str(ckdir / "tale.safetensors")}
    assert not (tmp / "state" / "versions" / "tale" / "v0001.safetensors").exists()
