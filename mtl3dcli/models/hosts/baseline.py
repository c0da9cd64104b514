"""The multi-task baseline: one shared encoder, its multi-scale features fused, one decoder head per task.

This is the standard baseline of the MTL codebases (Multi-Task-Learning-PyTorch's `MultiTaskModel` with an HRNet):
every scale upsampled to the finest one (stride 4) and concatenated, then a head per task, then bilinear
upsampling to the input size. The fused map is also what the regularizer projects.

Heads (`model.head`):
  hrnet  1x1 conv (with bias) -> BN -> ReLU -> 1x1 conv to the task's channels, keeping the fused width: the
         upstream `HighResolutionHead` (HRNet-18, NYUv2 4 tasks: 4,167,755 parameters in all, as upstream)
  light  1x1 conv to `head_channels` -> BN-ReLU -> 3x3 conv -> BN-ReLU -> 1x1 conv: cheaper on wide fused maps
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.backbones import Backbone, build_backbone
from mtl3dcli.models.hosts import Host, HostOutput, HostSpec
from mtl3dcli.models.layers import ImageNormalize, conv_bn_relu, fuse_scales, upsample_maps


def hrnet_head(in_channels: int, out_channels: int) -> nn.Sequential:
    """The upstream HighResolutionHead on already fused features: 1x1 conv-BN-ReLU at full width, 1x1 conv out."""
    return nn.Sequential(nn.Conv2d(in_channels, in_channels, 1), nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                         nn.Conv2d(in_channels, out_channels, 1))


class LightHead(nn.Module):
    """1x1 conv to `hidden` channels (cheap on the wide fused features), 3x3 conv for context, 1x1 conv out; BN +
    ReLU between. (Its parameter names are those of mtl3d 0.1's task heads, so older weights files still load.)"""

    def __init__(self, in_channels: int, hidden: int, out_channels: int):
        super().__init__()
        self.block = nn.Sequential(*conv_bn_relu(in_channels, hidden, 1), *conv_bn_relu(hidden, hidden, 3),
                                   nn.Conv2d(hidden, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


# model.head: (fused channels, head_channels, task channels) -> the task's head
HEADS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "hrnet": lambda fused, hidden, out: hrnet_head(fused, out),
    "light": LightHead,
}


class BaselineHost(Host):
    def __init__(self, backbone: Backbone, channels: dict[str, int], head: str = "light", head_channels: int = 64):
        super().__init__()
        self.normalize = ImageNormalize()
        self.backbone = backbone
        self.feature_channels = sum(backbone.channels)
        self.size_divisor = backbone.size_divisor
        make = HEADS[head]
        self.heads = nn.ModuleDict({name: make(self.feature_channels, head_channels, c)
                                    for name, c in channels.items()})

    def forward(self, image: torch.Tensor) -> HostOutput:
        scales = self.backbone(self.normalize(image))
        features = fuse_scales(scales)
        outputs = upsample_maps({name: head(features) for name, head in self.heads.items()},
                                tuple(image.shape[-2:]))
        return HostOutput(outputs, features, scales=scales)


def build_baseline(spec: HostSpec) -> BaselineHost:
    model = spec.model
    if model.host_options:
        raise Mtl3dError(f"the baseline host takes no model.host_options, got {', '.join(sorted(model.host_options))}")
    backbone = build_backbone(model.backbone, model.backbone_options, model.width, spec.pretrained)
    return BaselineHost(backbone, spec.channels, model.head, model.head_channels)
