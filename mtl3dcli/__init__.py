"""mtl3d: multi-task dense prediction with a training-only 3D-aware (tri-plane) regularizer.

The names below are the stable library surface (docs/library.md); every other module is internal and may change.
They are imported on first use, so `import mtl3dcli` (and the CLI's start-up) stays free of torch.

    regularizer   TriplaneRegularizer, TaskSpec, RegularizerOutput, PartnerView
    hosts         Host, HostOutput, HostSpec, register_host
    tasks, data   Task, get_task, DatasetMeta, MultiTaskDataset, train_transform, eval_transform
    metrics       Meter, delta_m
    errors        Mtl3dError
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "TriplaneRegularizer": "mtl3dcli.api", "TaskSpec": "mtl3dcli.api", "RegularizerOutput": "mtl3dcli.api",
    "PartnerView": "mtl3dcli.models.crossview",
    "Host": "mtl3dcli.models.hosts", "HostOutput": "mtl3dcli.models.hosts", "HostSpec": "mtl3dcli.models.hosts",
    "register_host": "mtl3dcli.models.hosts",
    "Task": "mtl3dcli.tasks", "get_task": "mtl3dcli.tasks", "DatasetMeta": "mtl3dcli.meta",
    "MultiTaskDataset": "mtl3dcli.data.dataset", "train_transform": "mtl3dcli.data.transforms",
    "eval_transform": "mtl3dcli.data.transforms",
    "Meter": "mtl3dcli.metrics", "delta_m": "mtl3dcli.metrics",
    "Mtl3dError": "mtl3dcli.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mtl3dcli' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
