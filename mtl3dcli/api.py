"""The 3D-aware regularizer for any network and any training loop: the stable library surface (docs/library.md).

    reg = TriplaneRegularizer(feature_channels=256, tasks=[TaskSpec("semseg", channels=13), "depth", "normals"])
    optimizer = torch.optim.AdamW([*net.parameters(), *reg.parameters()])
    out = reg(features, labels)            # features (B, D, h, w) of the user's encoder, labels {task: tensor}
    (task_loss + out.total).backward()

The rendered loss is the training objective's rendered term (engine/objective.py), computed by the same functions:

    out.losses[t] = alpha_t w_t L_t(up(render_t), label_t),   out.total = sum_t out.losses[t] (+ cross-view terms)

Built-in task names take their channels, loss, validity and weight w_t from the task registry; a user task gives
its channels and a loss callable. The module holds only the regularizer: the user's network and its state_dict
never contain it, and nothing of it runs at inference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mtl3dcli.config import Config, validate
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.models.build import build_regularizer
from mtl3dcli.models.crossview import PartnerView, partner_losses
from mtl3dcli.models.regularizer import Regularizer, task_losses
from mtl3dcli.tasks import TASKS, Task, get_task

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# RegularizerConfig keys the API takes as keyword options (the others are arguments, or the CLI's own business)
OPTIONS = ("plane_channels", "plane_size", "near", "far", "density_hidden", "task_hidden", "density_activation",
           "aggregation", "spacing", "chunk", "fused")


@dataclass(frozen=True)
class TaskSpec:
    """A task to render. name: a built-in task (semseg, depth, normals, edge, parts, saliency, or an alias) or a
    user task. channels: the rendered map's channels (a built-in class task needs its number of classes; the others
    know theirs). loss: a user task's loss(rendered (B, C, H, W), label, valid (B, H, W) bool) -> scalar. valid: a
    user task's label -> (B, H, W) bool mask (default: every pixel). weight: w_t (default the registry's, 1 for a
    user task); alpha: alpha_t (default the regularizer's `alpha`)."""

    name: str
    channels: int | None = None
    loss: LossFn | None = None
    valid: Callable[[torch.Tensor], torch.Tensor] | None = None
    weight: float | None = None
    alpha: float | None = None


@dataclass(frozen=True)
class _UserTask(Task):
    """A task the registry does not know: its loss and validity are the user's callables."""

    loss_fn: LossFn | None = None
    valid_fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    def loss(self, output: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(output, label, valid)

    def valid(self, label: torch.Tensor) -> torch.Tensor:
        if self.valid_fn is not None:
            return self.valid_fn(label)
        return torch.ones(label.shape[0], *label.shape[-2:], dtype=torch.bool, device=label.device)


@dataclass
class RegularizerOutput:
    """total: the weighted rendered loss to add to the user's loss (every term below summed). losses: {task:
    alpha_t w_t L_t} of the input view; cross_losses: {task: cross_alpha alpha_t w_t L_t} of the partner view (empty
    without one); maps: {task: raw rendered map (B, C_t, h, w)} at the render size (the depth task's is the expected
    depth in metres); opacity (B, 1, h, w); visible: the covisible fraction of the partner's pixels (None without
    one)."""

    total: torch.Tensor
    losses: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor]
    opacity: torch.Tensor
    cross_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    visible: torch.Tensor | None = None


def _resolve_task(spec: str | TaskSpec) -> tuple[Task, int, TaskSpec]:
    """A task argument -> (Task, rendered channels, its spec); every mistake is one error naming `tasks`."""
    spec = TaskSpec(spec) if isinstance(spec, str) else spec
    if not isinstance(spec, TaskSpec):
        raise Mtl3dError(f"tasks: expected task names or TaskSpec, got {spec!r}")
    key = spec.name.strip().lower()
    if key in TASKS or any(key in t.aliases for t in TASKS.values()):
        task = get_task(key)
        if spec.loss is not None or spec.valid is not None:
            raise Mtl3dError(f"tasks: {task.name!r} is a built-in task with the registry's loss and validity; give "
                             f"a user task another name")
        try:
            channels = task.channels(DatasetMeta(name="api", tasks=[task.name]))
        except Mtl3dError:
            if spec.channels is None:
                raise Mtl3dError(f"tasks: {task.name!r} is a class task: give its number of classes, e.g. "
                                 f"TaskSpec({task.name!r}, channels=40)") from None
            channels = spec.channels
        if spec.channels not in (None, channels):
            raise Mtl3dError(f"tasks: {task.name!r} renders {channels} channels, not {spec.channels}")
        return task, channels, spec
    if spec.loss is None or spec.channels is None:
        raise Mtl3dError(f"tasks: {spec.name!r} is not a built-in task ({', '.join(TASKS)}): a user task needs "
                         f"channels and a loss, TaskSpec({spec.name!r}, channels=C, loss=fn)")
    task = _UserTask(spec.name, spec.name, (), "", "", 1.0, "", True, loss_fn=spec.loss, valid_fn=spec.valid)
    return task, spec.channels, spec


def _config(options: dict[str, Any]) -> Config:
    """The regularizer section built and checked as the CLI's config is (types, closed choices, positive sizes)."""
    config = Config.from_dict({"regularizer": options}, source="TriplaneRegularizer")
    validate(config)
    return config


class TriplaneRegularizer(nn.Module):
    """The 3D-aware regularizer for a feature map of `feature_channels` channels.

    tasks: names or `TaskSpec`s. camera: "orthographic" (the paper: rays along +z through the pixel centres, no K)
    or "perspective" (the pixel-aligned camera of each sample's K). render_size: (h, w) of the rendered maps;
    samples: points per ray; decode: "point" (task MLPs on every sample, the paper) or "ray"; alpha: alpha_t of the
    tasks that set none; depth_range: (near, far) metres of the scene (near is at least 0.1); cross_alpha,
    cross_tolerance: the cross-view term's weight and depth agreement. options: further regularizer keys
    (plane_channels, plane_size, near, far, density_hidden, task_hidden, density_activation, aggregation, spacing,
    chunk, fused), as in the CLI's `regularizer:` section.
    """

    def __init__(self, feature_channels: int, tasks: Sequence[str | TaskSpec], *, camera: str = "orthographic",
                 render_size: tuple[int, int] = (24, 32), samples: int = 32, decode: str = "point",
                 alpha: float = 1.0, depth_range: tuple[float, float] = (0.0, 10.0), cross_alpha: float = 0.5,
                 cross_tolerance: float = 0.05, **options: Any):
        super().__init__()
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise Mtl3dError(f"unknown option(s) {', '.join(unknown)}; TriplaneRegularizer takes {', '.join(OPTIONS)}")
        if not isinstance(feature_channels, int) or feature_channels <= 0:
            raise Mtl3dError(f"feature_channels must be a positive int, got {feature_channels!r}")
        if isinstance(tasks, (str, TaskSpec)) or not tasks:
            raise Mtl3dError(f"tasks must be a non-empty list of task names or TaskSpec, got {tasks!r}")
        resolved = [_resolve_task(t) for t in tasks]
        names = [task.name for task, _, _ in resolved]
        if len(set(names)) != len(names):
            raise Mtl3dError(f"tasks: a task is named twice in {names}")
        config = _config({**options, "camera": camera, "render_size": render_size, "samples": samples,
                          "decode": decode, "default_alpha": alpha, "cross_alpha": cross_alpha,
                          "cross_tolerance": cross_tolerance}).regularizer
        self.feature_channels = feature_channels
        self.weights = {task.name: spec.weight if spec.weight is not None else task.loss_weight
                        for task, _, spec in resolved}
        self.alpha = {task.name: spec.alpha if spec.alpha is not None else alpha for task, _, spec in resolved}
        self.cross_alpha, self.cross_tolerance = cross_alpha, cross_tolerance
        self.regularizer: Regularizer = build_regularizer(
            config, feature_channels, [task for task, _, _ in resolved],
            {task.name: channels for task, channels, _ in resolved}, tuple(depth_range))

    @property
    def tasks(self) -> list[Task]:
        return list(self.regularizer.tasks)

    def forward(self, features: torch.Tensor, labels: dict[str, torch.Tensor], *,
                valid: dict[str, torch.Tensor] | None = None, K: torch.Tensor | None = None,
                image_size: tuple[int, int] | None = None, pose: torch.Tensor | None = None,
                partner: PartnerView | None = None, scales: Sequence[torch.Tensor] | None = None) -> RegularizerOutput:
        """Render the tri-plane of `features` (B, D, h, w) and score it against `labels` {task: label} (class tasks
        (B, H, W) int64 with 255 = ignore, the others (B, C_t, H, W); the maps are upsampled to H x W). valid:
        optional {task: (B, H, W) bool} (default: the tasks' own validity). K: (B, 3, 3) intrinsics of the input
        image of `image_size` (default H x W), needed by the perspective camera. pose (B, 4, 4) camera-to-world and
        `partner` (another view's K, pose and labels) add the cross-view term. scales: when `features` are
        multi-scale maps (finest first) upsampled to the finest and concatenated, as HRNet-style encoders fuse them,
        those maps: the projector then runs on each at its own resolution (the same planes, less work). Stratified
        samples in train mode, midpoints in eval mode."""
        reg = self.regularizer
        batch = self._check_features(features)
        self._check_scales(scales, features)
        size = self._check_labels(labels, batch, "labels")
        valid = self._valid(labels, valid, "valid")
        if reg.perspective:
            K = self._check_matrix(K, batch, 3, "K", "camera='perspective' needs each sample's intrinsics")
        planes = reg.planes(features, None if scales is None else list(scales))
        renders = reg.render(planes, reg.view_camera(K, tuple(image_size or size)), stratified=self.training)
        losses = {name: self.alpha[name] * self.weights[name] * loss
                  for name, loss in task_losses(reg.tasks, renders.tasks, size, labels, valid).items()}
        cross, visible = {}, None
        if partner is not None:
            cross, visible = self._cross_view(planes, K, tuple(image_size or size), pose, labels, valid, partner)
        total = torch.stack([*losses.values(), *cross.values()]).sum()
        return RegularizerOutput(total, losses, renders.tasks, renders.opacity, cross, visible)

    def _cross_view(self, planes: torch.Tensor, K: torch.Tensor, size: tuple[int, int], pose: torch.Tensor | None,
                    labels: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                    partner: PartnerView) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The weighted cross-view terms {task: cross_alpha alpha_t w_t L_t} and the covisible fraction."""
        reg, batch = self.regularizer, planes.shape[0]
        if not reg.perspective or reg.depth_labels is None:
            raise Mtl3dError("partner: the cross-view term needs camera='perspective' and a depth task (its labels "
                             "decide which partner pixels the input view sees)")
        pose = self._check_matrix(pose, batch, 4, "pose", "a partner view needs the input view's camera-to-world pose")
        self._check_matrix(partner.K, batch, 3, "partner.K", "a partner view needs its intrinsics")
        self._check_matrix(partner.pose, batch, 4, "partner.pose", "a partner view needs its pose")
        self._check_labels(partner.labels, batch, "partner.labels")
        has_pair = partner.has_pair if partner.has_pair is not None else torch.ones(batch, dtype=torch.bool,
                                                                                      device=planes.device)
        partner = dataclasses.replace(partner, valid=self._valid(partner.labels, partner.valid, "partner.valid"),
                                      has_pair=has_pair)
        losses, visible = partner_losses(reg, planes, K, size, pose, labels, valid, partner, self.cross_tolerance,
                                         self.training)
        return {name: self.cross_alpha * self.alpha[name] * self.weights[name] * loss
                for name, loss in losses.items()}, visible

    def _check_features(self, features: Any) -> int:
        if not isinstance(features, torch.Tensor) or features.dim() != 4:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise Mtl3dError(f"features must be a 4-D tensor (B, D, h, w), got {shape}")
        if features.shape[1] != self.feature_channels:
            raise Mtl3dError(f"features have {features.shape[1]} channels; this regularizer was built for "
                             f"feature_channels={self.feature_channels}")
        return features.shape[0]

    @staticmethod
    def _check_scales(scales: Any, features: torch.Tensor) -> None:
        """Scales, when given, are 4-D maps of the features' batch whose channels add up to the features', the
        first at the features' size."""
        if scales is None:
            return
        shapes = [tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__ for x in scales]
        if (not all(isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[0] == features.shape[0] for x in scales)
                or sum(x.shape[1] for x in scales) != features.shape[1]
                or tuple(scales[0].shape[-2:]) != tuple(features.shape[-2:])):
            raise Mtl3dError(f"scales must be the 4-D maps that features {tuple(features.shape)} fuse (channels adding "
                             f"up to its {features.shape[1]}, the first at its size), got {shapes}")

    def _check_labels(self, labels: Any, batch: int, argument: str) -> tuple[int, int]:
        """Every rendered task's label is (B, H, W) or (B, C_t, H, W), one H x W for all; returns (H, W)."""
        if not isinstance(labels, dict):
            raise Mtl3dError(f"{argument} must be a dict {{task: tensor}}, got {type(labels).__name__}")
        sizes = set()
        for task in self.regularizer.tasks:
            label = labels.get(task.name)
            if not isinstance(label, torch.Tensor):
                raise Mtl3dError(f"{argument} has no tensor for task {task.name!r} (has: {', '.join(labels)})")
            channels = self.regularizer.field.channels.get(task.name, 1)
            wrong = label.dim() not in (3, 4) or label.shape[0] != batch or \
                (label.dim() == 4 and label.shape[1] != channels) or (label.dim() == 3 and label.is_floating_point())
            if wrong:
                raise Mtl3dError(f"{argument}[{task.name!r}] has shape {tuple(label.shape)} ({label.dtype}); expected "
                                 f"({batch}, {channels}, H, W), or ({batch}, H, W) integer class ids")
            sizes.add(tuple(label.shape[-2:]))
        if len(sizes) > 1:
            raise Mtl3dError(f"{argument}: every task's label must have one size, got {sorted(sizes)}")
        return sizes.pop()

    def _valid(self, labels: dict[str, torch.Tensor], valid: dict[str, torch.Tensor] | None,
               argument: str) -> dict[str, torch.Tensor]:
        """The given masks, else each task's own; every mask (B, H, W) bool like its label."""
        out = {}
        for task in self.regularizer.tasks:
            label = labels[task.name]
            mask = valid[task.name] if valid is not None and task.name in valid else task.valid(label)
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (label.shape[0], *label.shape[-2:]):
                shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise Mtl3dError(f"{argument}[{task.name!r}] must be a (B, H, W) mask like its label "
                                 f"{tuple(label.shape)}, got {shape}")
            out[task.name] = mask.bool()
        return out

    @staticmethod
    def _check_matrix(value: Any, batch: int, n: int, argument: str, why: str) -> torch.Tensor:
        if value is None:
            raise Mtl3dError(f"{argument} is missing: {why} ({batch}, {n}, {n})")
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (batch, n, n):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise Mtl3dError(f"{argument} must be a ({batch}, {n}, {n}) tensor, got {shape}")
        return value
