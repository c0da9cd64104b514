"""The multi-task baseline: one shared encoder, its multi-scale features fused, one light decoder head per task.

This is the inference graph. The 3D-aware regularizer (models/regularizer.py) only reads `features` while
training, so a regularized model and its baseline have the same parameters and cost at inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl3dcli.models.backbones import Backbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def upsample_maps(maps: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Bilinearly resize several (B, C_t, h, w) maps to `size` with one interpolate call (cheaper than one each)."""
    names = list(maps)
    stacked = torch.cat([maps[n] for n in names], dim=1)
    if tuple(stacked.shape[-2:]) != tuple(size):
        stacked = F.interpolate(stacked, size=size, mode="bilinear", align_corners=False)
    return dict(zip(names, stacked.split([maps[n].shape[1] for n in names], dim=1)))


class FeatureFusion(nn.Module):
    """Upsample every scale to the finest one and concatenate (the standard HRNet multi-task baseline)."""

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        ups = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return torch.cat(ups, dim=1)


class TaskHead(nn.Module):
    """1x1 conv to `hidden` channels (cheap on the wide fused features), a 3x3 conv for spatial context, then a
    1x1 conv to the task's output channels; BN + ReLU between."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class MultiTaskNet(nn.Module):
    """image (B, 3, H, W) in [0, 1] -> {task: raw output (B, C_t, H, W)} at the input resolution.

    `channels` maps task name -> output channels (from the task registry). ImageNet normalization happens
    inside, so callers and checkpoints never disagree about it.
    """

    def __init__(self, backbone: Backbone, channels: dict[str, int], head_channels: int = 64):
        super().__init__()
        self.backbone = backbone
        self.fusion = FeatureFusion()
        self.feature_channels = sum(backbone.channels)
        self.feature_stride = backbone.reductions[0]
        self.heads = nn.ModuleDict({name: TaskHead(self.feature_channels, head_channels, c)
                                    for name, c in channels.items()})
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Fused multi-scale features (B, feature_channels, H / stride, W / stride)."""
        return self.fusion(self.backbone((image - self.mean) / self.std))

    def decode(self, features: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Task outputs upsampled (bilinear, one call for all heads) to `size`."""
        return upsample_maps({name: head(features) for name, head in self.heads.items()}, size)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(self.features(image), tuple(image.shape[-2:]))
