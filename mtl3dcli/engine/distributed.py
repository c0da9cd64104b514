"""Multi-process training: who this process is (rank discovery) and the process group (the sharded, resumable
sampler is `mtl3dcli.data.loader.EpochSampler`).

Two launchers start one process per GPU:
  torchrun  sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Any torchrun launch joins a process
            group, one process included, so `torchrun --nproc-per-node 1` runs the multi-GPU code path (DDP, NCCL);
            RANK / WORLD_SIZE=1 set by hand without torchrun mean a single process, as before.
  srun      (SLURM) sets SLURM_PROCID (rank), SLURM_NTASKS (world size), SLURM_LOCALID (local rank) and
            SLURM_NODELIST (or SLURM_STEP_NODELIST) whose first host, as `scontrol show hostnames` lists it, runs
            rank 0; MASTER_PORT may be set, else 29500 + SLURM_JOB_ID % 1000 (jobs sharing a node do not collide).
            Only a step of more than one task trains distributed: a one-task job (or the batch script itself, whose
            SLURM_NTASKS is 1 unless --ntasks says more) trains as a single process.
torchrun wins when both are present (torchrun started by srun, one per node).
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from mtl3dcli.errors import Mtl3dError

SLURM_VARIABLES = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
DEFAULT_PORT = 29500
# Ranks waiting at a barrier while rank 0 validates (the final, full protocol can take many minutes) wait on a gloo
# group with this timeout: on the default group, NCCL's watchdog aborts a collective that waits longer than 10
# minutes, and gloo's default timeout is 30.
BARRIER_TIMEOUT = datetime.timedelta(hours=4)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0  # on CUDA: the index of this process's GPU among the visible ones (see `device_slot`)
    launched: bool = False  # a launcher started this process: the process group is (to be) joined
    barrier_group: Any = None  # the gloo group `barrier` waits on

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.launched


@dataclass(frozen=True)
class Rendezvous:
    """Where this process stands in a launch: rank, world size, local rank and rank 0's address."""

    rank: int
    world: int
    local_rank: int
    address: str | None = None  # None: MASTER_ADDR / MASTER_PORT come from the environment (torchrun)
    port: int | None = None


def rendezvous(env: Mapping[str, str] | None = None) -> Rendezvous | None:
    """The launch this process belongs to, from torchrun's or SLURM's variables; None for a plain single process."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env and (env["WORLD_SIZE"] != "1" or "TORCHELASTIC_RUN_ID" in env):
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in env]
        if missing:
            raise Mtl3dError(f"RANK and WORLD_SIZE are set but {' and '.join(missing)} not: launch with torchrun")
        return Rendezvous(_integer(env, "RANK"), _integer(env, "WORLD_SIZE"), _integer(env, "LOCAL_RANK")
                          if "LOCAL_RANK" in env else 0)
    if not any(name in env for name in SLURM_VARIABLES) or env.get("SLURM_NTASKS", "2") == "1":
        return None
    missing = [name for name in SLURM_VARIABLES if name not in env]
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST")
    if missing or not nodelist:
        missing += [] if nodelist else ["SLURM_NODELIST"]
        raise Mtl3dError(f"SLURM launch without {', '.join(missing)}: start one process per task with `srun mtl3d "
                         f"train ...` inside an allocation (or use torchrun; docs/cluster-training.md)")
    job = env.get("SLURM_JOB_ID", "")
    port = _integer(env, "MASTER_PORT") if "MASTER_PORT" in env else \
        DEFAULT_PORT + (int(job) % 1000 if job.isdigit() else 0)
    return Rendezvous(_integer(env, "SLURM_PROCID"), _integer(env, "SLURM_NTASKS"), _integer(env, "SLURM_LOCALID"),
                      env.get("MASTER_ADDR") or first_host(nodelist), port)


def _integer(env: Mapping[str, str], name: str) -> int:
    try:
        value = int(env[name])
    except ValueError:
        raise Mtl3dError(f"{name}={env[name]!r} is not a whole number") from None
    if value < 0:
        raise Mtl3dError(f"{name}={value} is negative")
    return value


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list ("gpu[07-09,12],cpu3" -> "gpu07"): `scontrol show hostnames` where SLURM
    is installed, else the list's own syntax (prefix, then a bracketed range or list keeping its zero padding)."""
    scontrol = shutil.which("scontrol")
    if scontrol is not None:
        try:
            listed = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True,
                                    timeout=30, check=True).stdout.split()
        except (OSError, subprocess.SubprocessError):
            listed = []
        if listed:
            return listed[0]
    match = re.match(r"\s*([^,\[\s]+)(?:\[([^\]]+)\])?", nodelist)
    if match is None:
        raise Mtl3dError(f"cannot read a host from SLURM node list {nodelist!r}")
    prefix, ranges = match.groups()
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "")


def init_distributed(device_type: str, env: Mapping[str, str] | None = None) -> DistContext:
    """Join the process group of a torchrun or srun launch (NCCL on CUDA, gloo on CPU); a plain process gets the
    single-process context. A gloo group with a long timeout serves `barrier` (see BARRIER_TIMEOUT)."""
    launch = rendezvous(env)
    if launch is None:
        return DistContext()
    if launch.rank >= launch.world or launch.local_rank >= launch.world:
        raise Mtl3dError(f"rank {launch.rank} / local rank {launch.local_rank} outside a world of {launch.world}")
    if not dist.is_initialized():
        init_method = None if launch.address is None else f"tcp://{launch.address}:{launch.port}"
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", init_method=init_method,
                                rank=launch.rank, world_size=launch.world)
    group = dist.new_group(backend="gloo", timeout=BARRIER_TIMEOUT)
    return DistContext(launch.rank, launch.world, device_slot(launch.local_rank, device_type), True, group)


def device_slot(local_rank: int, device_type: str) -> int:
    """The visible GPU a process of this local rank uses: itself when the node's GPUs are all visible (torchrun,
    srun --gpus-per-node), 0 when SLURM shows each task only its own (srun --gpus-per-task=1)."""
    if device_type != "cuda":
        return local_rank
    return local_rank % max(1, torch.cuda.device_count())


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier(group=context.barrier_group)


def shutdown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
