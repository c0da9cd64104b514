"""Two-process data-parallel training on the CPU (gloo) under torchrun: the run completes and the ranks agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mtl3dcli.weights import load_weights

WORKER = Path(__file__).parent / "ddp_worker.py"


@pytest.mark.slow
def test_two_process_cpu_training_keeps_ranks_in_sync(tmp_path, tiny_dataset):
    try:
        import torch.distributed.run  # noqa: F401
    except ImportError:
        pytest.fail("torch.distributed.run (torchrun) is missing from this torch build; DDP cannot be tested")
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), str(tiny_dataset), str(run_dir), "data.batch_size=1", "train.device=cpu"]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun did not finish in 120 s:\n{(exc.stderr or b'')[-3000:]}")
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stderr[-4000:]}"

    ranks = [load_file(str(run_dir / f"rank{r}.safetensors")) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]) > 0
    for name, value in ranks[0].items():
        assert (value - ranks[1][name]).abs().max().item() == 0.0, f"ranks disagree on {name}"
    # rank 0 alone wrote the run: 4 steps logged once each, and its checkpoint holds the synchronized parameters
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    weights = load_weights(run_dir / "weights" / "last.safetensors")
    assert weights.step == 4
    for name, value in ranks[0].items():
        assert (weights.state[name] - value).abs().max().item() == 0.0, name
