"""Random inputs for the benchmarks: a dataset description and a labelled batch for any tasks, without a dataset.

Labels are made through the task registry (random raw outputs -> `Task.activate` -> canonical array -> tensor), so
every task, present or future, gets a label of the right kind and shape with no per-task code here.
"""

from __future__ import annotations

import torch

from mtl3dcli.data.loader import move_batch
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.tasks import Task


def bench_meta(tasks: list[Task], classes: int = 13) -> DatasetMeta:
    """A dataset description naming `classes` classes for every task (only class tasks read them)."""
    return DatasetMeta(name="bench", tasks=[t.name for t in tasks],
                       classes={t.name: [f"c{i}" for i in range(classes)] for t in tasks}, depth_range=(0.0, 10.0))


def fake_batch(tasks: list[Task], meta: DatasetMeta, batch: int, size: tuple[int, int],
               device: torch.device) -> dict:
    """image, labels, valid, K (a 60-degree-ish pinhole) and identity poses for `batch` random samples."""
    generator = torch.Generator().manual_seed(0)
    h, w = size
    labels, valid = {}, {}
    for task in tasks:
        raw = torch.randn(batch, task.channels(meta), h, w, generator=generator)
        label = torch.stack([task.to_tensor(task.to_numpy(p)) for p in task.activate(raw)])
        labels[task.name], valid[task.name] = label, task.valid(label)
    K = torch.tensor([[w * 0.8, 0, w / 2], [0, w * 0.8, h / 2], [0, 0, 1.0]]).expand(batch, 3, 3).contiguous()
    return move_batch({"image": torch.rand(batch, 3, h, w, generator=generator), "labels": labels, "valid": valid,
                       "K": K, "pose": torch.eye(4).expand(batch, 4, 4).contiguous()}, device)
