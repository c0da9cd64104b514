"""The task registry: everything task-specific lives here and nowhere else.

A `Task` knows its on-disk label format (folder, suffix, read/write), how its label becomes a training tensor and
which pixels are valid, how geometric transforms treat it (interpolation, padding fill, sign flips on a mirror),
its number of output channels, how a raw network output becomes a prediction, its loss, its metric and how to
colourize a prediction. The rest of the code loops over `Task` objects and never switches on task names.

Canonical arrays (what `read` returns and `write` takes):
  class tasks (semseg, parts)  uint8 (H, W) class ids, 255 = ignore
  depth                        float32 (H, W) z-depth in metres, 0 = invalid
  normals                      float32 (H, W, 3) unit vectors in the camera frame (x right, y down, z forward),
                               zero vector = invalid
  binary tasks (edge, saliency) float32 (H, W) in [0, 1]
Label tensors (what `to_tensor` returns): class tasks int64 (H, W); all others float32 (C, H, W).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from mtl3dcli import derive, fileio, losses
from mtl3dcli.colors import colormap, default_palette
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.meta import IGNORE_INDEX, DatasetMeta

if TYPE_CHECKING:
    from mtl3dcli.metrics import Meter



@dataclass(frozen=True)
class Derivation:
    """How a task's label follows from other labels of the same sample, for datasets that lack it (`preprocess`).

    compute({source task: canonical array}, K (3, 3) or None) -> this task's canonical array."""

    sources: tuple[str, ...]
    needs_intrinsics: bool
    compute: Callable[[dict[str, np.ndarray], np.ndarray | None], np.ndarray]


@dataclass(frozen=True)
class Task:
    """Base class; subclasses implement the label format and the prediction semantics."""

    name: str
    title: str
    aliases: tuple[str, ...]
    folder: str
    suffix: str
    loss_weight: float  # default weight in the multi-task sum (the standard MTL codebases' values)
    primary_metric: str
    higher_is_better: bool

    interpolation: ClassVar[str] = "nearest-exact"  # labels are never blended across object boundaries
    fill: ClassVar[float] = 0.0  # value of padded label pixels (they are also masked out by the region mask)
    flip_signs: ClassVar[tuple[float, ...] | None] = None  # per-channel sign change under a horizontal mirror
    camera_frame_vector: ClassVar[bool] = False  # a 3-vector in the camera frame: rotates with a change of camera
    rendered_as_depth: ClassVar[bool] = False  # the regularizer renders it as expected ray depth, not with an MLP
    derivation: ClassVar[Derivation | None] = None  # how to compute the label from others when a dataset lacks it
    consistency: ClassVar[str | None] = None  # how two views' predictions must agree (metrics.consistency KINDS)

    # --- on disk ---------------------------------------------------------------------------------------------
    def path(self, root: str | os.PathLike, sample_id: str) -> str:
        return os.path.join(root, self.folder, sample_id + self.suffix)

    def read(self, path: str | os.PathLike) -> np.ndarray:
        raise NotImplementedError

    def write(self, path: str | os.PathLike, array: np.ndarray) -> None:
        raise NotImplementedError

    # --- tensors -----------------------------------------------------------------------------------------------
    def channels(self, meta: DatasetMeta) -> int:
        raise NotImplementedError

    def to_tensor(self, array: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def valid(self, label: torch.Tensor) -> torch.Tensor:
        """Boolean mask (..., H, W) of pixels that carry a label (before the transform's region mask)."""
        raise NotImplementedError

    def resize(self, label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Resize a label tensor (H, W) or (C, H, W) to `size` = (H', W') without mixing values."""
        flat = label[None, None] if label.ndim == 2 else label[None]
        out = F.interpolate(flat.float(), size=size, mode=self.interpolation)
        out = out[0, 0] if label.ndim == 2 else out[0]
        return out.to(label.dtype)

    def hflip(self, label: torch.Tensor) -> torch.Tensor:
        """Mirror left-right; vector-valued labels change sign where the mirror flips their axis."""
        out = label.flip(-1)
        if self.flip_signs is not None:
            out.mul_(torch.tensor(self.flip_signs, dtype=out.dtype).view(-1, 1, 1))
        return out

    # --- predictions -------------------------------------------------------------------------------------------
    def activate(self, output: torch.Tensor) -> torch.Tensor:
        """Raw head output (B, C, H, W) -> prediction in label units (class ids, metres, unit vectors, probs)."""
        raise NotImplementedError

    def loss(self, output: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metric(self, meta: DatasetMeta, **options: Any) -> Meter:
        """A fresh streaming meter; `options` are evaluation settings (e.g. edge_thresholds), ignored if unused."""
        raise NotImplementedError

    def colorize(self, prediction: np.ndarray, meta: DatasetMeta | None = None) -> np.ndarray:
        """Prediction for one image (as returned by `activate`, batch dim removed) -> uint8 (H, W, 3)."""
        raise NotImplementedError

    def visualize(self, prediction: np.ndarray, meta: DatasetMeta | None = None) -> np.ndarray:
        """The picture `predict` writes: `colorize`, plus a legend where the colours need one (depth)."""
        return self.colorize(prediction, meta)

    def to_numpy(self, prediction: torch.Tensor) -> np.ndarray:
        """Prediction for one image -> canonical array (what `write` stores)."""
        raise NotImplementedError

    def with_options(self, **options: Any) -> Task:
        """A copy with task options from the config replaced (e.g. `pos_weight` of the boundary loss)."""
        names = {f.name for f in dataclasses.fields(self)} - {f.name for f in dataclasses.fields(Task)}
        unknown = set(options) - names
        if unknown:
            allowed = ", ".join(sorted(names)) or "none"
            raise Mtl3dError(f"unknown option(s) {sorted(unknown)} for task {self.name} (allowed: {allowed})")
        return dataclasses.replace(self, **options)


@dataclass(frozen=True)
class ClassTask(Task):
    """Per-pixel classification (semantic segmentation, human parts)."""

    fill: ClassVar[float] = float(IGNORE_INDEX)
    consistency: ClassVar[str] = "label"

    def read(self, path: str | os.PathLike) -> np.ndarray:
        return fileio.read_image(path, mode="L")

    def write(self, path: str | os.PathLike, array: np.ndarray) -> None:
        fileio.write_image(path, np.asarray(array, dtype=np.uint8))

    def channels(self, meta: DatasetMeta) -> int:
        if self.name not in meta.classes:
            raise Mtl3dError(f"dataset {meta.name!r} has no class names for task {self.name}")
        return len(meta.classes[self.name])

    def to_tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8)).long()

    def valid(self, label: torch.Tensor) -> torch.Tensor:
        return label != IGNORE_INDEX

    def activate(self, output: torch.Tensor) -> torch.Tensor:
        return output.argmax(dim=1)

    def loss(self, output: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return losses.cross_entropy(output, label, valid)

    def metric(self, meta: DatasetMeta, **options: Any) -> Meter:
        from mtl3dcli.metrics import ConfusionMeter

        return ConfusionMeter(meta.classes[self.name])

    def colorize(self, prediction: np.ndarray, meta: DatasetMeta | None = None) -> np.ndarray:
        n = int(prediction.max()) + 1 if prediction.size else 1
        palette = np.asarray(meta.palette(self.name) if meta is not None else default_palette(n), dtype=np.uint8)
        if len(palette) < 256:
            palette = np.concatenate([palette, np.zeros((256 - len(palette), 3), np.uint8)])
        return palette[np.asarray(prediction, dtype=np.int64).clip(0, 255)]

    def to_numpy(self, prediction: torch.Tensor) -> np.ndarray:
        return prediction.cpu().numpy().astype(np.uint8)


@dataclass(frozen=True)
class DepthTask(Task):
    """Metric z-depth regression; the head predicts metres directly (L1 as in MTI-Net and InvPT)."""

    rendered_as_depth: ClassVar[bool] = True
    consistency: ClassVar[str] = "depth"

    def read(self, path: str | os.PathLike) -> np.ndarray:
        array = fileio.read_npy(path)
        if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
            array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:2])
        if array.ndim != 2:
            raise Mtl3dError(f"depth must be an HxW array, got shape {array.shape} in {path}")
        array = array.astype(np.float32)
        array[~np.isfinite(array) | (array < 0)] = 0.0
        return array

    def write(self, path: str | os.PathLike, array: np.ndarray) -> None:
        fileio.write_npy(path, np.asarray(array, dtype=np.float32))

    def channels(self, meta: DatasetMeta) -> int:
        return 1

    def to_tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]

    def valid(self, label: torch.Tensor) -> torch.Tensor:
        return label[..., 0, :, :] > 0

    def activate(self, output: torch.Tensor) -> torch.Tensor:
        return output.float().clamp_min(0.0)

    def loss(self, output: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return losses.l1(output, label, valid)

    def metric(self, meta: DatasetMeta, **options: Any) -> Meter:
        from mtl3dcli.metrics import DepthMeter

        return DepthMeter()

    def colorize(self, prediction: np.ndarray, meta: DatasetMeta | None = None) -> np.ndarray:
        depth = np.asarray(prediction, dtype=np.float32).reshape(prediction.shape[-2:])
        lo, hi = self._range(depth, meta)
        return colormap((depth - lo) / max(hi - lo, 1e-6))

    def visualize(self, prediction: np.ndarray, meta: DatasetMeta | None = None) -> np.ndarray:
        """The colourised depth with a colour bar and its range in metres underneath."""
        from PIL import Image, ImageDraw

        body = self.colorize(prediction, meta)
        lo, hi = self._range(np.asarray(prediction, dtype=np.float32), meta)
        width = body.shape[1]
        bar = np.repeat(colormap(np.linspace(0, 1, width))[None], max(6, body.shape[0] // 24), axis=0)
        legend = Image.new("RGB", (width, 12), (255, 255, 255))
        draw = ImageDraw.Draw(legend)
        draw.text((1, 0), f"{lo:.1f} m", fill=(0, 0, 0))
        right = f"{hi:.1f} m"
        draw.text((max(0, width - 6 * len(right) - 1), 0), right, fill=(0, 0, 0))
        return np.concatenate([body, bar, np.asarray(legend)], axis=0)

    @staticmethod
    def _range(depth: np.ndarray, meta: DatasetMeta | None) -> tuple[float, float]:
        """The colour scale in metres: the dataset's depth range, else the map's own."""
        return meta.depth_range if meta is not None else (float(depth.min()), float(depth.max()))

    def to_numpy(self, prediction: torch.Tensor) -> np.ndarray:
        return prediction.cpu().float().numpy().reshape(prediction.shape[-2:])


def decode_normals(rgb: np.ndarray) -> np.ndarray:
    """Stored normals, uint8 (H, W, 3) encoding (n + 1) / 2 * 255, -> float32 (H, W, 3) unit vectors (a view of a
    channel-first buffer, which `NormalsTask.to_tensor` takes without a copy); pixels whose decoded length is not
    within 0.5 of 1 (the (0, 0, 0) of a missing label) are zero vectors.

    In place on channel planes, the length summed in np.linalg.norm's order: the result of `n / |n|` with
    n = rgb / 255 * 2 - 1 to the last bit (tests/test_decode.py checks every byte triple), in a third of its time."""
    normals = np.moveaxis(rgb, -1, 0).astype(np.float32, order="C")  # channel planes
    normals /= 255.0
    normals *= 2.0
    normals -= 1.0
    squares = normals * normals
    norm = squares[0] + squares[1]
    norm += squares[2]
    np.sqrt(norm, out=norm)
    invalid = np.abs(norm - 1.0) >= 0.5
    normals /= np.maximum(norm, np.float32(1e-6))
    normals[:, invalid] = 0.0
    return np.moveaxis(normals, 0, -1)


@dataclass(frozen=True)
class NormalsTask(Task):
    """Surface normals in the camera frame, stored as (n + 1) / 2 * 255 RGB; (0, 0, 0) marks invalid pixels."""

    flip_signs: ClassVar[tuple[float, ...]] = (-1.0, 1.0, 1.0)
    camera_frame_vector: ClassVar[bool] = True
    consistency: ClassVar[str] = "normal"
    derivation: ClassVar[Derivation] = Derivation(
        ("depth",), True, lambda labels, K: derive.normals_from_depth(labels["depth"], K))

    def read(self, path: str | os.PathLike) -> np.ndarray:
        return decode_normals(fileio.read_image(path, mode="RGB"))

    def write(self, path: str | os.PathLike, array: np.ndarray) -> None:
        normals = np.asarray(array, dtype=np.float32)
        valid = np.linalg.norm(normals, axis=-1, keepdims=True) > 0.5
        rgb = np.where(valid, np.round((normals.clip(-1, 1) + 1.0) / 2.0 * 255.0), 0.0)
        fileio.write_image(path, rgb.astype(np.uint8))

    def channels(self, meta: DatasetMeta) -> int:
        return 3

    def to_tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(array, dtype=np.float32)).permute(2, 0, 1).contiguous()

    def valid(self, label: torch.Tensor) -> torch.Tensor:
        # |n| > 0.5 as a sum of squares: torch.linalg.vector_norm over the channel dimension takes 28 ms per 480x640
        # label on one CPU thread, this 0.5 ms (decoded normals are unit or zero, far from the threshold)
        return (label * label).sum(dim=-3) > 0.25

    def activate(self, output: torch.Tensor) -> torch.Tensor:
        return F.normalize(output.float(), dim=1, eps=1e-6)

    def loss(self, output: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return losses.normals_l1(output, label, valid)

    def metric(self, meta: DatasetMeta, **options: Any) -> Meter:
        from mtl3dcli.metrics import NormalsMeter

        return NormalsMeter()

    def colorize(self, prediction: np.ndarray, meta: DatasetMeta | None = None) -> np.ndarray:
        normals = np.asarray(prediction, dtype=np.float32)
        if normals.shape[0] == 3:
            normals = normals.transpose(1, 2, 0)
        return np.round((normals.clip(-1, 1) + 1.0) / 2.0 * 255.0).astype(np.uint8)

    def to_numpy(self, prediction: torch.Tensor) -> np.ndarray:
        return prediction.cpu().float().permute(1, 2, 0).numpy()


@dataclass(frozen=True)
class BinaryTask(Task):
    """Per-pixel probability (boundaries, saliency), stored as uint8 0..255 grey PNGs."""

    pos_weight: float | None = None  # weight of positives in a balanced BCE (negatives 1 - w); None = plain BCE
    balance: bool = False  # weight positives by the batch's own negative fraction (MTL-PyTorch's saliency loss)
    # InvPT's saliency head: two logits (background, salient) under a softmax. Its class-weighted cross-entropy
    # equals the (balanced) BCE of the logit difference, and softmax channel 1 is the sigmoid of it, so the loss and
    # the prediction are computed on that difference; only the head's parameterization is upstream's.
    two_class: bool = False

    def read(self, path: str | os.PathLike) -> np.ndarray:
        return fileio.read_image(path, mode="L").astype(np.float32) / 255.0

    def write(self, path: str | os.PathLike, array: np.ndarray) -> None:
        fileio.write_image(path, np.round(np.asarray(array, dtype=np.float32).clip(0, 1) * 255.0).astype(np.uint8))

    def channels(self, meta: DatasetMeta) -> int:
        return 2 if self.two_class else 1

    def logit(self, output: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) logit of the positive class: the output itself, or channel 1 minus channel 0 (two_class)."""
        return output[:, 1:2] - output[:, :1] if self.two_class else output

    def to_tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]

    def valid(self, label: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(label[..., 0, :, :], dtype=torch.bool)

    def activate(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(output.float()))

    def loss(self, output: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        weight = losses.negative_fraction(label, valid) if self.balance else self.pos_weight
        return losses.binary_cross_entropy(self.logit(output), label, valid, weight)

    def colorize(self, prediction: np.ndarray, meta: DatasetMeta | None = None) -> np.ndarray:
        grey = np.round(np.asarray(prediction, dtype=np.float32).reshape(prediction.shape[-2:]).clip(0, 1) * 255)
        return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1)

    def to_numpy(self, prediction: torch.Tensor) -> np.ndarray:
        return prediction.cpu().float().numpy().reshape(prediction.shape[-2:])


@dataclass(frozen=True)
class EdgeTask(BinaryTask):
    derivation: ClassVar[Derivation] = Derivation(
        ("semseg",), False, lambda labels, K: derive.boundaries_from_segmentation(labels["semseg"]))

    def metric(self, meta: DatasetMeta, **options: Any) -> Meter:
        from mtl3dcli.metrics import HED_THRESHOLDS, EdgeMeter

        thresholds = options.get("edge_thresholds")
        return EdgeMeter(max_dist=meta.edge_max_dist, thresholds=HED_THRESHOLDS if thresholds is None else thresholds,
                         nms=options.get("edge_nms", True), workers=options.get("edge_workers", 0))


@dataclass(frozen=True)
class SaliencyTask(BinaryTask):
    def metric(self, meta: DatasetMeta, **options: Any) -> Meter:
        from mtl3dcli.metrics import SaliencyMeter

        return SaliencyMeter(options.get("saliency_protocol", "invpt"))


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        ClassTask(name="semseg", title="semantic segmentation", aliases=("seg", "segmentation", "sem"),
                  folder="segmentation", suffix=".png", loss_weight=1.0, primary_metric="mIoU", higher_is_better=True),
        DepthTask(name="depth", title="depth", aliases=("dep",), folder="depth", suffix=".npy", loss_weight=1.0,
                  primary_metric="rmse", higher_is_better=False),
        NormalsTask(name="normals", title="surface normals", aliases=("normal", "sn", "norm"), folder="normals",
                    suffix=".png", loss_weight=10.0, primary_metric="mean", higher_is_better=False),
        EdgeTask(name="edge", title="boundaries", aliases=("edges", "boundary", "boundaries"), folder="edge",
                 suffix=".png", loss_weight=50.0, primary_metric="odsF", higher_is_better=True, pos_weight=0.95),
        ClassTask(name="parts", title="human parts", aliases=("human_parts", "part"), folder="parts", suffix=".png",
                  loss_weight=2.0, primary_metric="mIoU", higher_is_better=True),
        SaliencyTask(name="saliency", title="saliency", aliases=("sal",), folder="saliency", suffix=".png",
                     loss_weight=5.0, primary_metric="maxF", higher_is_better=True, balance=True),
    )
}
_ALIASES = {alias: name for name, task in TASKS.items() for alias in (name, *task.aliases)}


def get_task(name: str) -> Task:
    """Look a task up by its name or an alias (case-insensitive)."""
    key = name.strip().lower()
    if key not in _ALIASES:
        raise Mtl3dError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (aliases: seg, sal, ...)")
    return TASKS[_ALIASES[key]]


def parse_tasks(spec: str | list[str] | tuple[str, ...]) -> list[Task]:
    """'seg,depth' or ['seg', 'depth'] -> [Task, Task] in the given order, duplicates removed."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    tasks: list[Task] = []
    for name in names:
        if not name.strip():
            continue
        task = get_task(name)
        if task not in tasks:
            tasks.append(task)
    if not tasks:
        raise Mtl3dError("no task given")
    return tasks


def primary_metrics(tasks: list[Task]) -> dict[str, tuple[str, bool]]:
    """{task name: (primary metric, higher_is_better)}: what Delta_m and run summaries compare."""
    return {task.name: (task.primary_metric, task.higher_is_better) for task in tasks}
