"""The 3D-aware regularizer (training only): encoder features -> tri-plane -> rays -> volume-rendered task maps.

Following Li et al. (ICLR 2024): a light conv projects the fused encoder features to three axis-aligned feature
planes (xy, xz, yz) of C channels each, as in EG3D. Points sampled along camera rays read the planes
(`sample_triplane`), a shared MLP decodes density and a feature, light per-task MLPs decode task values, and
alpha compositing renders low-resolution task maps that the task losses supervise. Depth is not decoded by an MLP:
it is the expected ray termination distance. Cameras are orthographic along +z through pixel centres (the paper)
or pinhole from the sample's K; a pinhole camera can also be a partner view B (cross-view consistency).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtl3dcli.config import RegularizerConfig
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.render.rays import (frustum_box, orthographic_rays, pinhole_rays, points_to_cube, sample_along_rays,
                                  transform_rays)
from mtl3dcli.render.triplane import inside_cube, sample_triplane, triplane_feature_dim
from mtl3dcli.render.volume import accumulated_opacity, composite, expected_depth, render_weights
from mtl3dcli.tasks import Task, get_task


class _TruncExp(torch.autograd.Function):
    """exp(x) whose gradient uses exp(min(x, 15)): the density activation of Instant-NGP, stable early on."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


DENSITY_ACTIVATIONS = {"softplus": F.softplus, "trunc_exp": _TruncExp.apply}


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
            planes = F.interpolate(planes, size=self.plane_size, mode="bilinear", align_corners=False)
        b, _, h, w = planes.shape
        return planes.view(b, 3, self.plane_channels, h, w)


class TriplaneField(nn.Module):
    """The decoder. `density`: plane features (..., D) -> density (...) and a shared feature (..., F) (one MLP
    shared by all tasks); `decode`: feature (..., F) -> {task: values (..., C_t)} (one light MLP per task)."""

    def __init__(self, in_dim: int, density_hidden: int, task_hidden: int, channels: dict[str, int],
                 density_activation: str = "softplus"):
        super().__init__()
        self.shared = nn.Sequential(nn.Linear(in_dim, density_hidden), nn.ReLU(inplace=True),
                                    nn.Linear(density_hidden, 1 + density_hidden))
        self.task_mlps = nn.ModuleDict({
            name: nn.Sequential(nn.ReLU(), nn.Linear(density_hidden, task_hidden), nn.ReLU(inplace=True),
                                nn.Linear(task_hidden, c))
            for name, c in channels.items()
        })
        self.activation = DENSITY_ACTIVATIONS[density_activation]
        self.feature_dim = density_hidden

    def density(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.shared(x)
        return self.activation(out[..., 0]), out[..., 1:]

    def decode(self, feature: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: mlp(feature) for name, mlp in self.task_mlps.items()}


@dataclass
class Renders:
    """Rendered maps, keyed apart from task names: tasks {task: (B, C_t, h, w)}, depth (B, 1, h, w) in metres,
    opacity (B, 1, h, w), feature (B, F, h, w) (the composited shared feature, for visualization)."""

    tasks: dict[str, torch.Tensor]
    depth: torch.Tensor
    opacity: torch.Tensor
    feature: torch.Tensor


@dataclass
class RenderCamera:
    """Which rays to cast. Orthographic: `transform` (B, 4, 4) moves the rays inside the cube (None = the training
    view). Perspective: `K_src` (B, 3, 3) and `image_size` define the source frustum that the cube spans; `K` is
    the rendering camera's intrinsics at `image_size` (None = K_src) and `transform` maps its frame into the
    source camera frame (None = the source camera itself)."""

    K_src: torch.Tensor | None = None
    image_size: tuple[int, int] | None = None
    K: torch.Tensor | None = None
    transform: torch.Tensor | None = None


class Regularizer(nn.Module):
    """Tri-plane projector + field + renderer for `tasks`. `channels` maps each task to its output channels; a task
    whose registry entry says `rendered_as_depth` (depth) takes the expected termination distance instead."""

    def __init__(self, config: RegularizerConfig, in_channels: int, tasks: list[Task], channels: dict[str, int],
                 depth_range: tuple[float, float]):
        super().__init__()
        self.config = config
        self.tasks = tasks
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

    def planes(self, features: torch.Tensor) -> torch.Tensor:
        return self.projector(features)

    def view_camera(self, K_src: torch.Tensor, image_size: tuple[int, int],
                    transform: torch.Tensor | None = None) -> RenderCamera:
        """The source view (or one moved by `transform`) in this regularizer's camera model; orthographic rays
        ignore the intrinsics."""
        if self.perspective:
            return RenderCamera(K_src=K_src, image_size=image_size, transform=transform)
        return RenderCamera(transform=transform)

    def render(self, planes: torch.Tensor, camera: RenderCamera, size: tuple[int, int] | None = None,
               stratified: bool = False) -> dict[str, torch.Tensor]:
        """Render every field of the tri-plane from `camera` at `size` (default config.render_size).

        Returns {task: (B, C_t, h, w)} for the rendered tasks plus "depth" (B, 1, h, w) in metres, "opacity"
        (B, 1, h, w) and "feature" (B, F, h, w) (the composited shared feature, for visualization).
        """
        h, w = size or self.config.render_size
        b = planes.shape[0]
        origins, directions, to_cube, to_depth, near, far = self._rays(b, h, w, camera, planes)
        chunk = max(1, self.config.chunk // b)
        pieces = [self._render_chunk(planes, origins[:, i:i + chunk], directions[:, i:i + chunk], to_cube, near,
                                     far, stratified) for i in range(0, h * w, chunk)]
        out = {key: torch.cat([p[key] for p in pieces], dim=1) for key in pieces[0]}
        depth = to_depth(out.pop("t"))
        result = {key: value.transpose(1, 2).reshape(b, -1, h, w) for key, value in out.items()}
        result["depth"] = depth.view(b, 1, h, w)
        for task in self.tasks:
            if task.rendered_as_depth:
                result[task.name] = result["depth"]
        return result

    def _rays(self, b: int, h: int, w: int, camera: RenderCamera, planes: torch.Tensor):
        device, dtype = planes.device, planes.dtype
        if not self.perspective:
            origins, directions = orthographic_rays(h, w, device=device, dtype=dtype)
            origins, directions = origins.expand(b, -1, -1), directions.expand(b, -1, -1)
            if camera.transform is not None:
                origins, directions = transform_rays(origins, directions, camera.transform.to(dtype))
            span = self.far - self.near
            return origins, directions, (lambda x: x), (lambda t: self.near + t * (span / 2.0)), 0.0, 2.0
        if camera.K_src is None or camera.image_size is None:
            raise ValueError("perspective rendering needs the source intrinsics and image size")
        H, W = camera.image_size
        K = (camera.K if camera.K is not None else camera.K_src).to(device=device, dtype=dtype)
        scale = torch.tensor([[w / W, 0, 0], [0, h / H, 0], [0, 0, 1]], device=device, dtype=dtype)
        origins, directions = pinhole_rays(scale @ K, h, w)
        if camera.transform is not None:
            origins, directions = transform_rays(origins, directions, camera.transform.to(device=device, dtype=dtype))
        box_min, box_max = frustum_box(camera.K_src.to(device=device, dtype=dtype), H, W, self.near, self.far)
        return (origins, directions, (lambda x: points_to_cube(x, box_min, box_max)), (lambda t: t),
                self.near, self.far)

    def _render_chunk(self, planes, origins, directions, to_cube, near, far, stratified):
        b, r, _ = origins.shape
        n = self.config.samples
        t, deltas = sample_along_rays(near, far, n, stratified=stratified, shape=(b, r), device=planes.device,
                                      dtype=planes.dtype)
        points = origins[:, :, None, :] + t[..., None] * directions[:, :, None, :]
        xyz = to_cube(points.reshape(b, r * n, 3))
        feats = sample_triplane(planes, xyz, self.config.aggregation)
        sigma, feature = self.field.density(feats)
        sigma = torch.where(inside_cube(xyz), sigma, torch.zeros_like(sigma)).view(b, r, n)
        feature = feature.view(b, r, n, -1)
        weights = render_weights(sigma, deltas)
        composited = composite(weights, feature)
        if self.config.decode == "point":  # task values per point, then alpha-composited (the NeRF formulation)
            out = {name: composite(weights, v) for name, v in self.field.decode(feature).items()}
        else:  # "ray": composite the shared feature, then decode once per ray (deferred, far cheaper)
            out = self.field.decode(composited)
        out["feature"] = composited
        out["opacity"] = accumulated_opacity(weights)[..., None]
        out["t"] = expected_depth(weights, t, far=far)
        return out


def build_regularizer(config: RegularizerConfig, in_channels: int, tasks: list[Task], channels: dict[str, int],
                      depth_range: tuple[float, float]) -> Regularizer:
    """The rendered tasks are `config.tasks` (None = all) restricted to the model's tasks, in model order."""
    names = [t.name for t in tasks] if config.tasks is None else config.tasks
    wanted = {get_task(n).name for n in names}
    unknown = wanted - {t.name for t in tasks}
    if unknown:
        raise Mtl3dError(f"regularizer.tasks names task(s) the model does not train: {', '.join(sorted(unknown))}")
    rendered = [t for t in tasks if t.name in wanted]
    return Regularizer(config, in_channels, rendered, channels, depth_range)

