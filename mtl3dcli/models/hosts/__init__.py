"""Host networks: the multi-task architectures the 3D-aware regularizer plugs into.

A host maps an image in [0, 1] (B, 3, H, W) to a `HostOutput`: the final raw output of every task at the input
resolution, the shared feature map that the regularizer projects to a tri-plane (`features`, declared once per host
as `feature_channels`), and optional auxiliary predictions that get their own loss terms (deep supervision). The
objective, evaluation, predict and render-views only read `HostOutput`, so they work unchanged for every host; the
regularizer reads `features` while training and is never part of the host, so inference costs the same with or
without it.

    baseline  backbone -> fused scales -> one head per task (the standard MTL baseline)
    mti-net   HRNet -> per-scale initial predictions, feature propagation, multi-modal distillation, aggregation
    invpt     ViT -> preliminary decoder -> UP-Transformer with joint task attention -> multi-scale aggregation
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from mtl3dcli.config import ModelConfig
from mtl3dcli.errors import Mtl3dError


@dataclass
class HostOutput:
    """outputs: {task: raw output (B, C_t, H, W)} at the input resolution (what `Task.activate` takes).
    features: (B, feature_channels, h, w), the shared encoder features the regularizer projects.
    aux: {group: {task: raw output (B, C_t, h', w')}} at any resolution (e.g. MTI-Net's "scale_0".."scale_3",
    InvPT's "inter"); the objective upsamples them to the label size and weighs them like the final outputs."""

    outputs: dict[str, torch.Tensor]
    features: torch.Tensor
    aux: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


@dataclass(frozen=True)
class HostSpec:
    """What a host builder needs. channels: {task: output channels} in task order; image_size: the training input
    (H, W), for hosts whose token grid is sized for it (InvPT); pretrained: None, "imagenet" or a local file (None
    when rebuilding from a weights file, which holds every tensor)."""

    model: ModelConfig
    channels: dict[str, int]
    image_size: tuple[int, int]
    pretrained: str | None = None


class Host(nn.Module):
    """Base class: subclasses set `feature_channels` and `size_divisor` (input sides must be multiples of it; the
    inference session pads other sizes) and implement `forward(image) -> HostOutput`."""

    feature_channels: int
    size_divisor: int = 32

    def forward(self, image: torch.Tensor) -> HostOutput:  # pragma: no cover - abstract
        raise NotImplementedError


def _baseline(spec: HostSpec) -> Host:
    from mtl3dcli.models.hosts.baseline import build_baseline

    return build_baseline(spec)


def _mtinet(spec: HostSpec) -> Host:
    from mtl3dcli.models.hosts.mtinet import build_mtinet

    return build_mtinet(spec)


def _invpt(spec: HostSpec) -> Host:
    from mtl3dcli.models.hosts.invpt import build_invpt

    return build_invpt(spec)


HOSTS: dict[str, Callable[[HostSpec], Host]] = {"baseline": _baseline, "mti-net": _mtinet, "invpt": _invpt}


def build_host(spec: HostSpec) -> Host:
    if spec.model.host not in HOSTS:
        raise Mtl3dError(f"unknown model.host {spec.model.host!r}; available: {', '.join(HOSTS)}")
    return HOSTS[spec.model.host](spec)
