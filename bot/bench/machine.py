"""The machine a bench run measured: recorded beside every figure, so numbers from different
machines are never compared blind (the same cloud machine kind has come with an AMD EPYC one
day and an Intel Xeon the next, and a single reply's speed moved by 4x between them)."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone

import torch

from model.cpu import FLAGS_THAT_MATTER, cpu_facts

__all__ = ["FLAGS_THAT_MATTER", "cpu_facts", "describe_cpu", "machine"]  # the CPU reader lives in model.cpu



def machine(gpu: dict | None = None) -> dict:
    """When, what software, which CPU (and GPU), and how busy the machine was at that moment."""
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
            "python": platform.python_version(), "cpu": cpu_facts(), "cpu_count": os.cpu_count(),
            "load_avg": load, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "gpu": gpu}


def describe_cpu(cpu: dict | str) -> str:
    """One line for a report: model, caches, the flags that matter."""
    if isinstance(cpu, str):  # reports written before the CPU was described in full
        return cpu
    caches = ", ".join(f"{k} {v}" for k, v in cpu.get("caches", {}).items() if k in ("L2", "L3"))
    flags = " ".join(cpu.get("flags", [])) or "none of " + "/".join(FLAGS_THAT_MATTER[:4])
    return f"{cpu.get('model')} ({caches or 'caches unknown'}; {flags})"
