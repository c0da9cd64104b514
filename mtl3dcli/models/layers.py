"""Small building blocks shared by the hosts: input normalization, conv-BN-ReLU, and (batched) bilinear resizing."""

from __future__ import annotations

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


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """F.interpolate(x, size, mode="bilinear", align_corners=False) of (B, C, h, w): the same values and gradients,
    the gradient faster on CPU (`_BilinearResize`)."""
    if not torch.compiler.is_compiling():  # export (ONNX) keeps symbolic sizes: int() would fix the input size
        size = (int(size[0]), int(size[1]))
    if x.device.type == "cpu" and x.requires_grad and torch.is_grad_enabled() and x.is_contiguous():
        return _BilinearResize.apply(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def upsample_maps(maps: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Bilinearly resize several (B, C_t, h, w) maps of one size to `size` with one interpolate call (cheaper than one
    each). Maps already at `size` are returned as they are."""
    names = list(maps)
    if not names:
        return {}
    stacked = torch.cat([maps[n] for n in names], dim=1)
    if tuple(stacked.shape[-2:]) != tuple(size):
        stacked = resize_bilinear(stacked, size)
    return dict(zip(names, stacked.split([maps[n].shape[1] for n in names], dim=1)))


def fuse_scales(feats: list[torch.Tensor]) -> torch.Tensor:
    """Upsample every scale to the finest one (bilinear) and concatenate: the HRNet multi-task feature map."""
    size = feats[0].shape[-2:]
    ups = [feats[0]] + [resize_bilinear(f, size) for f in feats[1:]]
    return torch.cat(ups, dim=1)
