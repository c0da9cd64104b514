"""Evaluation loop: stream a split through the inference network (and optionally the regularizer's renders)
into each task's metric meter. Metrics are pooled over the whole split, as the standard MTL codebases define them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from mtl3dcli.models.build import MTL3DModel
from mtl3dcli.models.layers import upsample_maps
from mtl3dcli.tasks import Task


def move_batch(batch: Any, device: torch.device) -> Any:
    """Tensors (nested in dicts) to `device`; other values unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_batch(v, device) for k, v in batch.items()}
    return batch


@torch.no_grad()
def evaluate(model: MTL3DModel, batches: Iterable[dict[str, Any]], device: torch.device, *, rendered: bool = False,
             amp: bool = False, metric_options: dict[str, Any] | None = None, tasks: list[Task] | None = None,
             on_batch: Callable[[], None] | None = None) -> dict[str, dict[str, float]]:
    """Returns {task: {metric: value}} for `tasks` (default all of the model's); with `rendered`, also
    {"render/<task>": ...} for the regularizer's maps (rendered at its training resolution with midpoint samples,
    upsampled to the label size)."""
    was_training = model.training
    model.eval()
    meta = model.meta
    wanted = {t.name for t in (tasks or model.tasks)}
    tasks = [t for t in model.tasks if t.name in wanted]
    meters = {t.name: t.metric(meta, **(metric_options or {})) for t in tasks}
    reg = model.regularizer if rendered else None
    render_tasks = [t for t in reg.tasks if t.name in wanted] if reg is not None else []
    meters.update({f"render/{t.name}": t.metric(meta, **(metric_options or {})) for t in render_tasks})
    autocast = torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda")
    for batch in batches:
        batch = move_batch(batch, device)
        image = batch["image"]
        size = tuple(image.shape[-2:])
        with autocast:
            out = model.net(image)
        for t in tasks:
            meters[t.name].update(t.activate(out.outputs[t.name].float()), batch["labels"][t.name],
                                  batch["valid"][t.name])
        if reg is not None:
            renders = reg.render(reg.planes(out.features.float()), reg.view_camera(batch["K"], size), stratified=False)
            up = upsample_maps({t.name: renders.tasks[t.name] for t in render_tasks}, size)
            for t in render_tasks:
                meters[f"render/{t.name}"].update(t.activate(up[t.name]), batch["labels"][t.name],
                                                  batch["valid"][t.name])
        if on_batch is not None:
            on_batch()
    model.train(was_training)
    return {name: meter.compute() for name, meter in meters.items()}
