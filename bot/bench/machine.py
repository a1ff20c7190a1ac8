"""The machine a bench run measured: recorded beside every figure, so numbers from different
machines are never compared blind (the same cloud machine kind has come with an AMD EPYC one
day and an Intel Xeon the next, and a single reply's speed moved by 4x between them)."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

# CPU features the generation and training paths can use (bf16 and int8 matrix instructions)
FLAGS_THAT_MATTER = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16",
                     "amx_int8")
_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


def cpu_facts(cpuinfo: str | None = None, caches: Path = _CACHES) -> dict:
    """Model name, cores, cache sizes (per core for L1/L2, per socket or die for L3) and the flags that matter."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"model": fields.get("model name") or platform.processor() or platform.machine(),
            "vendor": fields.get("vendor_id"), "family": fields.get("cpu family"), "cores": usable,
            "caches": _cache_sizes(caches), "flags": [f for f in FLAGS_THAT_MATTER if f in flags]}


def _cache_sizes(folder: Path) -> dict[str, str]:
    sizes: dict[str, str] = {}
    for index in sorted(folder.glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        name = f"L{level}" + ({"Data": "d", "Instruction": "i"}.get(kind, ""))
        sizes[name] = size
    return sizes


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
