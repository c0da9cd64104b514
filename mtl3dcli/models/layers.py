"""Small building blocks shared by the hosts: input normalization, conv-BN-ReLU, and batched map resizing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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


def upsample_maps(maps: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Bilinearly resize several (B, C_t, h, w) maps of one size to `size` with one interpolate call (cheaper than one
    each). Maps already at `size` are returned as they are."""
    names = list(maps)
    if not names:
        return {}
    stacked = torch.cat([maps[n] for n in names], dim=1)
    if tuple(stacked.shape[-2:]) != tuple(size):
        stacked = F.interpolate(stacked, size=size, mode="bilinear", align_corners=False)
    return dict(zip(names, stacked.split([maps[n].shape[1] for n in names], dim=1)))


def fuse_scales(feats: list[torch.Tensor]) -> torch.Tensor:
    """Upsample every scale to the finest one (bilinear) and concatenate: the HRNet multi-task feature map."""
    size = feats[0].shape[-2:]
    ups = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
    return torch.cat(ups, dim=1)
