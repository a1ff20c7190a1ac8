"""The CPU's identity: what a measured precision choice is keyed by."""

from __future__ import annotations

from model.cpu import cpu_identity

EPYC = ("vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel name\t: AMD EPYC\n"
        "flags\t\t: fpu avx2 fma avx512f avx512_bf16\n")


def test_identity_is_model_vendor_family_and_the_flags_that_matter():
    assert cpu_identity(EPYC) == {"model": "AMD EPYC", "vendor": "AuthenticAMD", "family": "25",
                                  "flags": ["avx2", "fma", "avx512f", "avx512_bf16"]}


def test_identity_differs_when_an_instruction_set_does():
    assert cpu_identity(EPYC) != cpu_identity(EPYC.replace(" avx512_bf16", ""))


def test_this_machine_has_an_identity():
    assert cpu_identity()["model"]
