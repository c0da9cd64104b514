"""Image encoders behind one interface: `forward(image) -> list of feature maps`, with `channels` and `reductions`.

Every backbone is built from a registry entry. ImageNet weights come from `pretrained`: None (random init),
"imagenet" (timm's own download and cache, as timm users expect; torchvision's for resnet50) or the path of a
local file (`load_pretrained`). timm and torchvision provide the real architectures; the tiny CNN exists so the
demo and the tests train in minutes on a CPU.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mtl3dcli.errors import Mtl3dError


class Backbone(nn.Module):
    """Wraps an encoder so it returns NCHW feature maps from fine to coarse. `size_divisor`: input sides must be
    multiples of it (HRNet's branch fusion needs every stride to divide them; plain strided CNNs take any size)."""

    def __init__(self, encoder: nn.Module, channels: list[int], reductions: list[int], extract: Callable | None = None,
                 size_divisor: int = 1):
        super().__init__()
        self.encoder = encoder
        self.channels = list(channels)
        self.reductions = list(reductions)
        self.size_divisor = size_divisor
        self._extract = extract

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        feats = self._extract(self.encoder, image) if self._extract else self.encoder(image)
        # some timm models (Swin) return NHWC; the channel count tells which axis holds channels
        return [f if f.shape[1] == c else f.permute(0, 3, 1, 2).contiguous() for f, c in zip(feats, self.channels)]


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyEncoder(nn.Module):
    """Four stages at strides 4, 8, 16, 32 with two 3x3 convs each: a few hundred thousand parameters."""

    def __init__(self, width: int = 32):
        super().__init__()
        widths = [width, width * 2, width * 3, width * 4]
        self.stem = nn.Sequential(_conv_bn(3, width // 2, 2), _conv_bn(width // 2, width, 2))
        stages, cin = [], width
        for i, cout in enumerate(widths):
            stages.append(nn.Sequential(_conv_bn(cin, cout, 1 if i == 0 else 2), _conv_bn(cout, cout, 1)))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.widths = widths

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x, feats = self.stem(image), []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def _tiny(options: dict[str, Any], width: int, pretrained: str | None) -> Backbone:
    if pretrained:
        raise Mtl3dError("the tiny backbone has no ImageNet weights (set model.pretrained=null)")
    encoder = TinyEncoder(width)
    return Backbone(encoder, encoder.widths, [4, 8, 16, 32])


PRETRAINED_HELP = ("download them on a machine with internet access (they land in the Hugging Face cache, "
                   "~/.cache/huggingface, which you can copy) or set model.pretrained=PATH to a local safetensors "
                   "or torch state-dict file")


def create_timm(name: str, pretrained: str | None = None, **kwargs: Any) -> nn.Module:
    """`timm.create_model(name, **kwargs)` with our `pretrained` semantics: None = random init, "imagenet" = timm's
    default pretrained tag through its own download and cache (a one-line error when that fails, e.g. offline),
    anything else = a local weights file loaded with `load_pretrained`."""
    import timm

    download = pretrained == "imagenet"
    try:
        model = timm.create_model(name, pretrained=download, **kwargs)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise Mtl3dError(f"cannot build timm model {name!r} with {kwargs}: {str(exc).splitlines()[0]}") from None
    except OSError as exc:  # huggingface_hub's offline / not-found errors are OSErrors
        raise Mtl3dError(f"cannot fetch ImageNet weights for {name!r} ({type(exc).__name__}); {PRETRAINED_HELP}") from None
    if pretrained and not download:
        load_pretrained(model, pretrained)
    return model


def _timm(name: str, defaults: dict[str, Any] | None = None) -> Callable[[dict[str, Any], int, str | None], Backbone]:
    def build(options: dict[str, Any], width: int, pretrained: str | None) -> Backbone:
        encoder = create_timm(name, pretrained, features_only=True, **{**(defaults or {}), **options})
        info = encoder.feature_info
        return Backbone(encoder, info.channels(), info.reduction(), size_divisor=max(info.reduction()))

    return build


def _resnet50(options: dict[str, Any], width: int, pretrained: str | None) -> Backbone:
    import torchvision

    weights = "IMAGENET1K_V2" if pretrained == "imagenet" else None
    try:
        encoder = torchvision.models.resnet50(weights=weights, **options)
    except OSError as exc:  # urllib's URLError when offline
        raise Mtl3dError(f"cannot fetch ImageNet weights for resnet50 ({exc}); {PRETRAINED_HELP}") from None
    if pretrained and pretrained != "imagenet":
        load_pretrained(encoder, pretrained)
    del encoder.fc, encoder.avgpool

    def extract(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        feats = []
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            x = layer(x)
            feats.append(x)
        return feats

    return Backbone(encoder, [256, 512, 1024, 2048], [4, 8, 16, 32], extract)


# Upstream HRNet (Multi-Task-Learning-PyTorch `models/seg_hrnet.py`, as HRNet-Semantic-Segmentation) differs from
# timm's (HRNet-Image-Classification) in function, not in parameters: a coarser branch is fused into a finer one by
# bilinear resizing to the finer branch's exact size (align_corners False) where timm uses nearest upsampling by a
# scale factor, and every backbone BatchNorm has momentum 0.01 where timm's has 0.1. Compared once (upstream
# ed3d9ac, float64, 96x128, random weights copied into upstream's `HighResolutionNet` by name order): W18-Small-v2 and
# W48 outputs and running statistics are identical in eval and train mode; timm's own function differs by 26% (eval)
# and 56% (train) of the output range. tests/test_hrnet_upstream.py checks the properties that make this so.
UPSTREAM_BN_MOMENTUM = 0.01
HRNET_FUSIONS = ("bilinear", "nearest")


def _bilinear_fuse_forward(self: nn.Module, x: list[torch.Tensor]) -> list[torch.Tensor]:
    """timm `HighResolutionModule.forward` with upstream's fusion: y_i = relu(sum_j f_ij(x_j)), each coarser term
    resized bilinearly to x_i's size (its `fuse_layers[i][j]` ends in an Identity where timm had an Upsample)."""
    if self.num_branches == 1:
        return [self.branches[0](x[0])]
    x = [branch(xi) for branch, xi in zip(self.branches, x)]
    fused = []
    for i, fuse_row in enumerate(self.fuse_layers):
        y = fuse_row[0](x[0])
        for j in range(1, self.num_branches):
            term = fuse_row[j](x[j])
            if j > i:
                term = F.interpolate(term, size=x[i].shape[-2:], mode="bilinear", align_corners=False)
            y = y + term
        fused.append(self.fuse_act(y))
    return fused


def make_upstream_hrnet(encoder: nn.Module, fusion: str = "bilinear",
                        bn_momentum: float | None = UPSTREAM_BN_MOMENTUM) -> nn.Module:
    """Give a timm HRNet upstream's function in place: `fusion="bilinear"` swaps every fuse upsampler for an Identity
    and resizes bilinearly in the module's forward; `bn_momentum` is set on every BatchNorm (None keeps timm's).
    Parameter names and shapes are untouched, so timm's ImageNet weights load as before."""
    from timm.models.hrnet import HighResolutionModule

    if fusion not in HRNET_FUSIONS:
        raise Mtl3dError(f"unknown HRNet fusion {fusion!r}; available: {', '.join(HRNET_FUSIONS)}")
    for module in encoder.modules():
        if isinstance(module, nn.BatchNorm2d) and bn_momentum is not None:
            module.momentum = bn_momentum
        if fusion == "bilinear" and isinstance(module, HighResolutionModule) and module.num_branches > 1:
            for i, fuse_row in enumerate(module.fuse_layers):
                for j in range(i + 1, module.num_branches):
                    fuse_row[j][-1] = nn.Identity()  # was nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")
            module.forward = types.MethodType(_bilinear_fuse_forward, module)
    return encoder


def _hrnet(name: str) -> Callable[[dict[str, Any], int, str | None], Backbone]:
    """A timm HRNet as upstream's. Backbone options `fusion` ("bilinear", upstream's default, or "nearest", timm's)
    and `bn_momentum` (0.01 upstream; null keeps timm's 0.1); the rest go to timm."""
    timm_build = _timm(name, {"feature_location": "", "out_indices": (1, 2, 3, 4)})

    def build(options: dict[str, Any], width: int, pretrained: str | None) -> Backbone:
        fusion = options.pop("fusion", "bilinear")
        bn_momentum = options.pop("bn_momentum", UPSTREAM_BN_MOMENTUM)
        backbone = timm_build(options, width, pretrained)
        make_upstream_hrnet(backbone.encoder, fusion, bn_momentum)
        return backbone

    return build


# HRNet: the raw branch outputs (18/36/72/144 channels for W18), as the standard multi-task HRNet baseline uses them.
# "hrnet18" is HRNetV2-W18-Small-v2, the HRNet-18 of MTI-Net and the MTL codebases (3.86 M parameters); timm's full
# W18 is `timm:hrnet_w18` (timm's function: nearest fusion, momentum 0.1).
BACKBONES: dict[str, Callable[[dict[str, Any], int, str | None], Backbone]] = {
    "tiny": _tiny,
    "resnet50": _resnet50,
    "hrnet18": _hrnet("hrnet_w18_small_v2"),
    "hrnet48": _hrnet("hrnet_w48"),
    "vit-s": _timm("vit_small_patch16_224", {"dynamic_img_size": True, "out_indices": (2, 5, 8, 11)}),
    "vit-l": _timm("vit_large_patch16_224", {"dynamic_img_size": True, "out_indices": (5, 11, 17, 23)}),
    "swin-t": _timm("swin_tiny_patch4_window7_224"),
}


def build_backbone(name: str, options: dict[str, Any] | None = None, width: int = 32,
                   pretrained: str | None = None) -> Backbone:
    """Registry name, or `timm:<model_name>` for any timm model that supports `features_only`; `pretrained` as in
    `create_timm`."""
    if name.startswith("timm:"):
        return _timm(name[5:])(dict(options or {}), width, pretrained)
    if name not in BACKBONES:
        raise Mtl3dError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)} or timm:<name>")
    return BACKBONES[name](dict(options or {}), width, pretrained)


def load_pretrained(encoder: nn.Module, path: str | os.PathLike) -> tuple[int, int]:
    """Load ImageNet weights from a local safetensors file or a torch state dict (never unpickles objects).

    Keys are matched after stripping common prefixes (`module.`, `backbone.`, `model.`); classifier weights and
    keys the features-only encoder does not have are ignored. Returns (loaded, skipped) tensor counts.
    """
    path = Path(path)
    if not path.is_file():
        raise Mtl3dError(f"pretrained weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    except Exception as exc:  # corrupt or foreign file: say which
        raise Mtl3dError(f"cannot read pretrained weights {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise Mtl3dError(f"{path} does not hold a state dict")
    target = encoder.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in ("", "module.", "backbone.", "model.", "encoder."):
            name = key[len(prefix):] if key.startswith(prefix) else None
            if name in target and isinstance(value, torch.Tensor) and value.shape == target[name].shape:
                loaded[name] = value
                break
    if not loaded:
        raise Mtl3dError(f"no tensor in {path} matches the backbone (is it the right architecture?)")
    encoder.load_state_dict(loaded, strict=False)
    return len(loaded), len(state) - len(loaded)
