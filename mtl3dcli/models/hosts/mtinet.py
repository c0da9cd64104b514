"""MTI-Net (Vandenhende, Georgoulis and Van Gool, ECCV 2020) on an HRNet, as Multi-Task-Learning-PyTorch builds it.

    image -> HRNet -> four maps, stride 4/8/16/32, widths C/2C/4C/8C (C = 18 for hrnet18, 48 for hrnet48)
    1/32: initial per-task predictions ------------------------------> FPM --+
    1/16: initial predictions from [backbone 1/16, up2(FPM_t)] <-------------+--> FPM --+
    1/8 : ... same ...                                                                 ... --> FPM --+
    1/4 : initial predictions from [backbone 1/4, up2(FPM_t)] <----------------------------------------+
    every scale: multi-modal distillation (PAD-Net) of the per-task features
    per task: upstream HighResolutionHead over its four distilled maps at 1/4 -> bilinear to the input size

Information flows coarse to fine: each scale's initial predictions see the backbone at that scale plus what the
coarser scale learnt about the same task, after the feature propagation module (FPM) let the tasks exchange it.
The initial predictions of all four scales are deep-supervised (returned in `aux` as "scale_0" (stride 4) to
"scale_3" (stride 32); the objective upsamples them to the label size and weighs them like the final outputs).
Every task is both an auxiliary task (initial predictions, FPM, distillation source) and a main task (final
head), as the ICLR-2024 paper and InvPT report MTI-Net on NYUv2.

`features` (what the 3D-aware regularizer projects to a tri-plane) is the shared encoder output: the backbone's
four scales upsampled to stride 4 and concatenated (`fuse_scales`, 15C channels), exactly the map the baseline
host decodes, so the regularizer reads the same shared representation in both hosts and the task-specific
decoder stays the host's own.

Parameter counts equal upstream's exactly (random init; research/hosts.md): HRNet-18 NYUv2 4 tasks 17,960,945,
PASCAL 5 tasks 24,494,171; HRNet-48 165,402,153 and 211,871,031. Almost all of it is decoder, and most of the
decoder is the distillation: N(N-1) spatial-attention blocks of two 3x3 convs per scale. With
fpm_attention="upstream" and the same weights and backbone, outputs and deep-supervision maps equal the upstream
`MTINet`'s exactly in float64 (checked once against upstream commit ed3d9ac). The backbone is upstream's function
too (backbones.py: bilinear branch fusion, BatchNorm momentum 0.01): with the same weights, upstream `seg_hrnet`'s
HRNet-W18-Small-v2 and W48 give identical float64 outputs and BatchNorm running statistics in eval and train mode.

host_options:
  fpm_attention  "tasks" (default): the FPM's softmax runs across the N tasks for every channel and pixel, the
                 task attention the paper describes. "upstream": the upstream reshape, `view(B, C/N, N, H, W)` of
                 the task-major concatenation, which softmaxes over groups of N adjacent channels instead (mostly
                 channels of one task); same parameters, only for reproducing the upstream code bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.backbones import Backbone, build_backbone
from mtl3dcli.models.hosts import Host, HostOutput, HostSpec
from mtl3dcli.models.hosts.baseline import hrnet_head
from mtl3dcli.models.layers import ImageNormalize, fuse_scales, upsample_maps

FPM_ATTENTION = ("tasks", "upstream")


class BasicBlock(nn.Module):
    """The ResNet basic block: two bias-free 3x3 conv-BN, ReLU between and after the residual sum. When the width
    changes, the skip is a 1x1 conv-BN projection (upstream passes it as `downsample`, stride 1 throughout)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Identity() if cin == cout else \
            nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.skip(x))


class SqueezeExcite(nn.Module):
    """x * sigmoid(MLP(spatial mean of x)): a per-channel gate; hidden width channels // 16 (at least 1, so tiny
    backbones build; every HRNet width is >= 16, where it equals upstream)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=(2, 3)))[:, :, None, None]


class SpatialAttention(nn.Module):
    """conv3x3(x) * sigmoid(conv3x3(x)), both bias-free: PAD-Net's message from one task's features to another's."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.attention = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.sigmoid(self.attention(x))


class InitialPrediction(nn.Module):
    """One scale's initial predictions: per task two basic blocks (the first projects `cin` to the scale's width
    when they differ) give the task's features, a 1x1 conv (with bias) its prediction."""

    def __init__(self, channels: dict[str, int], cin: int, width: int):
        super().__init__()
        self.refine = nn.ModuleDict({t: nn.Sequential(BasicBlock(cin, width), BasicBlock(width, width))
                                     for t in channels})
        self.predict = nn.ModuleDict({t: nn.Conv2d(width, c, 1) for t, c in channels.items()})

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """inputs: {task: (B, cin, h, w)} -> ({task: features (B, width, h, w)}, {task: prediction (B, C_t, h, w)})."""
        features = {t: self.refine[t](x) for t, x in inputs.items()}
        return features, {t: self.predict[t](f) for t, f in features.items()}


class FeaturePropagation(nn.Module):
    """FPM: the tasks' features at one scale exchange information before going to the next finer scale.

    concat (N*C) -> basic block to N*C/4 -> basic block -> 1x1 conv back to N*C: one logit per task, channel and
    pixel; softmax across tasks weighs the concatenation; a basic block reduces N*C -> C (the shared message);
    each task gates it with its own squeeze-and-excitation and adds it to its own features (residual)."""

    def __init__(self, tasks: list[str], width: int, attention: str = "tasks"):
        super().__init__()
        self.tasks, self.attention = list(tasks), attention
        shared = len(tasks) * width
        self.logits = nn.Sequential(BasicBlock(shared, shared // 4), BasicBlock(shared // 4, shared // 4),
                                    nn.Conv2d(shared // 4, shared, 1))
        self.reduce = BasicBlock(shared, width)
        self.gate = nn.ModuleDict({t: SqueezeExcite(width) for t in tasks})

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        concat = torch.cat([features[t] for t in self.tasks], dim=1)  # task-major: (B, N*C, h, w)
        b, nc, h, w = concat.shape
        n = len(self.tasks)
        # "tasks": (B, N, C) so softmax(dim=1) compares the tasks; "upstream": (B, C, N), N adjacent channels
        shape, dim = ((b, n, nc // n, h, w), 1) if self.attention == "tasks" else ((b, nc // n, n, h, w), 2)
        weights = torch.softmax(self.logits(concat).view(shape), dim=dim)
        shared = self.reduce((weights * concat.view(shape)).view(b, nc, h, w))
        return {t: self.gate[t](shared) + features[t] for t in self.tasks}


class Distillation(nn.Module):
    """PAD-Net's multi-modal distillation: f_t + sum over the other tasks a of SpatialAttention_{t<-a}(f_a)."""

    def __init__(self, tasks: list[str], width: int):
        super().__init__()
        self.messages = nn.ModuleDict({t: nn.ModuleDict({a: SpatialAttention(width) for a in tasks if a != t})
                                       for t in tasks})

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {t: features[t] + sum(m(features[a]) for a, m in messages.items())
                for t, messages in self.messages.items()}


class MTINetHost(Host):
    def __init__(self, backbone: Backbone, channels: dict[str, int], fpm_attention: str = "tasks"):
        super().__init__()
        if len(backbone.channels) != 4:
            raise Mtl3dError(f"mti-net needs a backbone with 4 scales (strides 4, 8, 16, 32); this one has "
                             f"{len(backbone.channels)}")
        if len(channels) < 2:
            raise Mtl3dError("mti-net needs at least two tasks (its modules exchange information between tasks)")
        tasks, widths = list(channels), list(backbone.channels)
        self.normalize = ImageNormalize()
        self.backbone = backbone
        self.feature_channels = sum(widths)
        # index k = scale k (0: stride 4 ... 3: stride 32); scales below the coarsest also take the upsampled
        # FPM output of scale k+1, which has that scale's width
        self.initial = nn.ModuleList(InitialPrediction(channels, widths[k] + (widths[k + 1] if k < 3 else 0),
                                                       widths[k]) for k in range(4))
        self.propagate = nn.ModuleDict({str(k): FeaturePropagation(tasks, widths[k], fpm_attention)
                                        for k in (1, 2, 3)})
        self.distill = nn.ModuleList(Distillation(tasks, widths[k]) for k in range(4))
        self.heads = nn.ModuleDict({t: hrnet_head(self.feature_channels, c) for t, c in channels.items()})

    def forward(self, image: torch.Tensor) -> HostOutput:
        scales = self.backbone(self.normalize(image))
        tasks = list(self.heads)
        aux: dict[str, dict[str, torch.Tensor]] = {}
        per_task: list[dict[str, torch.Tensor]] = [{} for _ in range(4)]  # per scale: {task: features}
        message: dict[str, torch.Tensor] | None = None  # FPM output of the coarser scale
        for k in (3, 2, 1, 0):
            x = scales[k]
            if message is None:
                inputs = {t: x for t in tasks}
            else:  # upstream doubles the size (scale_factor=2); sizing to the map also fits odd input sizes
                up = upsample_maps(message, tuple(x.shape[-2:]))
                inputs = {t: torch.cat([x, up[t]], dim=1) for t in tasks}
            per_task[k], aux[f"scale_{k}"] = self.initial[k](inputs)
            message = self.propagate[str(k)](per_task[k]) if k > 0 else None
        distilled = [self.distill[k](per_task[k]) for k in range(4)]
        outputs = {t: self.heads[t](fuse_scales([d[t] for d in distilled])) for t in tasks}
        return HostOutput(upsample_maps(outputs, tuple(image.shape[-2:])), fuse_scales(scales),
                          {f"scale_{k}": aux[f"scale_{k}"] for k in range(4)}, scales=scales)


def build_mtinet(spec: HostSpec) -> MTINetHost:
    model = spec.model
    options = dict(model.host_options)
    attention = options.pop("fpm_attention", "tasks")
    if options:
        raise Mtl3dError(f"unknown model.host_options for mti-net: {', '.join(sorted(options))}; "
                         f"available: fpm_attention")
    if attention not in FPM_ATTENTION:
        raise Mtl3dError(f"model.host_options.fpm_attention must be one of {', '.join(FPM_ATTENTION)}, "
                         f"not {attention!r}")
    backbone = build_backbone(model.backbone, model.backbone_options, model.width, spec.pretrained)
    return MTINetHost(backbone, spec.channels, attention)
