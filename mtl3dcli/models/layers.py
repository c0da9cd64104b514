"""Small building blocks shared by the hosts: input normalization, conv-BN-ReLU, and (batched) bilinear resizing."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNormalize(nn.Module):
    """Images in [0, 1] -> ImageNet-normalized, inside the network so callers and checkpoints never disagree."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, bias: bool = False) -> nn.Sequential:
    """Conv (same padding) -> BatchNorm -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=bias), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _BilinearResize(torch.autograd.Function):
    """F.interpolate(mode="bilinear", align_corners=False) of a contiguous CPU tensor, its gradient computed by the
    channels-last kernel. That kernel adds each output pixel's share into the input pixels in the same order as the
    contiguous one, so the gradient is the same bit for bit (tests/test_models.py), but it is vectorized over
    channels where the contiguous kernel runs scalar code: on the build machine half the time or less, even with
    the layout conversion (the demo's training step 8-10% faster)."""

    @staticmethod
    def forward(ctx, x, size):  # type: ignore[override]
        ctx.input_size = list(x.shape)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        grad = grad.contiguous(memory_format=torch.channels_last)
        out = torch.ops.aten.upsample_bilinear2d_backward(grad, list(grad.shape[-2:]), ctx.input_size, False)
        return out.contiguous(), None


SEPARABLE_MAX_SIDE = 32  # CPU inputs up to this size (both sides) resize as two matrix products


@functools.lru_cache(maxsize=128)
def bilinear_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (n_out, n_in) matrix of 1-D bilinear resizing with align_corners False, as PyTorch's kernels weigh it:
    output i reads the source position s = max((i + 0.5) n_in / n_out - 0.5, 0) (computed in `dtype`), weight
    1 - frac(s) on floor(s) and frac(s) on the next input (the last input takes both at the border). Cached, so built
    outside inference mode: a matrix first made under `torch.inference_mode()` could not serve a training step."""
    with torch.inference_mode(False):
        scale = torch.tensor(float(n_in), dtype=dtype) / n_out
        source = (scale * (torch.arange(n_out, dtype=dtype) + 0.5) - 0.5).clamp_min(0)
        lower = source.long().clamp_max(n_in - 1)
        upper = torch.where(lower < n_in - 1, lower + 1, lower)
        frac = source - lower
        rows = torch.arange(n_out)
        matrix = torch.zeros(n_out, n_in, dtype=dtype)
        matrix.index_put_((rows, lower), 1 - frac, accumulate=True)
        matrix.index_put_((rows, upper), frac, accumulate=True)
    return matrix


def _resize_separable(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resizing of a CPU tensor (..., h, w) as rows @ x @ cols^T: equal to F.interpolate to float rounding
    (its two weighted sums per output, in another order), and on CPU several times faster forward and backward for
    small inputs (the rendered maps, the coarse scales of a host), where the matrices' zeros cost less than the
    interpolation kernels' scalar loops and layout copies. Autocast is off: a resize keeps its input's precision."""
    rows, cols = bilinear_matrix(x.shape[-2], size[0], x.dtype), bilinear_matrix(x.shape[-1], size[1], x.dtype)
    with torch.autocast(x.device.type, enabled=False):
        return rows @ (x @ cols.t())


def _separable(x: torch.Tensor) -> bool:
    """Whether `resize_bilinear` resizes x as two matrix products (a small float CPU input, outside export)."""
    return (x.device.type == "cpu" and max(x.shape[-2:]) <= SEPARABLE_MAX_SIDE
            and x.dtype in (torch.float32, torch.float64) and not torch.compiler.is_compiling())


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """F.interpolate(x, size, mode="bilinear", align_corners=False) of (B, C, h, w), faster on CPU: small float
    inputs (both sides <= SEPARABLE_MAX_SIDE) as two matrix products (`_resize_separable`, equal to float rounding);
    larger ones with the same values and gradients bit for bit, the gradient from the channels-last kernel
    (`_BilinearResize`)."""
    if torch.compiler.is_compiling():  # export (ONNX) keeps symbolic sizes: int() would fix the input size
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    size = (int(size[0]), int(size[1]))
    if _separable(x):
        return _resize_separable(x, size)
    if x.device.type == "cpu" and x.requires_grad and torch.is_grad_enabled() and x.is_contiguous():
        return _BilinearResize.apply(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def upsample_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`resize_bilinear` of one (B, C, h, w) map to `size` (made contiguous first: a strided view, such as a
    rendered map, would resize into a channels-last output); a map already at `size` is returned as it is."""
    return x if tuple(x.shape[-2:]) == tuple(size) else resize_bilinear(x.contiguous(), size)


def upsample_maps(maps: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Bilinearly resize several (B, C_t, h, w) maps of one size to `size`. Maps already at `size` are returned as they
    are. Small CPU maps (`_resize_separable`) resize one by one, each output its own contiguous tensor (a split of one
    resized stack would make every loss read a strided slice and backward concatenate the full-size gradients);
    others with one interpolate call over all channels (cheaper than one each)."""
    names = list(maps)
    if not names:
        return {}
    first = maps[names[0]]
    if tuple(first.shape[-2:]) == tuple(size):
        return dict(maps)
    if _separable(first):
        return {name: upsample_map(maps[name], size) for name in names}
    stacked = resize_bilinear(torch.cat([maps[n] for n in names], dim=1), size)
    return dict(zip(names, stacked.split([maps[n].shape[1] for n in names], dim=1)))


def fuse_scales(feats: list[torch.Tensor]) -> torch.Tensor:
    """Upsample every scale to the finest one (bilinear) and concatenate: the HRNet multi-task feature map."""
    size = feats[0].shape[-2:]
    ups = [feats[0]] + [resize_bilinear(f, size) for f in feats[1:]]
    return torch.cat(ups, dim=1)
