"""One torchrun worker for tests/test_ddp.py: trains the tiny config, then saves this rank's parameters.

Usage: torchrun --standalone --nproc_per_node N tests/ddp_worker.py DATA_ROOT RUN_DIR [section.key=value ...]
(or one process per task with SLURM's variables set, as tests/test_distributed.py starts them)
The engine writes checkpoints on rank 0 only, so every rank writes RUN_DIR/rank<r>.safetensors itself (the model is
captured by wrapping `build_model`), letting the test compare the ranks' weights.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from conftest import tiny_config
from mtl3dcli.engine import trainer as train_module


def main(root: str, run_dir: str, *extra: str) -> None:
    torch.set_num_threads(1)
    built = []
    build_model = train_module.build_model

    def capture(*args, **kwargs):
        built.append(build_model(*args, **kwargs))
        return built[-1]

    train_module.build_model = capture
    train_module.train(tiny_config(Path(root), *extra), Path(run_dir))
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))  # torchrun or srun
    params = {name: p.detach().contiguous() for name, p in built[0].named_parameters()}
    save_file(params, os.path.join(run_dir, f"rank{rank}.safetensors"))


if __name__ == "__main__":
    main(*sys.argv[1:])
