"""One inference session: weights -> model on a device -> prepared images -> task outputs, renders and metrics.

`evaluate`, `predict`, `render-views` and the Trainer's validation all go through `InferenceSession`, so loading,
device choice, task selection, input preparation and mixed precision are written once. The session never builds the
regularizer unless asked (`with_regularizer`, for rendered maps and novel views). A `.onnx` file from `mtl3d export`
runs through ONNX Runtime behind the same session (`onnx_backend.OnnxModel`): no torch model is built for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtl3dcli.cpu import tune_cpu_process
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.metrics import Meter
from mtl3dcli.metrics.consistency import GROUP as CONSISTENCY, ConsistencyMeter
from mtl3dcli.models.build import MTL3DModel, model_from_weights
from mtl3dcli.models.hosts import HostOutput
from mtl3dcli.models.layers import upsample_maps
from mtl3dcli.onnx_backend import OnnxModel, OnnxWeights, load_onnx, onnx_model
from mtl3dcli.tasks import Task, parse_tasks
from mtl3dcli.weights import Weights, load_weights



def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto" -> this process's GPU when CUDA is available, else the CPU; "cuda" -> cuda:<local_rank>."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise Mtl3dError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Mtl3dError(f"device {name!r} requested but CUDA is not available here (use --device cpu)")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def read_weights(path: str | Path) -> Weights | OnnxWeights:
    """A weights file of either kind: an ONNX export (`.onnx`) or self-describing safetensors."""
    return load_onnx(path) if Path(path).suffix.lower() == ".onnx" else load_weights(path)


def select_tasks(model: MTL3DModel | OnnxModel, spec: str | None) -> list[Task]:
    """The model's tasks named in `spec` ("seg,depth"; None = all); a task the model lacks is a clear error."""
    if not spec:
        return list(model.tasks)
    have = {t.name: t for t in model.tasks}
    wanted = parse_tasks(spec)
    missing = [t.name for t in wanted if t.name not in have]
    if missing:
        raise Mtl3dError(f"the model has no {', '.join(missing)} head (it predicts: {', '.join(have)})")
    return [have[t.name] for t in wanted]


def inference_size(height: int, width: int, train_size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """Keep the aspect ratio, match the training pixel count, round each side to a multiple of `multiple` (the
    host's `size_divisor`, so the network needs no padding)."""
    scale = math.sqrt(train_size[0] * train_size[1] / (height * width))
    return (max(multiple, round(height * scale / multiple) * multiple),
            max(multiple, round(width * scale / multiple) * multiple))


@dataclass
class InferenceSession:
    """A model in eval mode on `device`, the tasks to report, and the input size it was trained for."""

    model: MTL3DModel | OnnxModel
    device: torch.device
    tasks: list[Task]
    train_size: tuple[int, int]
    amp: bool = False  # autocast on CUDA
    input_size: tuple[int, int] | None = None  # the only size the network takes (a fixed-size ONNX export)

    @classmethod
    def from_weights(cls, weights: Path | Weights | OnnxWeights, *, device: str = "auto", tasks: str | None = None,
                     with_regularizer: bool = False) -> InferenceSession:
        """Load a weights file (or already loaded `Weights` / `OnnxWeights`) onto a device; `tasks` selects a subset
        ("seg,depth"). An ONNX export has no regularizer: `with_regularizer` is a clear error for it."""
        loaded = weights if isinstance(weights, (Weights, OnnxWeights)) else read_weights(weights)
        if isinstance(loaded, OnnxWeights):
            return cls.from_onnx(loaded, device=device, tasks=tasks, with_regularizer=with_regularizer)
        model = model_from_weights(loaded, with_regularizer=with_regularizer)
        torch_device = resolve_device(device)
        if torch_device.type == "cpu":
            tune_cpu_process()
        config = loaded.config
        return cls.from_model(model, torch_device, select_tasks(model, tasks),
                              tuple(config.data.eval_size or config.data.size), amp=config.train.amp)

    @classmethod
    def from_onnx(cls, weights: OnnxWeights, *, device: str = "auto", tasks: str | None = None,
                  with_regularizer: bool = False) -> InferenceSession:
        """An exported network run by ONNX Runtime (on `device`'s provider); the rest of the session is unchanged."""
        if with_regularizer:
            raise Mtl3dError(f"{weights.path} is an ONNX export of the host network only: rendered maps and "
                             "render-views need the regularizer, in the .safetensors weights it was exported from")
        torch_device = resolve_device(device)
        model = onnx_model(weights, torch_device)
        config = weights.config
        return cls(model, torch_device, select_tasks(model, tasks), tuple(config.data.eval_size or config.data.size),
                   input_size=model.net.input_size)

    @classmethod
    def from_model(cls, model: MTL3DModel, device: torch.device, tasks: list[Task] | None = None,
                   train_size: tuple[int, int] = (0, 0), amp: bool = False) -> InferenceSession:
        return cls(model.to(device).eval(), device, list(tasks or model.tasks), train_size,
                   amp and device.type == "cuda")

    def prepare(self, images: list[np.ndarray]) -> torch.Tensor:
        """uint8 images of one size (H, W, 3) -> (B, 3, h, w) in [0, 1] at `inference_size` (antialiased
        bilinear), or at `input_size` when the network takes only that."""
        height, width = images[0].shape[:2]
        tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255.0).to(self.device)
        size = self.input_size or inference_size(height, width, self.train_size, self.model.net.size_divisor)
        return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> HostOutput:
        """The host network on a batch (B, 3, H, W) in [0, 1], in autocast on CUDA when the run used AMP. Sides that
        are not multiples of the host's `size_divisor` are zero-padded at the bottom/right and the outputs and
        features cropped back, so any evaluation size works."""
        height, width = image.shape[-2:]
        divisor = self.model.net.size_divisor
        pad_h, pad_w = -height % divisor, -width % divisor
        image = F.pad(image.to(self.device), (0, pad_w, 0, pad_h))
        with torch.autocast(device_type=self.device.type, enabled=self.amp):
            out = self.model.net(image)
        if not pad_h and not pad_w:
            return out
        fh, fw = out.features.shape[-2:]
        features = out.features[..., :math.ceil(fh * height / image.shape[-2]), :math.ceil(fw * width / image.shape[-1])]
        return HostOutput({k: v[..., :height, :width] for k, v in out.outputs.items()}, features, out.aux)

    @torch.no_grad()
    def predict(self, images: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """uint8 images of one size (H, W, 3) -> {task: prediction (B, ...) at (H, W)} as `Task.activate` gives them;
        raw outputs are resized to the input resolution before activation."""
        height, width = images[0].shape[:2]
        outputs = upsample_maps(self.forward(self.prepare(images)).outputs, (height, width))
        return {t.name: t.activate(outputs[t.name].float()) for t in self.tasks}

    def meters(self, metric_options: dict[str, Any], rendered: bool = False) -> dict[str, Meter]:
        """A fresh meter per reported task, plus "render/<task>" meters for the regularizer's maps if `rendered`."""
        meta = self.model.meta
        meters = {t.name: t.metric(meta, **metric_options) for t in self.tasks}
        if rendered:
            meters.update({f"render/{t.name}": t.metric(meta, **metric_options) for t in self.render_tasks()})
        return meters

    def render_tasks(self) -> list[Task]:
        if self.model.regularizer is None:
            raise Mtl3dError("rendered maps need weights trained with the regularizer")
        wanted = {t.name for t in self.tasks}
        return [t for t in self.model.regularizer.tasks if t.name in wanted]

    def protocols(self, metric_options: dict[str, Any], slow_subset: set[int] | None = None,
                  consistency: bool = False) -> dict[str, str]:
        """{task: the metric's definition}, noting a validation subset for slow metrics."""
        out = {}
        for name, meter in self.meters(metric_options).items():
            subset = f"; on {len(slow_subset)} fixed images of the split" if meter.slow and slow_subset else ""
            out[name] = meter.protocol + subset
        if consistency:
            out[CONSISTENCY] = self.consistency_meter().protocol
        return out

    def consistency_meter(self) -> ConsistencyMeter:
        """Multi-view consistency of the reported tasks that have a consistency kind; needs a depth task."""
        kinds = {t.name: t.consistency for t in self.tasks if t.consistency}
        depth = [name for name, kind in kinds.items() if kind == "depth"]
        if not depth:
            raise Mtl3dError("multi-view consistency needs depth labels (the task that gives the geometry)")
        return ConsistencyMeter(kinds, depth[0])

    @torch.no_grad()
    def evaluate(self, batches: Iterable[dict[str, Any]], *, rendered: bool = False,
                 metric_options: dict[str, Any] | None = None, slow_subset: set[int] | None = None,
                 consistency: bool = False,
                 on_batch: Callable[[int], None] | None = None) -> dict[str, dict[str, float]]:
        """Stream labelled batches into each task's meter: {task: {metric: value}}; with `rendered`, also
        {"render/<task>": ...} for the regularizer's maps (its training resolution, midpoint samples, upsampled to
        the label size); with `consistency` (a split with cameras), also {"consistency": ...} (see
        metrics.consistency). Metrics are pooled over the whole split, as the standard MTL codebases define them;
        slow meters (boundaries) only see the samples whose "index" is in `slow_subset` when one is given.
        `on_batch(images)` is called after each batch (progress)."""
        meters = self.meters(metric_options or {}, rendered)
        render_tasks = self.render_tasks() if rendered else []
        views = self.consistency_meter() if consistency else None
        try:
            for batch in batches:
                self._score_batch(batch, meters, render_tasks, views, slow_subset)
                if on_batch is not None:
                    on_batch(len(batch["image"]))
            results = {name: meter.compute() for name, meter in meters.items()}
        finally:  # however the loop ends (Ctrl-C included): no worker pool left behind
            for meter in meters.values():
                meter.close()
        if views is not None:
            results[CONSISTENCY] = views.compute()
        return results

    def _score_batch(self, batch: dict[str, Any], meters: dict[str, Meter], render_tasks: list[Task],
                     views: ConsistencyMeter | None, slow_subset: set[int] | None) -> None:
        """One labelled batch into the meters (`evaluate`)."""
        image, labels, valid = batch["image"].to(self.device), batch["labels"], batch["valid"]
        size = tuple(image.shape[-2:])
        out = self.forward(image)
        predictions = {t.name: t.activate(out.outputs[t.name].float()) for t in self.tasks}
        if render_tasks:
            renders = self.model.render(out.features.float(), batch["K"].to(self.device), size, stratified=False)
            up = upsample_maps({t.name: renders.tasks[t.name] for t in render_tasks}, size)
            predictions.update({f"render/{t.name}": t.activate(up[t.name]) for t in render_tasks})
        if views is not None:
            views.update(list(batch["scene"]), {t.name: predictions[t.name] for t in self.tasks}, labels, valid,
                         batch["K"], batch["pose"])
        keep = None if slow_subset is None else torch.tensor([int(i) in slow_subset for i in batch["index"]])
        for name, meter in meters.items():
            task = name.split("/")[-1]
            if meter.slow and keep is not None:
                if keep.any():
                    meter.update(predictions[name][keep.to(self.device)], labels[task][keep], valid[task][keep])
            else:
                meter.update(predictions[name], labels[task], valid[task])
