"""Every bench report names the CPU it ran on: model, caches and the instruction sets that matter."""

from __future__ import annotations

from bot.bench.machine import cpu_facts, describe_cpu

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx2 fma avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
"""


def test_the_cpu_is_described_by_model_caches_and_useful_flags(tmp_path):
    for i, (level, kind, size) in enumerate([(1, "Data", "48K"), (2, "Unified", "2048K"), (3, "Unified", "105M")]):
        index = tmp_path / f"index{i}"
        index.mkdir()
        (index / "level").write_text(f"{level}\n")
        (index / "type").write_text(f"{kind}\n")
        (index / "size").write_text(f"{size}\n")
    facts = cpu_facts(XEON, tmp_path)
    assert facts["model"] == "Intel(R) Xeon(R) Processor" and facts["vendor"] == "GenuineIntel"
    assert facts["caches"] == {"L1d": "48K", "L2": "2048K", "L3": "105M"}
    assert facts["flags"] == ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16",
                              "amx_int8"]
    assert describe_cpu(facts) == ("Intel(R) Xeon(R) Processor (L2 2048K, L3 105M; avx2 fma avx512f avx512_bf16 "
                                   "avx512_vnni amx_tile amx_bf16 amx_int8)")


def test_this_machine_is_described_without_error(tmp_path):
    facts = cpu_facts()
    assert facts["model"] and facts["cores"] >= 1
    assert describe_cpu("x86_64") == "x86_64"  # reports from before the full description
