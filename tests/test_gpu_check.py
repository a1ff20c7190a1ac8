"""``make gpu-check`` and ``make gpu-wheels`` stay complete as the project changes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts processes or servers: `make test-fast` skips it

ROOT = Path(__file__).resolve().parents[1]
# What a PyTorch CUDA image has already (see .ci/gpu-wheels.txt); everything else must travel as a wheel.
ON_THE_IMAGE = {"torch", "numpy", "safetensors", "tqdm", "matplotlib", "pytest", "hypothesis", "aiohttp", "ruff"}


def name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_every_dependency_the_gpu_image_lacks_is_downloaded_by_gpu_wheels():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]} - ON_THE_IMAGE
    listed = {name(line) for line in (ROOT / ".ci" / "gpu-wheels.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert needed <= listed, f"add to .ci/gpu-wheels.txt: {sorted(needed - listed)}"


def test_gpu_check_runs_the_cuda_tests_then_the_gpu_bench_with_the_installed_torch():
    plan = subprocess.run(["make", "-n", "gpu-check", "BENCH_OUT=out"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    install = plan.split("pip install", 1)[1].split("\n")[0]
    assert "--no-index" in install and "torch" not in install
    assert "-m pytest -m cuda" in plan
    assert "-m bot bench --only gpu --out out --quick" in plan
    full = subprocess.run(["make", "-n", "gpu-check", "GPU_BENCH=full"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    assert "--only gpu --out bench" in full and "--quick" not in full
