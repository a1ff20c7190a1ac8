"""Device choice: CUDA when present, else CPU, unless the user says otherwise."""

from __future__ import annotations

import torch


def pick_device(requested: str | None = "auto") -> torch.device:
    """Resolve ``auto``/``cpu``/``cuda[:N]`` to a usable device, with a clear error if it is not."""
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {requested!r}: {exc}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} requested but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {requested!r} requested but there are {torch.cuda.device_count()} CUDA devices")
    elif device.type != "cpu":
        raise ValueError(f"device {requested!r} is not supported: use auto, cpu, cuda or cuda:N")
    return device
