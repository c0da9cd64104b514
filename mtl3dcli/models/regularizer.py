"""The 3D-aware regularizer (training only): encoder features -> tri-plane -> rays -> volume-rendered task maps.

Following Li et al. (ICLR 2024): a light conv projects the fused encoder features to three axis-aligned feature
planes (xy, xz, yz) of C channels each, as in EG3D. Points sampled along camera rays read the planes
(`sample_triplane`), a shared MLP decodes density and a feature, light per-task MLPs decode task values, and
alpha compositing renders low-resolution task maps that the task losses supervise. Depth is not decoded by an MLP:
it is the expected ray termination distance. Cameras (`mtl3dcli.render.cameras`) are orthographic along +z through
pixel centres (the paper) or the pixel-aligned perspective camera of the sample's K, which can also be seen from a
partner view B (cross-view consistency).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mtl3dcli.config import RegularizerConfig
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.layers import resize_bilinear
from mtl3dcli.render.cameras import Camera, NDCCamera, OrthographicCamera, PinholeCamera
from mtl3dcli.render.triplane import (aggregate_reads, triplane_feature_dim, triplane_features,
                                      triplane_grid_factors)
from mtl3dcli.render.volume import accumulated_opacity, composite, render_field
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


def _relu_backward(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """The gradient through y = relu(x) given y: grad where y > 0, else 0 (one fused pass, as autograd's own)."""
    return torch.ops.aten.threshold_backward(grad, output.to(grad.dtype), 0)


class _LinearOfReluSum(torch.autograd.Function):
    """linear(relu(a + b + c), weight, bias) for a, b, c (..., D) broadcasting to the samples (the first layer's
    parts over the tri-plane reads): the per-sample hidden layer relu(a + b + c) is not kept for backward but
    recomputed there from the small parts (two adds and a ReLU: cheap next to the matmuls), which saves one
    per-sample tensor of activations. Backward: the weight gradient and the input gradient as nn.Linear's, the
    ReLU mask, then each part's gradient summed over the dimensions it was broadcast along."""

    @staticmethod
    def forward(ctx, a, b, c, weight, bias):  # type: ignore[override]
        hidden = (a + b).add_(c).relu_()
        ctx.save_for_backward(a, b, c, weight)
        return F.linear(hidden, weight, bias)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        a, b, c, weight = ctx.saved_tensors
        hidden = (a + b).add_(c).relu_()
        flat = grad.reshape(-1, grad.shape[-1])
        grad_weight = (flat.t() @ hidden.reshape(-1, hidden.shape[-1]).to(flat.dtype)).to(weight.dtype)
        grad_bias = flat.sum(0).to(weight.dtype)
        grad_hidden = _relu_backward((flat @ weight.to(flat.dtype)).view(hidden.shape), hidden)
        return (grad_hidden.sum_to_size(a.shape).to(a.dtype), grad_hidden.sum_to_size(b.shape).to(b.dtype),
                grad_hidden.sum_to_size(c.shape).to(c.dtype), grad_weight, grad_bias)


class _CompositeOfTaskHidden(torch.autograd.Function):
    """composite(weights, relu(linear(relu(feature), weight, bias))): the task MLPs' hidden layer of every sample,
    composited along the rays. weights (B, r, N), feature (B, r, N, F) -> (B, r, H). Backward recomputes the
    hidden layer from the feature (one matmul) instead of keeping it, the widest per-sample tensor of point
    decoding; the gradients are those of the plain composition (ReLU masks, nn.Linear's weight and input
    gradients, the compositing weights' gradient hidden . grad)."""

    @staticmethod
    def forward(ctx, weights, feature, weight, bias):  # type: ignore[override]
        relu_feature, hidden = _task_hidden(feature, weight, bias)
        ctx.save_for_backward(weights, feature, weight, bias)
        return composite(weights, hidden.view(*feature.shape[:-1], -1))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        weights, feature, weight, bias = ctx.saved_tensors
        relu_feature, hidden = _task_hidden(feature, weight, bias)
        dtype = grad.dtype
        hidden = hidden.view(*feature.shape[:-1], -1).to(dtype)  # (B, r, N, H)
        grad_weights = (hidden @ grad[..., None])[..., 0].to(weights.dtype)  # sum_c hidden * grad
        grad_hidden = _relu_backward(weights.to(dtype)[..., None] * grad[..., None, :], hidden)
        flat = grad_hidden.view(-1, grad_hidden.shape[-1])
        grad_weight = (flat.t() @ relu_feature.to(dtype)).to(weight.dtype)
        grad_bias = flat.sum(0).to(bias.dtype)
        grad_feature = _relu_backward(flat @ weight.to(dtype), relu_feature)
        return grad_weights, grad_feature.view(feature.shape).to(feature.dtype), grad_weight, grad_bias


def _task_hidden(feature: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor,
                                                                                           torch.Tensor]:
    """relu(feature) and relu(linear(relu(feature))), both 2-D (samples, channels): on a 2-D input the in-place
    ReLU acts on the matmul's own output (not a view, which would cost a copy in backward)."""
    relu_feature = F.relu(feature).reshape(-1, feature.shape[-1])
    return relu_feature, F.linear(relu_feature, weight, bias).relu_()


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


class TriplaneField(nn.Module):
    """The decoder. `density`: plane features (..., D) -> density (...) and a shared feature (..., F) (one MLP
    shared by all tasks); `decode`: feature (..., F) -> {task: values (..., C_t)} (one light MLP per task).

    Exact rewrites for speed, same parameters: `first_layer_factors` + `density_from_parts` apply the first linear
    layer to the tri-plane reads of a sample grid before their broadcast (the aggregations sum/mean/concat are
    linear); `composite_task_hidden` + `task_outputs` split the task MLPs before their last linear layer, so point
    decoding composites the hidden layer and applies that layer once per ray (compositing is linear too). Both
    recompute their per-sample hidden layer in backward instead of keeping it (memory). For ray decoding,
    `density_composite_from_parts` splits the shared MLP's second layer the same way: only its density row runs
    per sample, its feature rows once per ray on the composited hidden layer.
    """

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
        self.task_hidden_dim = task_hidden
        self.channels = dict(channels)

    def density(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._density_head(self.shared(x))

    def first_layer_factors(self, factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                            aggregation: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The first layer's pre-activation split over the three tri-plane reads: W (a + b + c) + bias =
        W a + W b + (W c + bias) (mean: W / 3; concat: W's three column blocks), so it runs per pixel, per (column,
        sample) and per (row, sample) instead of per sample. None for "product", which is not linear."""
        if aggregation == "product":
            return None
        first = self.shared[0]
        if aggregation == "concat":
            weights = first.weight.split(first.weight.shape[1] // 3, dim=1)
        else:
            weights = (first.weight / 3.0,) * 3 if aggregation == "mean" else (first.weight,) * 3
        a, b, c = factors
        return F.linear(a, weights[0]), F.linear(b, weights[1]), F.linear(c, weights[2], first.bias)

    def density_from_parts(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor,
                                                                                            torch.Tensor]:
        """sigma, feature from the first layer's parts (`first_layer_factors`), broadcast to the samples."""
        second = self.shared[2]
        return self._density_head(_LinearOfReluSum.apply(a, b, c, second.weight, second.bias))

    def density_composite_from_parts(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[
            torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """sigma (B, r, N) and the compositing function of the shared feature, from the first layer's parts
        (`first_layer_factors`, broadcasting to (B, h, w, N, H), r = h w). The second layer's feature rows are
        linear, so sum_i w_i (W h_i + b) = W (sum_i w_i h_i) + b opacity: only its density row runs per sample and
        W once per ray (the per-sample (1 + F) x H matmul was ray decoding's largest cost at host sizes). The
        function maps weights (B, r, N) to the composited feature (B, r, F); autograd keeps one per-sample tensor,
        the hidden layer h, as the plain layer kept its output."""
        second = self.shared[2]
        hidden = (a + b).add_(c).relu_()
        sigma = F.linear(hidden, second.weight[:1], second.bias[:1])[..., 0].flatten(1, 2)
        hidden = hidden.flatten(1, 2)
        weight, bias = second.weight[1:], second.bias[1:]

        def composite_feature(weights: torch.Tensor) -> torch.Tensor:
            opacity = accumulated_opacity(weights)
            return F.linear(composite(weights, hidden), weight) + bias * opacity[..., None].to(bias.dtype)

        return self.activation(sigma), composite_feature

    def _density_head(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sigma, feature from the second layer's output (..., 1 + F)."""
        sigma, feature = out.split([1, self.feature_dim], dim=-1)
        # contiguous: the activation saves its input for backward, and a view would keep the whole output alive
        return self.activation(sigma[..., 0].contiguous()), feature

    def decode(self, feature: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: mlp(feature) for name, mlp in self.task_mlps.items()}

    def _task_firsts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The task MLPs' first layers as one: weight (T * task_hidden, F), bias (T * task_hidden,), task order."""
        firsts = [mlp[1] for mlp in self.task_mlps.values()]
        return torch.cat([layer.weight for layer in firsts]), torch.cat([layer.bias for layer in firsts])

    def composite_task_hidden(self, weights: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """The task MLPs up to their last layer, all tasks at once (one ReLU of the shared feature, the first layers
        as one matmul), composited: weights (B, r, N), feature (B, r, N, F) -> (B, r, T * task_hidden) in task
        order; the hidden layer is recomputed in backward rather than kept (`_CompositeOfTaskHidden`)."""
        return _CompositeOfTaskHidden.apply(weights, feature, *self._task_firsts())

    def task_outputs(self, hidden: torch.Tensor, opacity: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The task MLPs' last layers on their hidden layer (..., T * task_hidden) -> {task: (..., C_t)}. With
        `opacity` (...), hidden is a composite sum_i w_i h_i and the result is sum_i w_i (W h_i + b) =
        W hidden + b opacity."""
        out = {}
        for (name, mlp), block in zip(self.task_mlps.items(), hidden.split(self.task_hidden_dim, dim=-1)):
            last = mlp[3]
            value = F.linear(block, last.weight, last.bias)
            if opacity is not None:
                value = value - last.bias * (1.0 - opacity[..., None]).to(value.dtype)
            out[name] = value
        return out


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

    def planes(self, features: torch.Tensor) -> torch.Tensor:
        return self.projector(features)

    def view_camera(self, K: torch.Tensor, image_size: tuple[int, int],
                    transform: torch.Tensor | None = None) -> Camera:
        """The camera of the input view (K (B, 3, 3) at `image_size`), or one moved by `transform` (B, 4, 4):
        orthographic (the paper; the transform is in cube units, K is not used) or the pixel-aligned perspective
        camera (the transform maps the moved camera's frame into the input's, in metres)."""
        if not self.perspective:
            return OrthographicCamera(self.near, self.far, transform)
        source = PinholeCamera(K, image_size, self.near, self.far)
        view = None if transform is None else PinholeCamera(K, image_size, self.near, self.far, transform)
        return NDCCamera(source, view, self.config.spacing)

    def partner_camera(self, K: torch.Tensor, image_size: tuple[int, int], K_partner: torch.Tensor,
                       partner_size: tuple[int, int], partner_to_view: torch.Tensor) -> Camera:
        """The input view's tri-plane seen from a partner camera B (perspective only): K_partner (B, 3, 3) at
        `partner_size`, `partner_to_view` (B, 4, 4) = relative_pose(pose_view, pose_partner)."""
        if not self.perspective:
            raise Mtl3dError("a partner view needs regularizer.camera=perspective")
        source = PinholeCamera(K, image_size, self.near, self.far)
        partner = PinholeCamera(K_partner, partner_size, self.near, self.far, partner_to_view)
        return NDCCamera(source, partner, self.config.spacing)

    def render(self, planes: torch.Tensor, camera: Camera, size: tuple[int, int] | None = None,
               stratified: bool = False, fast: bool = True) -> Renders:
        """Render every field of the tri-plane from `camera` at `size` (default config.render_size).

        One path for training, evaluation and render-views: `render_field` (its analytic tests are the renderer's).
        decode "point": the task MLPs run on every sample and their outputs are composited (the paper's NeRF-style
        formulation); "ray": the shared feature is composited and the task MLPs run once per ray (with `fast`, the
        shared MLP's feature rows too: `TriplaneField.density_composite_from_parts`). Camera-frame
        vector tasks (normals) come out in the rendered camera's frame (`camera.vectors_to_view`).
        `fast` takes the exact rewrites (factored tri-plane reads and first layer on grid cameras, the task MLPs'
        last layer after compositing); False evaluates the literal per-sample definition (for tests).
        """
        h, w = size or self.config.render_size
        b = planes.shape[0]
        per_point = self.config.decode == "point"
        out = render_field(self._field(planes, fast), camera, (h, w), b, self.config.samples,
                           device=planes.device, stratified=stratified, chunk=self.config.chunk,
                           empty_depth_at_far=True, factored=fast)
        if per_point and fast:
            feature, values = out.shown, self.field.task_outputs(out.values, out.opacity)
        elif per_point:
            decoded = [t for t in self.tasks if not t.rendered_as_depth]
            sizes = [self.field.channels[t.name] for t in decoded]
            feature, values = out.shown, dict(zip([t.name for t in decoded], out.values.split(sizes, dim=-1)))
        else:
            feature, values = out.values, self.field.decode(out.values)

        def image(x: torch.Tensor) -> torch.Tensor:  # (B, R, C) -> (B, C, h, w)
            return x.transpose(1, 2).reshape(b, -1, h, w)

        depth = image(out.depth[..., None])
        tasks = {}
        for task in self.tasks:
            if task.rendered_as_depth:
                tasks[task.name] = depth
            else:
                value = values[task.name]
                if task.camera_frame_vector:
                    value = camera.vectors_to_view(value)
                tasks[task.name] = image(value)
        return Renders(tasks=tasks, depth=depth, opacity=image(out.opacity[..., None]), feature=image(feature),
                       depth_tasks=tuple(t.name for t in self.tasks if t.rendered_as_depth))

    def _field(self, planes: torch.Tensor, fast: bool):
        """The field function `render_field` evaluates on a batch of samples: (density, feature) for decode "ray";
        (density, task values or their compositing function, shown feature) for decode "point"."""
        per_point = self.config.decode == "point"
        aggregation = self.config.aggregation
        factored: dict[int, tuple] = {}  # the grid's tri-plane reads (first layer applied), once per render

        def grid_density(samples):
            if id(samples.grid) not in factored:
                reads = triplane_grid_factors(planes, samples.grid)
                parts = self.field.first_layer_factors(reads, aggregation)
                factored[id(samples.grid)] = (parts is not None, parts or reads)
            linear, (xy, xz, yz) = factored[id(samples.grid)]
            xy, yz = xy[:, samples.rows], yz[:, samples.rows]
            if linear and not per_point:
                return self.field.density_composite_from_parts(xy, xz, yz)
            if linear:
                sigma, feature = self.field.density_from_parts(xy, xz, yz)
            else:
                sigma, feature = self.field.density(aggregate_reads((xy, xz, yz), aggregation))
            batch, rows, cols, n = sigma.shape
            return sigma.reshape(batch, rows * cols, n), feature.reshape(batch, rows * cols, n, -1)

        def field(samples):
            if fast and samples.grid is not None:
                sigma, feature = grid_density(samples)
            else:
                sigma, feature = self.field.density(triplane_features(planes, samples, aggregation))
            if not per_point:
                return sigma, feature
            if fast:  # composite the task MLPs' last hidden layer; their last layer runs per ray. The composited
                # feature is only shown (render-views), never supervised here: composited without gradient
                return sigma, functools.partial(self.field.composite_task_hidden, feature=feature), feature
            return sigma, torch.cat(list(self.field.decode(feature).values()), dim=-1), feature

        return field


def build_regularizer(config: RegularizerConfig, in_channels: int, tasks: list[Task], channels: dict[str, int],
                      depth_range: tuple[float, float]) -> Regularizer:
    """The rendered tasks are `config.tasks` (None = all) restricted to the model's tasks, in model order."""
    names = [t.name for t in tasks] if config.tasks is None else config.tasks
    wanted = {get_task(n).name for n in names}
    unknown = wanted - {t.name for t in tasks}
    if unknown:
        raise Mtl3dError(f"regularizer.tasks names task(s) the model does not train: {', '.join(sorted(unknown))}")
    rendered = [t for t in tasks if t.name in wanted]
    depth_labels = next((t.name for t in tasks if t.rendered_as_depth), None)
    if config.cross_view and depth_labels is None:
        raise Mtl3dError("regularizer.cross_view needs depth labels: the visibility test back-projects the partner "
                         "view's depth")
    return Regularizer(config, in_channels, rendered, channels, depth_range, depth_labels)

