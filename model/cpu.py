"""Which CPU this is: its model name, caches and the instruction sets the model's paths can use.

One reader for two users: the bench records it beside every figure (the same cloud machine
kind has come with an AMD EPYC one day and an Intel Xeon the next, and a single reply's speed
moved by 4x between them), and :mod:`model.precision` keys its measured choice by it, so a
decision made on one CPU is never reused on another.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# CPU features the generation and training paths can use (bf16 and int8 matrix instructions)
FLAGS_THAT_MATTER = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16",
                     "amx_int8")
_CPUINFO = Path("/proc/cpuinfo")
_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


def _read_cpuinfo() -> str:
    try:
        return _CPUINFO.read_text(errors="replace")
    except OSError:
        return ""


def cpu_facts(cpuinfo: str | None = None, caches: Path = _CACHES) -> dict:
    """Model name, cores, cache sizes (per core for L1/L2, per socket or die for L3) and the flags that matter."""
    if cpuinfo is None:
        cpuinfo = _read_cpuinfo()
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


def cpu_identity(cpuinfo: str | None = None) -> dict:
    """What makes two CPUs the same for a speed decision: vendor, family, model name and the flags that matter.

    Cores and caches are left out: the usable cores follow the process's affinity, not the
    chip, and the thread count a measurement ran with is keyed separately by its user.
    """
    facts = cpu_facts(cpuinfo, caches=Path("/nonexistent"))
    return {"model": facts["model"], "vendor": facts["vendor"], "family": facts["family"], "flags": facts["flags"]}


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
