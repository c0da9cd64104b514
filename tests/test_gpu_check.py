"""benchmarks/gpu_check.py on the CPU at tiny sizes, so the GPU check never rots; and its answer without CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_gpu_check_passes_on_the_cpu_at_tiny_sizes(tmp_path):
    done = _run("--device", "cpu", "--tiny", "--out", str(tmp_path / "check.json"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report == json.loads((tmp_path / "check.json").read_text())
    assert report["ok"] and report["tiny"] and report["environment"]["device"] == "cpu"
    assert set(report["presets"]) == {"hrnet18", "mtinet-hrnet18-nyuv2", "mtinet-hrnet48-nyuv2", "invpt-vitl-nyuv2",
                                      "mtinet-hrnet18-pascal"}
    for preset in report["presets"].values():
        for variant in ("reg", "noreg"):
            run = preset[variant]
            assert run["ok"] and run["finite_losses"] and run["steps"] == 2 and run["ms_per_step"] > 0
            assert run["step_peak_mb"] is None  # device memory is CUDA's figure
        assert preset["regularizer_overhead"] > 0 and preset["input"] == [64, 64]
    assert {"hrnet18", "vit-s"} <= {preset["backbone"] for preset in report["presets"].values()}
    commands = report["commands"]
    assert set(commands) == {"evaluate", "predict", "render_views", "torchrun"}
    assert all(check["ok"] for check in commands.values()) and commands["torchrun"]["process_group"]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_check_without_cuda_is_one_error_line():
    done = _run(timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "CUDA is not available" in lines[0], done.stderr
