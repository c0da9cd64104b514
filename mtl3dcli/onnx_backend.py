"""ONNX files written by `mtl3d export`, and ONNX Runtime behind `InferenceSession` (no torch model is built).

An exported file holds the host network only: input "image", float32 RGB in [0, 1], NCHW (the ImageNet
normalization is inside the graph); one raw output per task, named by the task, at the input resolution (what
`Task.activate` takes). Its metadata (`metadata_props`) carries everything `predict` and `evaluate` need:

    format          "mtl3d-onnx"
    config, meta    the weights' config and dataset meta as JSON (as in the safetensors metadata)
    tasks           the output names in order; classes, palettes: per class task
    input           name, layout, channels, value range and the normalization the graph applies
    size_divisor    input sides must be multiples of it (the session zero-pads other sizes and crops back)
    input_size      "HxW" of a fixed-size export, "dynamic" otherwise
    step, metrics, source, mtl3d_version

`OnnxModel` stands in for `MTL3DModel` in an `InferenceSession`: its `net` is called like a host (image tensor ->
`HostOutput`), so preparation, padding, upsampling, activation and the meters are the same code as for PyTorch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtl3dcli import __version__
from mtl3dcli.config import Config
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.models.build import resolve_tasks
from mtl3dcli.models.hosts import HostOutput
from mtl3dcli.models.layers import IMAGENET_MEAN, IMAGENET_STD
from mtl3dcli.tasks import Task
from mtl3dcli.weights import Weights, read_metadata

FORMAT = "mtl3d-onnx"
INPUT = "image"
INSTALL_HINT = "pip install 'mtl3d[export]'"


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise Mtl3dError(f"ONNX files need onnxruntime, which is not installed ({INSTALL_HINT})") from None
    return onnxruntime


def export_metadata(weights: Weights, source: str, size_divisor: int, input_size: tuple[int, int] | None,
                    channels: dict[str, int]) -> dict[str, str]:
    """The metadata an exported file carries (see the module docstring); `channels`: {task: output channels}."""
    meta = weights.meta
    classes = {task: names for task, names in meta.classes.items() if task in channels}
    return {
        "format": FORMAT, "mtl3d_version": __version__, "source": source, "step": str(weights.step),
        "config": json.dumps(weights.config.to_dict()), "meta": json.dumps(meta.to_json()),
        "metrics": json.dumps(weights.metrics), "tasks": json.dumps(list(channels)),
        "channels": json.dumps(channels), "classes": json.dumps(classes),
        "palettes": json.dumps({task: meta.palette(task) for task in classes}),
        "input": json.dumps({"name": INPUT, "layout": "NCHW", "channels": "RGB", "dtype": "float32",
                             "range": [0.0, 1.0], "normalization": "inside the graph: (image - mean) / std",
                             "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}),
        "size_divisor": str(size_divisor),
        "input_size": f"{input_size[0]}x{input_size[1]}" if input_size else "dynamic",
    }


@dataclass
class OnnxWeights:
    """What an exported file describes, and an ONNX Runtime session on the CPU that runs it."""

    path: Path
    session: Any  # onnxruntime.InferenceSession
    config: Config
    meta: DatasetMeta
    tasks: list[str]
    size_divisor: int
    step: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    has_regularizer = False  # an export never holds the regularizer


def ort_session(path: Path, providers: list[str]) -> Any:
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ONNX Runtime's warnings are not the user's business
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own types for unreadable or invalid models
        raise Mtl3dError(f"{path} is not a readable ONNX model ({str(exc).splitlines()[0]})") from None


def load_onnx(path: str | Path) -> OnnxWeights:
    """Open an exported file on the CPU; a file that is not ONNX or not an mtl3d export is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise Mtl3dError(f"ONNX file not found: {path}")
    session = ort_session(path, ["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    if metadata.get("format") != FORMAT:
        raise Mtl3dError(f"{path} is an ONNX model but not one `mtl3d export` wrote (no mtl3d metadata)")
    config, meta, step, metrics = read_metadata(metadata, path)
    try:
        tasks, divisor = list(json.loads(metadata["tasks"])), int(metadata["size_divisor"])
    except (KeyError, TypeError, ValueError) as exc:
        raise Mtl3dError(f"{path}: unsupported or damaged mtl3d metadata ({exc})") from None
    names = [output.name for output in session.get_outputs()]
    if names != tasks:
        raise Mtl3dError(f"{path}: outputs {names} do not match the tasks in its metadata {tasks}")
    return OnnxWeights(path, session, config, meta, tasks, divisor, step, metrics)


def providers_for(device: torch.device) -> list[str]:
    """ONNX Runtime providers for a resolved device; CUDA needs the onnxruntime-gpu build."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in import_onnxruntime().get_available_providers():
        raise Mtl3dError("this onnxruntime has no CUDA provider (install onnxruntime-gpu, or use --device cpu)")
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]


class OnnxHost:
    """An ONNX Runtime session called like a host: image (B, 3, H, W) in [0, 1] -> `HostOutput` with every task's
    raw output (no features: an export has no regularizer to feed). A fixed-size export runs one image at a time
    when its batch is fixed, and resizes inputs of another size to its own and the outputs back."""

    def __init__(self, session: Any, tasks: list[str], size_divisor: int):
        self.session, self.tasks = session, tasks
        batch, _, height, width = session.get_inputs()[0].shape
        self.batch = batch if isinstance(batch, int) else None
        fixed = isinstance(height, int) and isinstance(width, int)
        self.input_size = (height, width) if fixed else None
        self.size_divisor = 1 if fixed else size_divisor

    def _run(self, image: np.ndarray) -> list[np.ndarray]:
        if self.batch is None or self.batch == len(image):
            return self.session.run(self.tasks, {INPUT: image})
        if self.batch != 1:
            raise Mtl3dError(f"this export takes batches of exactly {self.batch} images; export with --dynamic")
        runs = [self.session.run(self.tasks, {INPUT: image[i:i + 1]}) for i in range(len(image))]
        return [np.concatenate(parts) for parts in zip(*runs)]

    def __call__(self, image: torch.Tensor) -> HostOutput:
        size = tuple(image.shape[-2:])
        resized = self.input_size is not None and size != self.input_size
        if resized:
            image = F.interpolate(image, size=self.input_size, mode="bilinear", align_corners=False)
        arrays = self._run(np.ascontiguousarray(image.float().cpu().numpy()))
        outputs = {name: torch.from_numpy(array).to(image.device) for name, array in zip(self.tasks, arrays)}
        if resized:
            outputs = {name: F.interpolate(out, size=size, mode="bilinear", align_corners=False)
                       for name, out in outputs.items()}
        return HostOutput(outputs, image.new_zeros(len(image), 0, 1, 1))


class OnnxModel:
    """Stands in for `MTL3DModel` in an `InferenceSession`: `net`, `tasks`, `meta`, and no regularizer."""

    regularizer = None

    def __init__(self, net: OnnxHost, tasks: list[Task], meta: DatasetMeta):
        self.net, self.tasks, self.meta = net, tasks, meta

    def to(self, device: torch.device) -> OnnxModel:
        return self  # the ONNX Runtime session already runs on its provider's device

    def eval(self) -> OnnxModel:
        return self


def onnx_model(weights: OnnxWeights, device: torch.device) -> OnnxModel:
    """The model of an exported file on `device` (a new session only when it is not the CPU)."""
    session = weights.session if device.type == "cpu" else ort_session(weights.path, providers_for(device))
    by_name = {task.name: task for task in resolve_tasks(weights.config)}
    return OnnxModel(OnnxHost(session, weights.tasks, weights.size_divisor), [by_name[t] for t in weights.tasks],
                     weights.meta)
