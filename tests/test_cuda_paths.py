"""Code paths that otherwise only run on CUDA, exercised on the CPU: resuming into a mixed-precision trainer, and
the process group a one-process torchrun launch joins (NCCL there, gloo here)."""

from __future__ import annotations

import io
import socket

import torch
import torch.distributed as dist
from rich.console import Console

from conftest import tiny_config
from mtl3dcli.engine.distributed import barrier, init_distributed, shutdown
from mtl3dcli.engine.trainer import Trainer, train


def test_a_run_trained_without_amp_resumes_into_a_mixed_precision_trainer(tmp_path, tiny_dataset):
    """A CPU run's checkpoint holds an empty scaler state; a CUDA resume (GradScaler enabled) starts it afresh."""
    config = tiny_config(tiny_dataset, "train.steps=2", "train.save_every=2", "train.eval_every=2",
                         "train.device=cpu")
    train(config, tmp_path / "run", console=Console(file=io.StringIO()))
    trainer = Trainer(config, tmp_path / "run", console=Console(file=io.StringIO()))
    trainer.scaler = torch.amp.GradScaler("cpu", enabled=True)  # what AMP on CUDA builds
    trainer.resume()
    assert trainer.step_count == 2 and trainer.scaler.is_enabled()


def test_a_one_process_launch_joins_a_group_whose_barrier_waits_on_gloo(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "TORCHELASTIC_RUN_ID": "test"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    context = init_distributed("cpu")
    try:
        assert context.enabled and context.main and (context.rank, context.world) == (0, 1)
        assert dist.get_backend(context.barrier_group) == "gloo"
        barrier(context)
    finally:
        shutdown(context)
    assert not dist.is_initialized()
