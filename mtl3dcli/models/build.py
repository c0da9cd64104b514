"""Config + dataset meta -> the model: the inference network and, when enabled, the training-only regularizer."""

from __future__ import annotations

import copy

import torch
from torch import nn

from mtl3dcli.config import Config, RegularizerConfig
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.weights import Weights
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.control2d import Control2D
from mtl3dcli.models.hosts import Host, HostOutput, HostSpec, build_host
from mtl3dcli.models.regularizer import Regularizer, Renders
from mtl3dcli.models.regularizer_fused import FusedRegularizer
from mtl3dcli.tasks import Task, get_task, parse_tasks


def resolve_tasks(config: Config) -> list[Task]:
    """The configured tasks with their per-task options (e.g. edge pos_weight) applied."""
    tasks = parse_tasks(config.data.tasks)
    options = {parse_tasks([k])[0].name: v for k, v in config.data.task_options.items()}
    unused = set(options) - {t.name for t in tasks}
    if unused:
        raise Mtl3dError(f"data.task_options names task(s) not trained: {', '.join(sorted(unused))}")
    return [t.with_options(**options[t.name]) if t.name in options else t for t in tasks]


class MTL3DModel(nn.Module):
    """`net` is everything inference needs; `regularizer` (or None) is only used by the training objective and
    `render-views`. State-dict keys are `net.*` and `regularizer.*`, so inference can load `net.*` alone."""

    def __init__(self, net: Host, regularizer: Regularizer | Control2D | None, tasks: list[Task], meta: DatasetMeta):
        super().__init__()
        self.net = net
        self.regularizer = regularizer
        self.tasks = tasks
        self.meta = meta

    def forward(self, image: torch.Tensor) -> HostOutput:
        return self.net(image)

    def render(self, features: torch.Tensor, K: torch.Tensor, image_size: tuple[int, int], *,
               stratified: bool = False, size: tuple[int, int] | None = None,
               transform: torch.Tensor | None = None) -> Renders:
        """The regularizer's maps of an image's features (B, D, h, w) seen by its own camera (K (B, 3, 3) at
        `image_size`), or by a camera moved by `transform` (B, 4, 4), at `size` (default the training render size).
        The one call behind the rendered loss, `evaluate --rendered` and `render-views`."""
        reg = self.regularizer
        if reg is None:
            raise Mtl3dError("this model has no regularizer to render with")
        return reg.render(reg.planes(features), reg.view_camera(K, image_size, transform), size=size,
                          stratified=stratified)


def build_regularizer(config: RegularizerConfig, in_channels: int, tasks: list[Task], channels: dict[str, int],
                      depth_range: tuple[float, float]) -> Regularizer:
    """The tri-plane regularizer for `in_channels` features: the fused path (`FusedRegularizer`) or, with
    `config.fused` false, the plain one. The rendered tasks are `config.tasks` (None = all) restricted to the
    model's tasks, in model order."""
    wanted = {t.name for t in tasks} if config.tasks is None else {get_task(n).name for n in config.tasks}
    unknown = wanted - {t.name for t in tasks}
    if unknown:
        raise Mtl3dError(f"regularizer.tasks names task(s) the model does not train: {', '.join(sorted(unknown))}")
    rendered = [t for t in tasks if t.name in wanted]
    depth_labels = next((t.name for t in tasks if t.rendered_as_depth), None)
    if config.cross_view and depth_labels is None:
        raise Mtl3dError("regularizer.cross_view needs depth labels: the visibility test back-projects the partner "
                         "view's depth")
    kind = FusedRegularizer if config.fused else Regularizer
    return kind(config, in_channels, rendered, channels, depth_range, depth_labels)


def build_model(config: Config, meta: DatasetMeta, with_regularizer: bool | None = None,
                load_backbone_weights: bool = True, tasks: list[Task] | None = None) -> MTL3DModel:
    """`with_regularizer` None follows config.regularizer.enabled; False builds the inference graph only. `tasks`:
    the already resolved tasks of `config` (resolved here when None)."""
    tasks = tasks if tasks is not None else resolve_tasks(config)
    channels = {t.name: t.channels(meta) for t in tasks}
    pretrained = config.model.pretrained if load_backbone_weights else None
    net = build_host(HostSpec(config.model, channels, tuple(config.data.size), pretrained))
    enabled = config.regularizer.enabled if with_regularizer is None else with_regularizer
    regularizer = None
    if enabled and config.regularizer.kind == "2d-control":
        with torch.device("meta"):  # only to count the field it stands in for; no memory, no random draws
            probe = build_regularizer(config.regularizer, net.feature_channels, tasks, channels, meta.depth_range)
        field = sum(p.numel() for p in probe.field.parameters())
        regularizer = Control2D(config.regularizer, net.feature_channels, probe.tasks, channels, field)
    elif enabled:
        regularizer = build_regularizer(config.regularizer, net.feature_channels, tasks, channels, meta.depth_range)
    return MTL3DModel(net, regularizer, tasks, meta)


def model_from_weights(weights: Weights, with_regularizer: bool = False) -> MTL3DModel:
    """Rebuild the model a weights file describes. Inference (`with_regularizer=False`) loads `net.*` only."""
    if with_regularizer and not weights.has_regularizer:
        raise Mtl3dError("these weights have no regularizer (trained with regularizer.enabled=false); "
                         "render-views needs a model trained with the 3D-aware regularizer")
    config = copy.deepcopy(weights.config)
    config.regularizer.enabled = with_regularizer
    if weights.host is not None:  # a host from outside the package: import it from where it was trained
        config.model.host = weights.host
    model = build_model(config, weights.meta, load_backbone_weights=False)
    state = {k: v for k, v in weights.state.items() if with_regularizer or k.startswith("net.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes: weights from another version or a damaged file
        raise Mtl3dError(f"weights do not fit the model they describe: {str(exc).splitlines()[1].strip()}") from None
    if missing or unexpected:
        raise Mtl3dError(f"weights do not fit the model they describe ({len(missing)} missing, {len(unexpected)} "
                         f"unexpected tensors, e.g. {(missing + unexpected)[0]})")
    return model
