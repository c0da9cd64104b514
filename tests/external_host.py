"""A host written outside the package, as a user writes one: tests/test_external_host.py trains it through the CLI
(`model.host: "external_host:build"`) and builds it by its registered name."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from mtl3dcli import Host, HostOutput, HostSpec, register_host


class TwoConvHost(Host):
    """Two strided convolutions (stride 4) as the encoder, a 1x1 conv head per task, upsampled to the input."""

    size_divisor = 4

    def __init__(self, channels: dict[str, int], width: int):
        super().__init__()
        self.feature_channels = width
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.heads = nn.ModuleDict({name: nn.Conv2d(width, c, 1) for name, c in channels.items()})

    def forward(self, image):
        features = self.encoder(image)
        outputs = {name: F.interpolate(head(features), size=image.shape[-2:], mode="bilinear", align_corners=False)
                   for name, head in self.heads.items()}
        return HostOutput(outputs, features)


def build(spec: HostSpec) -> Host:
    return TwoConvHost(spec.channels, int(spec.model.host_options.get("width", 8)))


@register_host("test-two-conv")
def build_registered(spec: HostSpec) -> Host:
    return build(spec)
