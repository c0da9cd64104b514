"""The 3D-aware regularizer (training only), as the paper writes it: features -> tri-plane -> rays -> rendered maps.

Li et al. (ICLR 2024), read next to this module:

    planes      P_xy, P_xz, P_yz = split(conv1x1(features))                   `TriplaneProjector` (EG3D's split)
    lookup      F(x) = P_xy(x, y) + P_xz(x, z) + P_yz(z, y)   (bilinear)       `sample_triplane` (render/triplane.py)
    field       sigma(x), f(x) = MLP_shared(F(x));  y_t(x) = MLP_t(f(x))      `TriplaneField`
    sampling    x_i = o + t_i d, t_i stratified in N bins of [near, far]      `sample_along_rays` (render/rays.py)
    compositing w_i = T_i (1 - exp(-sigma_i delta_i)),  T_i = exp(-sum_{j<i} sigma_j delta_j)
                Y_t = sum_i w_i y_t(x_i),   depth = sum_i w_i t_i + (1 - sum_i w_i) far
                                                                              `render_weights`, `composite` (volume.py)
    loss        alpha_t w_t L_t(up(Y_t), label_t)                             `rendered_losses`

Depth is not decoded by an MLP: it is the expected ray termination distance. With decode "point" the task MLPs run
on every sample and their outputs are composited (the formula above); with "ray" the feature f is composited and the
task MLPs run once per ray. Cameras (`mtl3dcli.render.cameras`) are orthographic along +z through pixel centres (the
paper) or the pixel-aligned perspective camera of the sample's K, which can also be seen from a partner view.

This module is the plain path, the definition: every sample reads the planes and runs the MLPs itself. Training
takes, by default (`regularizer.fused`), the exact rewrites of `regularizer_fused.py`: the same parameters and the
same function (tests: values and gradients agree to 1e-5), computed with fewer reads, fewer matmuls and less memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtl3dcli.config import RegularizerConfig
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.layers import resize_bilinear, upsample_map
from mtl3dcli.render.cameras import NDCCamera, OrthographicCamera, PinholeCamera, RenderCamera
from mtl3dcli.render.rays import CubeSamples
from mtl3dcli.render.triplane import sample_triplane, triplane_feature_dim
from mtl3dcli.render.volume import FieldFn, FieldOutput, RenderedRays, render_field
from mtl3dcli.tasks import Task


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) whose gradient is exp(min(x, 15)): Instant-NGP's density activation, stable early in training.
    Written with a detached branch rather than a custom autograd function: the forward value is exp(x) exactly
    (the first term is 0), the gradient flows through the first term only."""
    slope = torch.exp(x.detach().clamp(max=15.0))
    return slope * (x - x.detach()) + torch.exp(x.detach())


DENSITY_ACTIVATIONS = {"softplus": F.softplus, "trunc_exp": trunc_exp}


class TriplaneProjector(nn.Module):
    """features (B, D, h, w) -> planes (B, 3, C, Hp, Wp): one light 1x1 conv emits 3C channels, split into the
    xy/xz/yz planes (as EG3D reshapes a 2D generator's output), resized to `plane_size` if given."""

    def __init__(self, in_channels: int, plane_channels: int, plane_size: tuple[int, int] | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3 * plane_channels, 1)
        self.plane_channels = plane_channels
        self.plane_size = plane_size

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        planes = self.conv(features)
        if self.plane_size is not None and tuple(planes.shape[-2:]) != tuple(self.plane_size):
            planes = resize_bilinear(planes, self.plane_size)
        b, _, h, w = planes.shape
        return planes.view(b, 3, self.plane_channels, h, w)


class TaskMLP(nn.Module):
    """A task's light decoder: feature f (..., F) -> y_t = out(relu(hidden(relu(f)))) (..., C_t)."""

    def __init__(self, in_dim: int, hidden: int, channels: int):
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden)
        self.out = nn.Linear(hidden, channels)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(F.relu(feature)), inplace=True))


# State-dict names of weights saved before the layers had names (`shared` and the task MLPs were nn.Sequential).
_LEGACY_NAMES = ((re.compile(r"^shared\.0\."), "shared_hidden."), (re.compile(r"^shared\.2\."), "shared_out."),
                 (re.compile(r"^(task_mlps\.[^.]+)\.1\."), r"\1.hidden."),
                 (re.compile(r"^(task_mlps\.[^.]+)\.3\."), r"\1.out."))


def current_field_name(name: str) -> str:
    """A `TriplaneField` state-dict name as it is now: 'shared.2.bias' -> 'shared_out.bias',
    'task_mlps.semseg.1.weight' -> 'task_mlps.semseg.hidden.weight'; current names are returned unchanged."""
    for pattern, new in _LEGACY_NAMES:
        name = pattern.sub(new, name)
    return name


class TriplaneField(nn.Module):
    """The decoder. `density`: plane features F(x) (..., D) -> density sigma (...) and the shared feature f (..., F)
    (one MLP shared by all tasks: shared_out(relu(shared_hidden(F))), whose first output is sigma before its
    activation); `decode`: f (..., F) -> {task: y_t (..., C_t)} (one light `TaskMLP` per task)."""

    def __init__(self, in_dim: int, density_hidden: int, task_hidden: int, channels: dict[str, int],
                 density_activation: str = "softplus"):
        super().__init__()
        self.shared_hidden = nn.Linear(in_dim, density_hidden)
        self.shared_out = nn.Linear(density_hidden, 1 + density_hidden)
        self.task_mlps = nn.ModuleDict({name: TaskMLP(density_hidden, task_hidden, c) for name, c in channels.items()})
        self.activation = DENSITY_ACTIVATIONS[density_activation]
        self.feature_dim = density_hidden
        self.task_hidden_dim = task_hidden
        self.channels = dict(channels)

    def density(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sigma (...), f (..., F) of plane features x (..., D)."""
        return self.density_head(self.shared_out(F.relu(self.shared_hidden(x), inplace=True)))

    def density_head(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sigma, f from the shared MLP's output (..., 1 + F)."""
        sigma, feature = out.split([1, self.feature_dim], dim=-1)
        # contiguous: the activation saves its input for backward, and a view would keep the whole output alive
        return self.activation(sigma[..., 0].contiguous()), feature

    def decode(self, feature: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: mlp(feature) for name, mlp in self.task_mlps.items()}

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Load weights saved with the old positional names (`shared.2.weight`, `task_mlps.semseg.3.bias`)."""
        for key in [k for k in state_dict if k.startswith(prefix)]:
            name = prefix + current_field_name(key[len(prefix):])
            if name != key:
                state_dict[name] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)


@dataclass
class Renders:
    """The regularizer's maps of one camera at (h, w), keyed apart from task names.

    tasks: {task: (B, C_t, h, w)} every rendered task in model order, raw outputs like the heads' (logits, unnormalized
    normals in the rendered camera's frame); the depth task's entry is `depth` itself. depth: (B, 1, h, w) expected
    ray termination z-depth in metres (empty space counts as far); opacity: (B, 1, h, w) in [0, 1]; feature:
    (B, F, h, w) the composited shared feature (for visualization; with decode "point" it carries no gradient).
    depth_tasks: the tasks rendered as `depth`.
    """

    tasks: dict[str, torch.Tensor]
    depth: torch.Tensor
    opacity: torch.Tensor
    feature: torch.Tensor
    depth_tasks: tuple[str, ...] = ()

    @property
    def decoded(self) -> dict[str, torch.Tensor]:
        """The tasks decoded by their own MLP (every task but the ones rendered as depth)."""
        return {name: value for name, value in self.tasks.items() if name not in self.depth_tasks}


class Regularizer(nn.Module):
    """Tri-plane projector + field + renderer for `tasks`. `channels` maps each task to its output channels; a task
    whose registry entry says `rendered_as_depth` (depth) takes the expected termination distance instead.
    `depth_labels`: the model task whose labels are metric z-depth (the cross-view visibility test reads them)."""

    factored = False  # the plain path reads the planes at every sample point

    def __init__(self, config: RegularizerConfig, in_channels: int, tasks: list[Task], channels: dict[str, int],
                 depth_range: tuple[float, float], depth_labels: str | None = None):
        super().__init__()
        self.config = config
        self.tasks = tasks
        self.depth_labels = depth_labels
        self.projector = TriplaneProjector(in_channels, config.plane_channels, config.plane_size)
        decoded = {t.name: channels[t.name] for t in tasks if not t.rendered_as_depth}
        self.field = TriplaneField(triplane_feature_dim(config.plane_channels, config.aggregation),
                                   config.density_hidden, config.task_hidden, decoded, config.density_activation)
        near = config.near if config.near is not None else max(float(depth_range[0]), 0.1)
        far = config.far if config.far is not None else float(depth_range[1])
        if not 0 < near < far:
            raise Mtl3dError(f"regularizer near/far must satisfy 0 < near < far, got {near}, {far}")
        self.near, self.far = near, far

    @property
    def perspective(self) -> bool:
        return self.config.camera == "perspective"

    @property
    def per_point(self) -> bool:
        """Decode "point": the task MLPs run on every sample (with no task to decode, the feature is composited)."""
        return self.config.decode == "point" and bool(self.field.channels)

    def planes(self, features: torch.Tensor, scales: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The tri-plane (B, 3, C, Hp, Wp) of `features` (B, D, h, w). `scales`: the multi-scale maps `features`
        fuses, when the host has them (`HostOutput.scales`); the plain path projects the fused map regardless."""
        return self.projector(features)

    def view_camera(self, K: torch.Tensor | None, image_size: tuple[int, int],
                    transform: torch.Tensor | None = None) -> RenderCamera:
        """The camera of the input view (K (B, 3, 3) at `image_size`), or one moved by `transform` (B, 4, 4):
        orthographic (the paper; the transform is in cube units, K is not used) or the pixel-aligned perspective
        camera (the transform maps the moved camera's frame into the input's, in metres)."""
        if not self.perspective:
            return OrthographicCamera(self.near, self.far, transform)
        source = PinholeCamera(K, image_size, self.near, self.far)
        view = None if transform is None else PinholeCamera(K, image_size, self.near, self.far, transform)
        return NDCCamera(source, view, self.config.spacing)

    def partner_camera(self, K: torch.Tensor, image_size: tuple[int, int], K_partner: torch.Tensor,
                       partner_size: tuple[int, int], partner_to_view: torch.Tensor) -> RenderCamera:
        """The input view's tri-plane seen from a partner camera B (perspective only): K_partner (B, 3, 3) at
        `partner_size`, `partner_to_view` (B, 4, 4) = relative_pose(pose_view, pose_partner)."""
        if not self.perspective:
            raise Mtl3dError("a partner view needs regularizer.camera=perspective")
        source = PinholeCamera(K, image_size, self.near, self.far)
        partner = PinholeCamera(K_partner, partner_size, self.near, self.far, partner_to_view)
        return NDCCamera(source, partner, self.config.spacing)

    def render(self, planes: torch.Tensor, camera: RenderCamera, size: tuple[int, int] | None = None,
               stratified: bool = False) -> Renders:
        """Render every field of the tri-plane from `camera` at `size` (default config.render_size): the one path
        for training, evaluation and render-views. `render_field` samples the rays and composites (its analytic
        tests are the renderer's); camera-frame vector tasks (normals) come out in the rendered camera's frame
        (`camera.vectors_to_view`)."""
        h, w = size or self.config.render_size
        out = render_field(self.field_function(planes), camera, (h, w), planes.shape[0], self.config.samples,
                           device=planes.device, stratified=stratified, chunk=self.config.chunk,
                           empty_depth_at_far=True, factored=self.factored)
        feature, values = self.rendered_values(out)
        return self._maps(out, feature, values, camera, (h, w))

    def field_function(self, planes: torch.Tensor) -> FieldFn:
        """The field on the samples of a chunk of rays: F(x) read at every sample point, sigma and f from the shared
        MLP; decode "point" also runs the task MLPs on every sample (their outputs are composited, f is shown)."""

        def field(samples: CubeSamples) -> FieldOutput:
            sigma, feature = self.field.density(sample_triplane(planes, samples.points(), self.config.aggregation))
            if not self.per_point:
                return FieldOutput(sigma, values=feature)
            return FieldOutput(sigma, values=torch.cat(list(self.field.decode(feature).values()), dim=-1),
                               shown=feature)

        return field

    def rendered_values(self, out: RenderedRays) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The composited feature (B, R, F) and the decoded tasks {task: (B, R, C_t)} of a render."""
        if not self.per_point:
            return out.values, self.field.decode(out.values)
        names = list(self.field.channels)
        return out.shown, dict(zip(names, out.values.split([self.field.channels[n] for n in names], dim=-1)))

    def _maps(self, out: RenderedRays, feature: torch.Tensor, values: dict[str, torch.Tensor],
              camera: RenderCamera, size: tuple[int, int]) -> Renders:
        """Rays (B, R, C) -> images (B, C, h, w) of every rendered task, the depth, opacity and feature."""
        b, (h, w) = out.depth.shape[0], size

        def image(x: torch.Tensor) -> torch.Tensor:
            return x.transpose(1, 2).reshape(b, -1, h, w)

        depth = image(out.depth[..., None])
        tasks = {}
        for task in self.tasks:
            if task.rendered_as_depth:
                tasks[task.name] = depth
            else:
                value = values[task.name]
                tasks[task.name] = image(camera.vectors_to_view(value) if task.camera_frame_vector else value)
        return Renders(tasks=tasks, depth=depth, opacity=image(out.opacity[..., None]), feature=image(feature),
                       depth_tasks=tuple(t.name for t in self.tasks if t.rendered_as_depth))


def task_losses(tasks: list[Task], maps: dict[str, torch.Tensor], size: tuple[int, int],
                labels: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """L_t(up(Y_t), label_t): each rendered map (B, C_t, h, w) upsampled (bilinear) to the labels' `size` and
    scored by its task's loss where `valid`. {task: unweighted loss} in the order of `tasks`. Each map is upsampled
    just before its loss, on its own: a full-size map is then freed as soon as its loss no longer needs it (the
    segmentation logits once their log-softmax is taken), where one stack split among the tasks would stay whole
    while any loss keeps its slice; this lowers the training step's memory peak, at the end of the losses."""
    return {t.name: t.loss(upsample_map(maps[t.name], size), labels[t.name], valid[t.name]) for t in tasks}


def rendered_losses(reg: Regularizer, planes: torch.Tensor, camera: RenderCamera, size: tuple[int, int],
                    labels: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                    stratified: bool) -> dict[str, torch.Tensor]:
    """The unweighted loss of every rendered task: the tri-plane rendered from `camera`, scored by `task_losses`.
    The training objective, the public API and `benchmarks/regularizer_step.py` share it."""
    rendered = reg.render(planes, camera, stratified=stratified)
    return task_losses(reg.tasks, rendered.tasks, size, labels, valid)
