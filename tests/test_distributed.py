"""Rank discovery from torchrun's and SLURM's variables, and two SLURM-launched processes training together (gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mtl3dcli.engine import distributed
from mtl3dcli.engine.distributed import Rendezvous, first_host, rendezvous
from mtl3dcli.errors import Mtl3dError

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
SLURM = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODELIST": "gpu[07-09,12],cpu3",
         "SLURM_JOB_ID": "123456"}


@pytest.fixture
def no_scontrol(monkeypatch):
    monkeypatch.setattr(distributed.shutil, "which", lambda name: None)


def test_a_plain_process_is_not_distributed():
    assert rendezvous({}) is None
    assert rendezvous({"RANK": "0", "WORLD_SIZE": "1"}) is None  # set by hand: one process, no group
    assert rendezvous({**SLURM, "SLURM_NTASKS": "1"}) is None  # a one-task job, or its batch script


def test_torchrun_variables_win_and_one_torchrun_process_joins_a_group():
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "5"}
    assert rendezvous({**SLURM, **torchrun}) == Rendezvous(1, 2, 1)
    single = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "5",
              "TORCHELASTIC_RUN_ID": "x"}
    assert rendezvous(single) == Rendezvous(0, 1, 0)


def test_slurm_variables_give_rank_world_local_rank_and_rank_zeros_host(no_scontrol):
    assert rendezvous(SLURM) == Rendezvous(3, 8, 1, "gpu07", 29500 + 456)
    assert rendezvous({**SLURM, "MASTER_ADDR": "head", "MASTER_PORT": "4242"}) == Rendezvous(3, 8, 1, "head", 4242)
    step = {**SLURM, "SLURM_STEP_NODELIST": "n[3-4]"}  # the step's own nodes come first
    assert rendezvous(step).address == "n3"


@pytest.mark.parametrize("missing", ["SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NODELIST"])
def test_a_slurm_launch_missing_a_variable_is_one_clear_error(missing):
    env = {key: value for key, value in SLURM.items() if key != missing}
    with pytest.raises(Mtl3dError, match=missing):
        rendezvous(env)


@pytest.mark.parametrize("env, match", [({**SLURM, "SLURM_PROCID": "x"}, "SLURM_PROCID='x'"),
                                        ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR and MASTER_PORT")])
def test_bad_launch_variables_are_named(env, match):
    with pytest.raises(Mtl3dError, match=match):
        rendezvous(env)


@pytest.mark.parametrize("nodelist, host", [("node01", "node01"), ("a[1-3]", "a1"), ("gpu[007-009],cpu1", "gpu007"),
                                            ("host-1,host-2", "host-1"), ("n[3,5-7]", "n3"), ("x[10]", "x10")])
def test_first_host_of_a_node_list(nodelist, host, no_scontrol):
    assert first_host(nodelist) == host


def test_first_host_asks_scontrol_where_slurm_is_installed(tmp_path, monkeypatch):
    scontrol = tmp_path / "scontrol"
    scontrol.write_text("#!/bin/sh\n[ \"$1 $2\" = \"show hostnames\" ] && printf 'alpha\\nbeta\\n'\n")
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert first_host("whatever[1-2]") == "alpha"


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in LAUNCH_VARIABLES
           and not key.startswith("SLURM_")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", **extra}


@pytest.mark.slow
def test_train_in_a_slurm_step_missing_a_variable_exits_with_one_line(tmp_path):
    env = _env(SLURM_NTASKS="2", SLURM_PROCID="0", SLURM_NODELIST="n1")
    done = subprocess.run([sys.executable, "-m", "mtl3dcli", "train", "--out", str(tmp_path / "run")], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "SLURM_LOCALID" in lines[0], done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_slurm_tasks_train_together_with_gloo(tmp_path, tiny_dataset):
    """Two processes started as srun starts them (only SLURM's variables, a node list, a port): one run, ranks in
    sync, rank 0 writes it."""
    run_dir, port = tmp_path / "slurm", str(_free_port())
    command = [sys.executable, str(ROOT / "tests" / "ddp_worker.py"), str(tiny_dataset), str(run_dir),
               "data.batch_size=1", "train.device=cpu"]
    processes = [subprocess.Popen(command, env=_env(SLURM_PROCID=str(rank), SLURM_NTASKS="2",
                                                    SLURM_LOCALID=str(rank), SLURM_NODELIST="localhost",
                                                    SLURM_JOB_ID="77", MASTER_PORT=port),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outputs = [process.communicate(timeout=240) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-4000:]
    ranks = [load_file(str(run_dir / f"rank{rank}.safetensors")) for rank in range(2)]
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]) > 0
    assert all((ranks[0][name] - ranks[1][name]).abs().max().item() == 0.0 for name in ranks[0])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records if "loss" in record] == [1, 2, 3, 4]


def test_each_task_uses_the_gpu_slurm_shows_it(monkeypatch):
    monkeypatch.setattr(distributed.torch.cuda, "device_count", lambda: 4)
    assert [distributed.device_slot(rank, "cuda") for rank in range(4)] == [0, 1, 2, 3]  # all of a node's GPUs
    monkeypatch.setattr(distributed.torch.cuda, "device_count", lambda: 1)
    assert [distributed.device_slot(rank, "cuda") for rank in range(4)] == [0, 0, 0, 0]  # --gpus-per-task=1
    assert distributed.device_slot(3, "cpu") == 3
