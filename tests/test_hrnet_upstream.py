"""The HRNet hosts compute upstream's function (Multi-Task-Learning-PyTorch `seg_hrnet.py`), not only its parameter
count: coarser branches fused into finer ones by bilinear resizing to the finer size (align_corners False) and
backbone BatchNorm momentum 0.01, on timm's modules and names. Also InvPT's two-logit saliency."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.models.hrnet import HighResolutionModule
from torch import nn

from mtl3dcli.config import list_presets, load_config
from mtl3dcli.models.backbones import UPSTREAM_BN_MOMENTUM, build_backbone, create_timm
from mtl3dcli.models.build import resolve_tasks

HRNET_PRESETS = [n for n in list_presets() if load_config(n).model.backbone.startswith("hrnet")]


def _fuse_modules(encoder: nn.Module) -> list[HighResolutionModule]:
    return [m for m in encoder.modules() if isinstance(m, HighResolutionModule) and m.num_branches > 1]


def test_every_hrnet_preset_is_found():
    assert {"hrnet18", "hrnet48", "mtinet-hrnet18-nyuv2", "mtinet-hrnet48-pascal"} <= set(HRNET_PRESETS)


@pytest.mark.parametrize("backbone", sorted({load_config(n).model.backbone for n in HRNET_PRESETS}))
def test_preset_backbones_fuse_bilinearly_with_upstream_momentum(backbone):
    options = {load_config(n).model.backbone: load_config(n).model.backbone_options for n in HRNET_PRESETS}[backbone]
    encoder = build_backbone(backbone, options).encoder
    modules = _fuse_modules(encoder)
    assert len(modules) == {"hrnet18": 6, "hrnet48": 8}[backbone]  # stage modules with several branches (1+3+2, 1+4+3)
    assert not any(isinstance(m, nn.Upsample) for m in encoder.modules())
    upsamplers = sum(m.num_branches - 1 - i for m in modules for i in range(m.num_branches - 1))
    assert upsamplers == {"hrnet18": 22, "hrnet48": 31}[backbone]  # the coarse-to-fine terms, all bilinear now
    momenta = {m.momentum for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)}
    assert momenta == {UPSTREAM_BN_MOMENTUM}


def test_names_and_shapes_are_timms_so_imagenet_weights_load():
    ours = build_backbone("hrnet18").encoder.state_dict()
    timms = create_timm("hrnet_w18_small_v2", features_only=True, feature_location="", out_indices=(1, 2, 3, 4))
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in timms.state_dict().items()}


def test_nearest_option_is_timms_function():
    torch.manual_seed(0)
    ours = build_backbone("hrnet18", {"fusion": "nearest", "bn_momentum": None}).eval()
    timms = create_timm("hrnet_w18_small_v2", features_only=True, feature_location="", out_indices=(1, 2, 3, 4))
    timms.load_state_dict(ours.encoder.state_dict())
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(ours(x), timms.eval()(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert {m.momentum for m in ours.modules() if isinstance(m, nn.BatchNorm2d)} == {0.1}


def _identity_fuse_step() -> HighResolutionModule:
    """Stage 2 of HRNet-18 (two branches) with identity branches and a 1x1 fuse conv that copies the coarse
    branch's first 18 channels: its first output is relu(x0 + resize(x1[:, :18]))."""
    module = _fuse_modules(build_backbone("hrnet18").encoder)[0].eval()
    assert module.num_branches == 2
    module.branches = nn.ModuleList([nn.Identity(), nn.Identity()])
    conv, bn = module.fuse_layers[0][1][0], module.fuse_layers[0][1][1]
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :18, 0, 0] = torch.eye(18)
        bn.weight.fill_(1.0), bn.bias.zero_(), bn.running_mean.zero_(), bn.running_var.fill_(1.0 - bn.eps)
    return module


def test_one_fuse_step_is_the_bilinear_resize_of_a_ramp():
    """A coarse ramp 1 + 2u (u the coarse column) lands on fine column x at u = (x + 0.5) / 2 - 0.5, clamped to the
    map: 1 + 2u exactly (bilinear is exact on a linear function), where nearest would repeat each value twice."""
    module = _identity_fuse_step()
    h, w = 4, 6
    ramp = 1.0 + 2.0 * torch.arange(w, dtype=torch.float32)
    coarse = ramp.expand(1, 36, h, w).clone()
    fine = torch.zeros(1, 18, 2 * h, 2 * w)
    with torch.no_grad():
        out = module([fine, coarse])[0]
    u = ((torch.arange(2 * w, dtype=torch.float32) + 0.5) / 2 - 0.5).clamp(0, w - 1)
    expected = (1.0 + 2.0 * u).expand(1, 18, 2 * h, 2 * w)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    nearest = ramp.repeat_interleave(2)
    assert (out[0, 0, 0] - nearest).abs().max() > 0.4


def test_fuse_resizes_to_the_finer_branchs_exact_size():
    """Odd sides (no power-of-two ratio) work as upstream's F.interpolate(size=...), where a 2x upsampler fails."""
    module = _identity_fuse_step()
    fine, coarse = torch.rand(1, 18, 9, 11), torch.rand(1, 36, 5, 6)
    with torch.no_grad():
        out = module([fine.clone(), coarse.clone()])[0]
    expected = F.relu(fine + F.interpolate(coarse[:, :18], size=(9, 11), mode="bilinear", align_corners=False))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_unknown_fusion_is_a_clear_error():
    from mtl3dcli.errors import Mtl3dError

    with pytest.raises(Mtl3dError, match="unknown HRNet fusion 'cubic'"):
        build_backbone("hrnet18", {"fusion": "cubic"})


def test_invpt_pascal_saliency_is_upstreams_two_class_softmax():
    """Two logits; loss = InvPT's class-weighted cross-entropy (weights (1 - w, w), w the batch's negative share,
    summed over valid pixels / their count); prediction = softmax channel 1."""
    (saliency,) = [t for t in resolve_tasks(load_config("invpt-vitl-pascal")) if t.name == "saliency"]
    assert saliency.two_class and saliency.channels(None) == 2
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 5, 7)
    label = (torch.rand(2, 1, 5, 7) > 0.7).float()
    valid = torch.ones(2, 5, 7, dtype=torch.bool)
    w_pos = (1.0 - label).sum() / label.numel()
    ce = F.cross_entropy(logits, label[:, 0].long(), weight=torch.stack([1 - w_pos, w_pos]), reduction="none")
    torch.testing.assert_close(saliency.loss(logits, label, valid), ce.sum() / valid.sum(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(saliency.activate(logits), F.softmax(logits, dim=1)[:, 1:2], rtol=1e-6, atol=1e-7)
    nyu_saliency = [t for t in resolve_tasks(load_config("mtinet-hrnet18-pascal")) if t.name == "saliency"]
    assert not nyu_saliency[0].two_class  # MTI-Net (MTL-PyTorch) keeps one sigmoid logit
