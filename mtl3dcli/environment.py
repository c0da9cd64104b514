"""The compute environment a run trained in, recorded beside its results (`environment.json`).

Training is bit-for-bit reproducible only in the same environment: the same code and data give the same numbers
on the same CPU instruction set (PyTorch, oneDNN and MKL pick kernels per instruction set, and a different float
rounding in the first step grows into a seed-sized difference after hundreds of steps) with the same library
builds and thread count. Recording it tells a reader whether a rerun should match exactly or only within the seed
spread.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtl3dcli import fileio
from mtl3dcli.errors import Mtl3dError


def cpu_model() -> str:
    """The CPU's marketing name ("model name" of /proc/cpuinfo on Linux), else what the platform reports."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return platform.processor() or platform.machine()


def code_version() -> str:
    """The package version, plus the git commit when it runs from a checkout ("0.1.0+a4abdd4", "+dirty" with
    uncommitted changes): the commit a study table is a record of."""
    try:
        version = metadata.version("mtl3d")
    except metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return version
    try:
        git = ["git", "-C", str(root)]
        commit = subprocess.run([*git, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+{commit}{'.dirty' if dirty else ''}"


def describe(device: torch.device) -> dict[str, Any]:
    """What decides a run's float results besides data and config: the code's commit, device, instruction set,
    thread count and library versions."""
    env: dict[str, Any] = {"code": code_version(), "device": device.type, "cpu": cpu_model(),
                           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                           "threads": torch.get_num_threads(), "torch": torch.__version__, "numpy": np.__version__,
                           "python": platform.python_version()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def _starts(path: Path) -> list[dict[str, Any]]:
    """The recorded starts of environment.json ([] when there is none yet)."""
    if not path.is_file():
        return []
    record = fileio.read_json(path)
    if not (isinstance(record, dict) and isinstance(record.get("starts"), list)
            and all(isinstance(start, dict) for start in record["starts"])):
        raise Mtl3dError(f'{path} is not an environment record ({{"starts": [...]}}): move it away to start a new one')
    return record["starts"]


def record_start(run_dir: Path, step: int, device: torch.device) -> None:
    """Append this (re)start's environment to `run_dir/environment.json` ({"starts": [{"step": s, ...}]}): a run
    resumed elsewhere shows every environment it trained in, from the step each took over."""
    path = Path(run_dir) / "environment.json"
    fileio.write_json(path, {"starts": [*_starts(path), {"step": step, **describe(device)}]})


def training_environments(run_dir: Path) -> list[dict[str, Any]]:
    """The distinct environments a run trained in (without their start steps); [] for a run that recorded none."""
    distinct: list[dict[str, Any]] = []
    for start in _starts(Path(run_dir) / "environment.json"):
        env = {k: v for k, v in start.items() if k != "step"}
        if env not in distinct:
            distinct.append(env)
    return distinct


def summarize(env: dict[str, Any]) -> str:
    """One line: "Intel(R) Xeon(R) Processor (AVX512), 2 threads, torch 2.14.1, mtl3d 0.1.0+a4abdd4" (the GPU on
    CUDA; runs recorded before the code version was have none)."""
    where = f"{env['gpu']}, CUDA {env['cuda']}" if env.get("gpu") else f"{env['cpu']} ({env['cpu_capability']})"
    code = f", mtl3d {env['code']}" if env.get("code") else ""
    return f"{where}, {env['threads']} threads, torch {env['torch']}{code}"
