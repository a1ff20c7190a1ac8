"""A fine-tuning job in its own process, so training never runs on the bot's event loop.

The parent writes ``spec.json`` and ``texts.json`` into a job folder and starts
``python -m bot.jobs.job JOBDIR``. The child lowers its priority (nice, few torch
threads) so replies keep their CPU, runs :func:`model.finetune.finetune`, and reports
on stdout, one JSON event per line: ``started``, ``phase``, ``progress``, then exactly one of
``done`` / ``cancelled`` / ``refused`` / ``error``. A line ``cancel`` on its stdin stops it at
the next step; so does end-of-file, which means the parent died: a job never outlives the
process that would have recorded its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model.train import Progress

SPEC = "spec.json"
TEXTS = "texts.json"
RESULT = "result.json"
STAGED = "new.safetensors"
STDERR = "stderr.log"

EXIT_DONE, EXIT_ERROR, EXIT_REFUSED, EXIT_CANCELLED = 0, 1, 2, 3


@dataclass
class JobSpec:
    """Everything the child needs; written by the parent, read by the child."""

    corpus: str
    base: str
    config: dict = field(default_factory=dict)
    nice: int = 10
    threads: int | None = 1

    def write(self, jobdir: Path, texts: list[str]) -> None:
        from model.checkpoint import atomic_write_bytes

        atomic_write_bytes(jobdir / TEXTS, json.dumps(texts).encode())
        atomic_write_bytes(jobdir / SPEC, json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def read(cls, jobdir: Path) -> tuple[JobSpec, list[str]]:
        spec = cls(**json.loads((jobdir / SPEC).read_text()))
        texts = json.loads((jobdir / TEXTS).read_text())
        return spec, texts


def child_env(threads: int | None) -> dict[str, str]:
    """Environment for the child: thread pools capped before torch starts them, no bot token."""
    env = dict(os.environ)
    env.pop("DISCORD_TOKEN", None)  # the job never talks to Discord
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    return env


# ---- the child ---------------------------------------------------------------------------


class _Channel:
    """The child's side of the pipe: events out, ``cancel`` (or the parent's death) in."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reason = ""
        self._lock = threading.Lock()
        threading.Thread(target=self._listen, name="finetune-stdin", daemon=True).start()

    def _listen(self) -> None:
        for line in sys.stdin:
            if line.strip() == "cancel":
                self.reason = self.reason or "cancelled"
                self.stop.set()
        self.reason = self.reason or "the process that started the job went away"
        self.stop.set()

    def on_signal(self, signum: int, frame: object) -> None:
        self.reason = self.reason or f"stopped by {signal.Signals(signum).name}"
        self.stop.set()

    def emit(self, event: str, **data: object) -> None:
        line = json.dumps({"event": event, **data}, default=str)
        with self._lock:
            try:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):
                self.reason = self.reason or "the process that started the job went away"
                self.stop.set()


def _lower_priority(nice: int, threads: int | None) -> None:
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    if threads:
        import torch

        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(threads)


def main(argv: list[str] | None = None) -> int:
    """Run the job in ``argv[0]``; the exit code says how it ended (see EXIT_*)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bot.jobs.job JOBDIR", file=sys.stderr)
        return EXIT_ERROR
    jobdir = Path(args[0])
    channel = _Channel()
    # SIGTERM/SIGINT are turned into "stop at the next step" by train(); before and after it
    # they should end the job the same way, not with a traceback.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, channel.on_signal)
    channel.emit("started", pid=os.getpid())
    try:
        spec, texts = JobSpec.read(jobdir)
        _lower_priority(spec.nice, spec.threads)
        from corpora.heldout import corpus_heldout, corpus_replay
        from model.checkpoint import atomic_write_bytes
        from model.finetune import FinetuneConfig, JobCancelled, TooLittleText, finetune

        cfg = FinetuneConfig(**{**spec.config, "threads": spec.threads})

        def progress(p: Progress) -> None:
            channel.emit("progress", step=p.step, fraction=round(p.fraction, 4), train_loss=p.train_loss,
                         val_loss=p.val_loss, best_val_loss=p.best_val_loss, chars_per_s=round(p.chars_per_s),
                         elapsed_s=round(p.elapsed_s, 1), eta_s=None if p.eta_s is None else round(p.eta_s, 1))

        corpus_codes, corpus_note = corpus_heldout(spec.corpus, cfg.corpus_eval_chars)
        replay_codes, _ = corpus_replay(spec.corpus) if cfg.replay else (None, None)
        report = finetune(texts, spec.base, spec.corpus, jobdir / STAGED, cfg, corpus_codes=corpus_codes,
                          corpus_note=corpus_note, replay_codes=replay_codes, on_progress=progress,
                          on_phase=lambda name: channel.emit("phase", phase=name), should_stop=channel.stop.is_set)
    except JobCancelled as exc:
        channel.emit("cancelled", reason=channel.reason or str(exc))
        return EXIT_CANCELLED
    except TooLittleText as exc:
        channel.emit("refused", message=str(exc), missing=exc.missing)
        return EXIT_REFUSED
    except Exception as exc:
        import traceback

        traceback.print_exc()
        channel.emit("error", message=f"{type(exc).__name__}: {exc}")
        return EXIT_ERROR
    atomic_write_bytes(jobdir / RESULT, json.dumps(report.to_dict(), indent=1).encode())
    channel.emit("done", report=report.to_dict())
    return EXIT_DONE


# ---- the parent --------------------------------------------------------------------------


class JobProcess:
    """The parent's handle on a running child: its events, cancel, kill, exit status."""

    def __init__(self, proc: asyncio.subprocess.Process, jobdir: Path) -> None:
        self.proc = proc
        self.jobdir = jobdir

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(cls, jobdir: Path, threads: int | None = 1, command: list[str] | None = None) -> JobProcess:
        """Start the child on ``jobdir`` (``command`` replaces ``python -m bot.jobs.job``)."""
        command = command or [sys.executable, "-m", "bot.jobs.job"]
        with open(jobdir / STDERR, "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *command, str(jobdir), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=err, env=child_env(threads), limit=1 << 20,
            )
        return cls(proc, jobdir)

    async def events(self) -> AsyncIterator[dict]:
        """Events until the child closes its stdout; lines that are not events are skipped."""
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict) and "event" in event:
                yield event

    async def cancel(self) -> None:
        """Ask the child to stop at its next training step."""
        if self.proc.returncode is not None or self.proc.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.proc.stdin.write(b"cancel\n")
            await self.proc.stdin.drain()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def wait(self) -> int:
        return await self.proc.wait()

    def stderr_tail(self, limit: int = 600) -> str:
        try:
            data = (self.jobdir / STDERR).read_bytes()[-limit:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()


def describe_exit(code: int) -> str:
    """Why a child ended, in words."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the training process was killed ({name})"
    return {EXIT_DONE: "finished", EXIT_ERROR: "the training process failed", EXIT_REFUSED: "refused",
            EXIT_CANCELLED: "cancelled"}.get(code, f"the training process exited with status {code}")


if __name__ == "__main__":
    sys.exit(main())
