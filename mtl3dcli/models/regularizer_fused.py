"""The regularizer's exact speed rewrites: the same parameters and function as `regularizer.py`, computed faster.

`FusedRegularizer` is what training builds by default (`regularizer.fused: true`; false builds the plain
`Regularizer`). Every rewrite is exact in real arithmetic; in floats the two paths agree to 1e-5 in values and
gradients (tests/test_regularizer_paths.py). They use three linearities:

- tri-plane reads of a sample grid (`CubeGrid`: orthographic rays and the pixel-aligned camera's own rays) are
  factored: the xy plane is read once per pixel, xz once per (column, sample), yz once per (row, sample);
- the shared MLP's first layer is linear, and so are the aggregations sum / mean / concat: W (a + b + c) + bias =
  W a + W b + (W c + bias), so it runs on the three small reads before their broadcast to every sample
  (`first_layer_factors`); the per-sample hidden layer relu(a + b + c) is recomputed in backward instead of kept
  (`_LinearOfReluSum`);
- bilinear resizing and the projector's 1x1 convolution commute (both linear, the resize's weights sum to 1, so
  the bias passes through): planes smaller than the features (`plane_size`) are resized before the convolution,
  which then runs on the smaller grid (`FusedRegularizer.planes`, `resize_planes`); otherwise features that fuse
  several scales (upsampled and concatenated, `HostOutput.scales`) are projected scale by scale, each by its block
  of the convolution's weight at its own resolution, and the narrow projections upsampled and summed
  (`project_scales`): the convolution and the resizes then touch 3C channels instead of the features' D;
- compositing is linear: sum_i w_i (W h_i + b) = W (sum_i w_i h_i) + b sum_i w_i. So decode "point" composites the
  task MLPs' hidden layer and applies their last layer once per ray (`composite_task_hidden`, `task_outputs`;
  the hidden layer is recomputed in backward: `_CompositeOfTaskHidden`), and decode "ray" runs only the density row
  of the shared MLP's second layer per sample and its feature rows once per ray (`density_composite_from_parts`;
  the hidden layer and its density row are one autograd node, `_DensityRowOfReluSum`, whose backward forms the
  hidden layer's gradient in one pass, and the compositing's backward takes broadcast products instead of per-ray
  rank-1 matmuls, `_Composite`; neither keeps the hidden layer, which is recomputed once in backward, `_ReluSum`).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F

from mtl3dcli.models.layers import resize_bilinear
from mtl3dcli.models.regularizer import Regularizer, TriplaneField
from mtl3dcli.render.rays import CubeSamples
from mtl3dcli.render.triplane import aggregate_reads, triplane_features, triplane_grid_factors
from mtl3dcli.render.volume import FieldFn, FieldOutput, RenderedRays, accumulated_opacity, composite

Parts = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _relu_backward(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """The gradient through y = relu(x) given y: grad where y > 0, else 0 (one fused pass, as autograd's own)."""
    return torch.ops.aten.threshold_backward(grad, output.to(grad.dtype), 0)


def _relu_sum(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """relu(a + b + c) of broadcasting parts, in one new tensor (the same rounding wherever it is recomputed)."""
    return (a + b).add_(c).relu_()


class _LinearOfReluSum(torch.autograd.Function):
    """linear(relu(a + b + c), weight, bias) for a, b, c (..., D) broadcasting to the samples (the first layer's
    parts over the tri-plane reads): the per-sample hidden layer relu(a + b + c) is not kept for backward but
    recomputed there from the small parts (two adds and a ReLU: cheap next to the matmuls), which saves one
    per-sample tensor of activations. Backward: the weight gradient and the input gradient as nn.Linear's, the
    ReLU mask, then each part's gradient summed over the dimensions it was broadcast along."""

    @staticmethod
    def forward(ctx, a, b, c, weight, bias):  # type: ignore[override]
        hidden = _relu_sum(a, b, c)
        ctx.save_for_backward(a, b, c, weight)
        return F.linear(hidden, weight, bias)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        a, b, c, weight = ctx.saved_tensors
        hidden = _relu_sum(a, b, c)
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


class _ReluSum:
    """h = relu(a + b + c) of the first layer's parts (a, b, c (..., H) broadcasting to the samples) for the two
    autograd nodes of decode "ray" that read it per sample, the density row (`_DensityRowOfReluSum`) and the
    compositing (`_Composite`): neither keeps it for backward. The first of them to run backward recomputes it (two
    adds and a ReLU), the density row, which runs last, drops it. So the widest per-sample tensor of the render is not
    held from the forward to the backward: the end of the forward is a training step's memory peak."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor):
        self.parts = (a, b, c)
        self._recomputed: torch.Tensor | None = None

    def compute(self) -> torch.Tensor:
        return _relu_sum(*self.parts)

    def recomputed(self) -> torch.Tensor:
        if self._recomputed is None:
            self._recomputed = self.compute()
        return self._recomputed

    def release(self) -> None:
        self._recomputed = None


class _Composite(torch.autograd.Function):
    """`composite` (sum_i w_i v_i) as a batched (1 x N) @ (N x C) matmul. Backward forms the values' gradient
    w_i g_c as a broadcast product and the weights' v_i . g as a dot product over channels: autograd's own backward
    runs them as per-ray (N x 1) @ (1 x C) and (N x C) @ (C x 1) matmuls, on CPU several times slower than one pass
    each. With a `source` (`_ReluSum`) the values are not kept but recomputed in backward."""

    @staticmethod
    def forward(ctx, weights, values, source=None):  # type: ignore[override]
        ctx.source, ctx.values = source, (values.shape, values.dtype)
        ctx.save_for_backward(weights, *([values] if source is None else []))
        return (weights[..., None, :] @ values)[..., 0, :]

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        weights, *kept = ctx.saved_tensors
        shape, dtype = ctx.values
        values = kept[0] if ctx.source is None else ctx.source.recomputed().view(shape)
        grad_weights = grad_values = None
        if ctx.needs_input_grad[0]:
            grad_weights = torch.linalg.vecdot(values.to(grad.dtype), grad[..., None, :]).sum_to_size(weights.shape)
            grad_weights = grad_weights.to(weights.dtype)
        if ctx.needs_input_grad[1]:
            grad_values = (weights.to(grad.dtype)[..., None] * grad[..., None, :]).sum_to_size(shape).to(dtype)
        return grad_weights, grad_values, None


class _DensityRowOfReluSum(torch.autograd.Function):
    """The per-sample hidden layer h = relu(a + b + c) of the first layer's parts (`source`, a `_ReluSum`) and its
    density row s = h . w + bias (weight (1, H), bias (1,)): both outputs of one function, so backward gets both
    gradients at once and forms h's in one pass, g_h + g_s w, where autograd would run the density row's backward as
    a (samples x 1) @ (1 x H) matmul and then add the two per-sample gradients. Then the ReLU mask and each part's
    gradient summed over the dimensions it was broadcast along, as `_LinearOfReluSum`. h is not kept: backward takes
    it from the source, recomputed."""

    @staticmethod
    def forward(ctx, a, b, c, weight, bias, source):  # type: ignore[override]
        hidden = source.compute()
        ctx.source = source
        ctx.save_for_backward(weight)
        return (hidden @ weight[0].to(hidden.dtype)).add_(bias.to(hidden.dtype)), hidden

    @staticmethod
    def backward(ctx, grad_sigma, grad_hidden):  # type: ignore[override]
        weight, = ctx.saved_tensors
        hidden = ctx.source.recomputed()
        ctx.source.release()
        dtype = grad_sigma.dtype
        row = weight[0].to(dtype)
        if grad_hidden is None:
            grad = grad_sigma[..., None] * row
        else:
            grad = torch.addcmul(grad_hidden.to(dtype), grad_sigma[..., None], row)
        grad = _relu_backward(grad, hidden)
        flat = grad_sigma.reshape(1, -1)
        grad_weight = (flat @ hidden.reshape(flat.shape[1], -1).to(dtype)).to(weight.dtype)
        grad_bias = flat.sum(1).to(weight.dtype)
        return (*(grad.sum_to_size(x.shape).to(x.dtype) for x in ctx.source.parts), grad_weight, grad_bias, None)


def _task_hidden(feature: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor,
                                                                                           torch.Tensor]:
    """relu(feature) and relu(linear(relu(feature))), both 2-D (samples, channels): on a 2-D input the in-place
    ReLU acts on the matmul's own output (not a view, which would cost a copy in backward)."""
    relu_feature = F.relu(feature).reshape(-1, feature.shape[-1])
    return relu_feature, F.linear(relu_feature, weight, bias).relu_()


def first_layer_factors(field: TriplaneField, factors: Parts, aggregation: str) -> Parts | None:
    """The shared MLP's first pre-activation split over the three tri-plane reads: W (a + b + c) + bias =
    W a + W b + (W c + bias) (mean: W / 3; concat: W's three column blocks), so it runs per pixel, per (column,
    sample) and per (row, sample) instead of per sample. None for "product", which is not linear."""
    if aggregation == "product":
        return None
    first = field.shared_hidden
    if aggregation == "concat":
        weights = first.weight.split(first.weight.shape[1] // 3, dim=1)
    else:
        weights = (first.weight / 3.0,) * 3 if aggregation == "mean" else (first.weight,) * 3
    a, b, c = factors
    return F.linear(a, weights[0]), F.linear(b, weights[1]), F.linear(c, weights[2], first.bias)


def density_from_parts(field: TriplaneField, a: torch.Tensor, b: torch.Tensor,
                       c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sigma, f from the first layer's parts (`first_layer_factors`), broadcast to the samples."""
    second = field.shared_out
    return field.density_head(_LinearOfReluSum.apply(a, b, c, second.weight, second.bias))


def density_composite_from_parts(field: TriplaneField, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[
        torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """sigma (B, r, N) and the compositing function of f, from the first layer's parts (`first_layer_factors`,
    broadcasting to (B, h, w, N, H), r = h w). The second layer's feature rows are linear, so
    sum_i w_i (W h_i + b) = W (sum_i w_i h_i) + b opacity: only its density row runs per sample and W once per ray
    (the per-sample (1 + F) x H matmul was ray decoding's largest cost at host sizes). The function maps weights
    (B, r, N) to the composited feature (B, r, F); autograd keeps no per-sample tensor of H channels: the hidden
    layer h is recomputed in backward (`_ReluSum`)."""
    second = field.shared_out
    source = _ReluSum(a, b, c)
    sigma, hidden = _DensityRowOfReluSum.apply(a, b, c, second.weight[:1], second.bias[:1], source)
    sigma, hidden = sigma.flatten(1, 2), hidden.flatten(1, 2)
    weight, bias = second.weight[1:], second.bias[1:]

    def composite_feature(weights: torch.Tensor) -> torch.Tensor:
        opacity = accumulated_opacity(weights)
        dtype = torch.promote_types(weights.dtype, hidden.dtype)  # as `composite`
        composited = _Composite.apply(weights.to(dtype), hidden.to(dtype), source)
        return F.linear(composited, weight) + bias * opacity[..., None].to(bias.dtype)

    return field.activation(sigma), composite_feature


def composite_task_hidden(field: TriplaneField, weights: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
    """The task MLPs up to their last layer, all tasks at once (one ReLU of f, the hidden layers as one matmul),
    composited: weights (B, r, N), feature (B, r, N, F) -> (B, r, T * task_hidden) in task order; the hidden layer
    is recomputed in backward rather than kept (`_CompositeOfTaskHidden`)."""
    hidden = [mlp.hidden for mlp in field.task_mlps.values()]
    weight, bias = torch.cat([layer.weight for layer in hidden]), torch.cat([layer.bias for layer in hidden])
    return _CompositeOfTaskHidden.apply(weights, feature, weight, bias)


def task_outputs(field: TriplaneField, hidden: torch.Tensor, opacity: torch.Tensor) -> dict[str, torch.Tensor]:
    """The task MLPs' last layers on their composited hidden layer sum_i w_i h_i (..., T * task_hidden) ->
    {task: (..., C_t)}: sum_i w_i (W h_i + b) = W hidden + b opacity (opacity (...))."""
    out = {}
    for (name, mlp), block in zip(field.task_mlps.items(), hidden.split(field.task_hidden_dim, dim=-1)):
        value = F.linear(block, mlp.out.weight, mlp.out.bias)
        out[name] = value - mlp.out.bias * (1.0 - opacity[..., None]).to(value.dtype)
    return out


class _HalveByBlockMean(torch.autograd.Function):
    """(B, C, 2h, 2w) -> (B, C, h, w), the mean of each 2x2 block: rows paired, then columns, each a plain sum of
    two strided slices (the order and rounding of the former sums over reshaped axes, bit for bit). Backward
    spreads a quarter of each gradient over its block in one broadcast copy, where autograd's own backward of the
    slices and sums zero-fills and copies the full-size gradient several times."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        rows = x[:, :, 0::2] + x[:, :, 1::2]
        return (rows[..., 0::2] + rows[..., 1::2]) * 0.25

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        b, c, h, w = grad.shape
        return (grad * 0.25)[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)


def resize_planes(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`resize_bilinear` of (B, C, h, w) to `size`; to exactly half, the mean of each 2x2 block (every
    output pixel centre lies midway between two input centres along each axis: `_HalveByBlockMean`, a fraction of
    the interpolation's time forward and backward on CPU)."""
    if tuple(x.shape[-2:]) != (2 * size[0], 2 * size[1]):
        return resize_bilinear(x, size)
    return _HalveByBlockMean.apply(x)


def project_scales(conv: torch.nn.Conv2d, scales: list[torch.Tensor]) -> torch.Tensor:
    """conv(fuse_scales(scales)) of a 1x1 `conv` without the fused map: sum_i up(W_i x_i) + bias, W_i the block of
    the weight that reads scale i, each term upsampled (bilinear) to the finest scale's size."""
    weights = conv.weight.split([x.shape[1] for x in scales], dim=1)
    size = tuple(scales[0].shape[-2:])
    out = F.conv2d(scales[0], weights[0], conv.bias)
    for x, weight in zip(scales[1:], weights[1:]):
        out = out.add_(resize_bilinear(F.conv2d(x, weight), size))
    return out


class FusedRegularizer(Regularizer):
    """`Regularizer` with the exact rewrites above: the same modules, parameters and state-dict names."""

    factored = True  # grid cameras hand the field a `CubeGrid`; others still get points

    def planes(self, features: torch.Tensor, scales: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The projector's planes of features (B, D, h, w). A `plane_size` smaller than the features: resized
        first, resize(conv(x)) = conv(resize(x)), with the convolution on the smaller grid (cheaper than projecting
        the scales at their own sizes and upsampling the projections to the finest). Otherwise, with the `scales`
        the features fuse, projected scale by scale (`project_scales`), then resized to a larger `plane_size`."""
        projector, size = self.projector, self.projector.plane_size
        if size is not None and size[0] * size[1] < features.shape[-2] * features.shape[-1]:
            planes = projector.conv(resize_planes(features, size))
        elif scales is not None and len(scales) > 1 and sum(x.shape[1] for x in scales) == features.shape[1]:
            planes = project_scales(projector.conv, scales)
            if size is not None and tuple(planes.shape[-2:]) != tuple(size):
                planes = resize_bilinear(planes, size)
        else:
            return projector(features)
        return planes.view(planes.shape[0], 3, projector.plane_channels, *planes.shape[-2:])

    def field_function(self, planes: torch.Tensor) -> FieldFn:
        per_point, aggregation = self.per_point, self.config.aggregation
        factored: dict[int, tuple] = {}  # the grid's tri-plane reads (first layer applied), once per render

        def grid_parts(samples: CubeSamples) -> tuple[bool, Parts]:
            """Whether the first layer is applied (a linear aggregation), and the reads of the chunk's rows."""
            if id(samples.grid) not in factored:
                reads = triplane_grid_factors(planes, samples.grid)
                parts = first_layer_factors(self.field, reads, aggregation)
                factored[id(samples.grid)] = (parts is not None, parts or reads)
            linear, (xy, xz, yz) = factored[id(samples.grid)]
            return linear, (xy[:, samples.rows], xz, yz[:, samples.rows])

        def grid_density(linear: bool, parts: Parts) -> tuple[torch.Tensor, torch.Tensor]:
            if linear:
                sigma, feature = density_from_parts(self.field, *parts)
            else:
                sigma, feature = self.field.density(aggregate_reads(parts, aggregation))
            batch, rows, cols, n = sigma.shape
            return sigma.reshape(batch, rows * cols, n), feature.reshape(batch, rows * cols, n, -1)

        def field(samples: CubeSamples) -> FieldOutput:
            if samples.grid is None:
                sigma, feature = self.field.density(triplane_features(planes, samples, aggregation))
            else:
                linear, parts = grid_parts(samples)
                if linear and not per_point:
                    sigma, composite_feature = density_composite_from_parts(self.field, *parts)
                    return FieldOutput(sigma, composite=composite_feature)
                sigma, feature = grid_density(linear, parts)
            if not per_point:
                return FieldOutput(sigma, values=feature)
            # composite the task MLPs' hidden layer; their last layer runs per ray (`rendered_values`). The
            # composited feature is only shown (render-views), never supervised here: composited without gradient
            return FieldOutput(sigma, composite=functools.partial(composite_task_hidden, self.field, feature=feature),
                               shown=feature)

        return field

    def rendered_values(self, out: RenderedRays) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self.per_point:
            return out.values, self.field.decode(out.values)
        return out.shown, task_outputs(self.field, out.values, out.opacity)
