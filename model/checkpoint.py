"""Safe checkpoints: one safetensors file, weights plus a JSON metadata header, no pickle.

safetensors cannot run code on load, but it has no checksum of its own, so the header
carries the sha256 of the tensor bytes: a flipped byte is reported, not served. Files are
written atomically (temporary file, fsync, rename) so a crash never leaves a half-written
checkpoint under the real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from model.charset import CHARSET_VERSION
from model.network import CharLSTM, ModelConfig

FORMAT = "charbot-checkpoint"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass
class Checkpoint:
    """A loaded model with its configuration and the facts of its training."""

    model: CharLSTM
    config: ModelConfig
    info: dict = field(default_factory=dict)
    path: str | None = None


def checkpoint_file(folder: str | os.PathLike, name: str) -> Path:
    """``<folder>/<name>.safetensors``: the checkpoint called ``name`` in a folder of checkpoints.

    The name must not lead out of the folder (a path separator, or a leading dot).
    """
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"{name!r} is not a checkpoint name")
    return Path(folder) / f"{name}{SUFFIX}"


def checkpoint_name(path: str | os.PathLike) -> str:
    """The name a checkpoint file is known by: ``runs/tale.safetensors`` -> ``tale``."""
    return Path(path).name.removesuffix(SUFFIX)


def sibling(path: str | os.PathLike, suffix: str) -> Path:
    """A file kept beside a checkpoint: ``runs/tale.safetensors`` with ``.log.json`` -> ``runs/tale.log.json``."""
    path = Path(path)
    return path.with_name(checkpoint_name(path) + suffix)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks so a large checkpoint is never held whole."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# The permissions of a newly created ordinary file: mkstemp makes 0600, and a checkpoint should be
# as readable as any other file. The umask is read once, at import: os.umask can only be read by
# setting it, which races with threads.
FILE_MODE = 0o666 & ~_read_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` under ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in ``path`` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_tensor_file(path: str | os.PathLike, tensors: dict[str, torch.Tensor], header: dict) -> None:
    """Atomically write tensors and a JSON-able header (the shared format of all our files)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {"format": header.get("format", FORMAT), "header": json.dumps(header), "sha256": tensors_digest(tensors)}
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def read_tensor_file(path: str | os.PathLike, expect_format: str = FORMAT) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify a file written by :func:`write_tensor_file`; raise CheckpointError otherwise."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(path, "no such file")
    if not p.is_file():
        raise CheckpointError(path, "not a regular file")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no mapping)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(path, f"not a readable safetensors file (truncated or corrupt?): {exc}") from None
    if meta.get("format") != expect_format:
        raise CheckpointError(path, f"not a {expect_format} file (format {meta.get('format')!r})")
    try:
        header = json.loads(meta["header"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, f"corrupt metadata header: {exc}") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "corrupt metadata header: not a JSON object")
    if tensors_digest(tensors) != meta.get("sha256"):
        raise CheckpointError(path, "contents do not match their checksum (the file was altered or damaged)")
    return tensors, header


def save_checkpoint(
    path: str | os.PathLike,
    model: CharLSTM,
    info: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Write the model, its config and training facts; ``dtype`` may be bf16/fp16 for shipping."""
    tensors = {k: v.to(dtype) for k, v in model.state_dict().items()}
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "charset_version": CHARSET_VERSION,
        "config": model.config.to_dict(),
        "info": info or {},
    }
    write_tensor_file(path, tensors, header)


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> Checkpoint:
    """Load a checkpoint for use; every failure is one CheckpointError naming file and problem."""
    tensors, header = read_tensor_file(path)
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(path, f"unsupported checkpoint format version {header.get('format_version')!r}")
    if header.get("charset_version") != CHARSET_VERSION:
        raise CheckpointError(
            path,
            f"made for character set v{header.get('charset_version')}, this charbot uses v{CHARSET_VERSION}",
        )
    try:
        config = ModelConfig(**header["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(path, f"invalid model configuration: {exc}") from None
    model = CharLSTM(config)
    state = {k: v.float() for k, v in tensors.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(path, f"weights do not fit the configuration: {first[0] if first else exc}") from None
    model.to(device).eval()
    return Checkpoint(model=model, config=config, info=header.get("info", {}), path=str(path))


# Facts a fine-tune records of the checkpoint it started from (see :func:`ancestry`).
PARENT_FACTS = ("corpus", "val_loss_nats", "train_seconds", "chars_seen")


def ancestry(path: str | os.PathLike, info: dict) -> dict:
    """What a fine-tune records of the checkpoint at ``path`` (with ``info``) that it starts from.

    Its path, corpus, held-out loss, training time and characters seen, and under ``parent``
    that checkpoint's own record in turn (None: trained from scratch). A checkpoint continued
    several times thus still says how it was made from the start, and what it cost in all,
    after the files it came from are gone.
    """
    record: dict = {"path": str(path), **{key: info.get(key) for key in PARENT_FACTS}}
    if "parent" in info:
        record["parent"] = complete_parent(info["parent"])
    return record


def complete_parent(record: object) -> object:
    """``record`` (a ``parent`` entry) with its ancestry filled in where it was recorded without.

    Checkpoints made before ancestry was kept name only their direct parent. When that file is
    still where it was and is the same checkpoint (it records the same held-out loss: a shipped
    file may have been replaced since), its own ancestry is read from it; otherwise the record
    is returned as it is, and the chain ends there unknown.
    """
    if not isinstance(record, dict) or "parent" in record or not record.get("path"):
        return record
    try:
        found = load_checkpoint(record["path"]).info
    except (CheckpointError, OSError):
        return record
    if found.get("val_loss_nats") != record.get("val_loss_nats"):
        return record
    return {**ancestry(record["path"], found), **{k: v for k, v in record.items() if v is not None}}
