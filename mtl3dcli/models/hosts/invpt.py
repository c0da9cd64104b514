"""InvPT (Ye & Xu, ECCV 2022): a ViT encoder, a preliminary decoder, and an UP-Transformer decoder whose attention
runs jointly over every task's tokens. Re-implemented after prismformore/Multi-Task-Transformer, `InvPT/` at
870c6be (facts and measured parameter counts in shared/research/hosts.md).

    image -> ViT (token maps after blocks 6, 12, 18 un-normed, final map after the last LayerNorm; all at H/16)
          -> preliminary decoder at H/32: per task conv3x3-BN-ReLU x2 -> features, 1x1 conv -> intermediate
             prediction (returned as aux group "inter", deep-supervised like the final outputs);
             [features, prediction] -> 1x1 conv -> task tokens of width D0 = 576
          -> UP-Transformer, 3 stages at H/32, H/16, H/8 (widths 576, 288, 144):
             stages 2-3 upsample each task 2x and add a projected encoder map (block 12 / block 6),
             then one joint-task-attention block over all tasks' tokens, with the previous stage's attention
             scores passed on as a cross-scale message
          -> multi-scale aggregation at H/4: LayerNorm per stage, per-task 1x1 back to 576, resize, sum
          -> per task conv3x3-BN-ReLU and a 1x1 head -> bilinear to the input size

Regularizer features: the encoder's final normed token map (B, 1024, H/16, W/16 for ViT-L). It is the one map every
task's prediction flows from (the decoder is task-specific from its first layer), so a 3D-consistency signal there
shapes the representation all tasks share, which is where the paper attaches it; decoder maps are per task.

Parameters. Upstream builds 6.6 M parameters that never receive a gradient (hosts.md "Surprises"): the block-18 skip
projection `scale_embed[2]` (computed but never added: the first stage, upstream's stage 0, has no upsampling
block), `redu_chan[0]` (the first stage skips it), the first stage's `fuse_attn` (no message exists yet) and
`norm_mt` (never called). They are **left out** here:
they cannot change any output or gradient, only memory, optimizer state, and (for `scale_embed[2]`) 10.7 GFLOPs per
image. Every parameter that is used is rebuilt one for one, so the counts equal upstream's *used* parameters
exactly: ViT-L NYUD 4 tasks at 448x576 395,453,326 (upstream total 402,092,888, -1.65%); PASCAL 5 tasks at 512x512
415,957,608 with InvPT's 2-channel saliency (the invpt-vitl-pascal preset's `data.task_options.saliency.two_class`),
415,955,942 with the registry's default 1-channel saliency (upstream total 422,929,810). Other faithful details: the attention scale is 1/sqrt(token width), not 1/sqrt(head width); the
decoder has no drop path (upstream's 0.15 is a linspace over depth 1, i.e. 0); q/k/v/out projections, LayerNorms
and MLP are shared by the tasks, only the query convolution and the upsampling blocks are per task. BatchNorm is
plain BatchNorm2d (upstream SyncBatchNorm; convert under DDP if wanted).

Input sizes. The ViT is built for the training size (`image_size`); other sizes (multiples of 16, the host's
size_divisor, to which predict rounds) resample the position embedding on the fly (timm `dynamic_img_size`) and every decoder size is
taken from the actual maps, never from the configuration. Upstream's fixed 2x factors hold only when H/32 is even;
here messages and upsampling resize to the target grid, which is identical where upstream works.

`model.backbone` picks the encoder: "vit-l" (ViT-L/16 at 384, blocks 6/12/18, InvPT as published) or "vit-s"
(ViT-S/16 at 384, blocks 3/6/9: a CPU-sized variant for tests and quick experiments).
Options (`model.host_options`):
  width  preliminary-decoder width (upstream `embed_dim` 512; default 512 for vit-l, 128 for vit-s); the
         UP-Transformer widths are D0 = width * 9/8 (upstream 512 + 64), D0/2, D0/4. A multiple of 64.
`model.width`, `head` and `head_channels` belong to the baseline host and are ignored here.
`model.pretrained`: "imagenet" = timm's augreg in21k->in1k ViT at 384 (as upstream), its position embedding
resampled to the training grid by timm; a local file goes through the same resampling (`load_vit_weights`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.backbones import create_timm
from mtl3dcli.models.hosts import Host, HostOutput, HostSpec
from mtl3dcli.models.layers import ImageNormalize, conv_bn_relu, resize_bilinear, upsample_maps

# vit option -> (timm model, blocks whose un-normed output is a skip (0-based, fine to coarse), default width)
VITS: dict[str, tuple[str, tuple[int, int, int], int]] = {
    "vit-l": ("vit_large_patch16_384", (5, 11, 17), 512),
    "vit-s": ("vit_small_patch16_384", (2, 5, 8), 128),
}
HEADS = 2  # attention heads in every UP-Transformer stage
KV_STRIDES = (2, 4, 8)  # key/value pooling per stage: every stage attends to the same H/64 x W/64 grid per task
MLP_RATIO = 4


def _tokens(maps: torch.Tensor) -> torch.Tensor:
    """(B, T, C, h, w) task maps -> (B, T, h, w, C) channel-last tokens."""
    return maps.permute(0, 1, 3, 4, 2)


def _maps(tokens: torch.Tensor) -> torch.Tensor:
    """(B, T, h, w, C) -> (B, T, C, h, w)."""
    return tokens.permute(0, 1, 4, 2, 3)


def _resize_tasks(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, T, C, h, w) task maps to `size`, all tasks in one call."""
    b, t, c, h, w = maps.shape
    if (h, w) == tuple(size):
        return maps
    out = resize_bilinear(maps.reshape(b * t, c, h, w), size)
    return out.view(b, t, c, *size)


def load_vit_weights(vit: nn.Module, path: str | os.PathLike) -> None:
    """Load a local ViT checkpoint (safetensors or torch state dict; `module.`/`backbone.`/`encoder.`/`model.`
    prefixes allowed) through timm's ViT filter, which resamples the position embedding from the checkpoint's grid
    (24x24 for the 384 ImageNet weights) to this model's (28x36 at 448x576), as timm does for "imagenet".
    `backbones.load_pretrained` matches tensors by shape and would leave that embedding at random init."""
    from timm.models import load_state_dict
    from timm.models.vision_transformer import checkpoint_filter_fn

    path = Path(path)
    if not path.is_file():
        raise Mtl3dError(f"pretrained weights not found: {path}")
    try:
        state = load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as exc:  # corrupt or foreign file: say which
        raise Mtl3dError(f"cannot read pretrained weights {path}: {str(exc).splitlines()[0]}") from None
    for prefix in ("", "backbone.", "encoder.", "model."):
        found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if "blocks.0.attn.qkv.weight" in found:
            break
    else:
        raise Mtl3dError(f"{path} holds no ViT weights (no blocks.0.attn.qkv.weight)")
    try:
        missing, _ = vit.load_state_dict(checkpoint_filter_fn(found, vit), strict=False)
    except RuntimeError as exc:  # same names, other shapes: another ViT size
        raise Mtl3dError(f"{path} does not fit this ViT: {str(exc).splitlines()[1].strip()}") from None
    if missing:
        raise Mtl3dError(f"{path} lacks {len(missing)} tensors of this ViT, e.g. {missing[0]}")


class ViTEncoder(nn.Module):
    """timm ViT returning the three skip token maps (un-normed) and the final normed map, cls token dropped, as
    (B, C, H/16, W/16). timm's `forward_intermediates` is exactly the upstream `select_list` forward."""

    def __init__(self, name: str, skips: tuple[int, ...], image_size: tuple[int, int], pretrained: str | None):
        super().__init__()
        local = pretrained not in (None, "imagenet")
        self.vit = create_timm(name, None if local else pretrained, img_size=tuple(image_size), num_classes=0,
                               drop_path_rate=0.15, dynamic_img_size=True)
        if local:
            load_vit_weights(self.vit, pretrained)
        self.skips = list(skips)
        self.channels = self.vit.embed_dim

    def forward(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        final, skips = self.vit.forward_intermediates(image, indices=self.skips, norm=False, output_fmt="NCHW")
        b, _, h, w = skips[-1].shape
        final = final[:, self.vit.num_prefix_tokens:].transpose(1, 2).reshape(b, -1, h, w)
        return skips, final


def up_block(cin: int, cout: int) -> nn.Sequential:
    """Upstream `UpEmbed` after its 2x bilinear upsampling: two dilated 3x3 conv-BN-ReLU (the resize is done by the
    stage, to the skip map's exact size)."""
    layers: list[nn.Module] = []
    for c in (cin, cout):
        layers += [nn.Conv2d(c, cout, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
    return nn.Sequential(*layers)


def resize_query_grid(scores: torch.Tensor, tasks: int, grid: tuple[int, int], size: tuple[int, int]
                      ) -> torch.Tensor:
    """Bilinear resize of attention scores along their query grid: (B, heads, T*h*w, Lk) with queries ordered task,
    row, column (grid = (h, w)) -> (B, heads, T*size[0]*size[1], Lk). The key axis acts as channels: every stage
    attends to the same key grid, so only the queries change resolution between stages."""
    b, nh, _, lk = scores.shape
    maps = scores.reshape(b * nh * tasks, *grid, lk).permute(0, 3, 1, 2)
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return maps.permute(0, 2, 3, 1).reshape(b, nh, -1, lk)


class JointTaskAttention(nn.Module):
    """Attention over the concatenated tokens of all T tasks, so every task position can read every other task.

    Queries: per task a depthwise 3x3 stride-2 conv + BN (one grouped conv over the T*C stacked channels is exactly
    T per-task convs); keys/values: per task average pooling by `kv_stride`. Linear q/k/v/out projections are shared.
    `message`, the previous stage's pre-softmax scores (B, heads, T*hq'*wq', Lk), is resized along its query grid to
    this stage's, stacked with the new scores on the head axis and fused 2*heads -> heads by a 1x1 conv.

    x: (B, T, h, w, C) normed tokens -> (B, T, ceil(h/2), ceil(w/2), C), and the (fused) scores with their query grid
    as the next stage's message.
    """

    def __init__(self, tasks: int, dim: int, kv_stride: int, receives_message: bool):
        super().__init__()
        self.kv_stride = kv_stride
        self.scale = dim ** -0.5  # upstream scales by the token width, not the head width
        self.q_conv = nn.Conv2d(tasks * dim, tasks * dim, 3, 2, 1, groups=tasks * dim, bias=False)
        self.q_norm = nn.BatchNorm2d(tasks * dim)
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.proj = nn.Linear(dim, dim)
        self.fuse = nn.Conv2d(2 * HEADS, HEADS, 1) if receives_message else None

    def forward(self, x: torch.Tensor, message: tuple[torch.Tensor, tuple[int, int]] | None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, tuple[int, int]]]:
        b, t, h, w, c = x.shape
        maps = _maps(x)
        q = self.q_norm(self.q_conv(maps.reshape(b, t * c, h, w)))
        hq, wq = q.shape[-2:]
        q = _tokens(q.view(b, t, c, hq, wq)).reshape(b, -1, c)
        kv = F.avg_pool2d(maps.reshape(b * t, c, h, w), self.kv_stride, ceil_mode=True)
        kv = kv.view(b, t, c, -1).permute(0, 1, 3, 2).reshape(b, -1, c)

        def heads(z: torch.Tensor) -> torch.Tensor:  # (B, L, C) -> (B, heads, L, C / heads)
            return z.view(b, z.shape[1], HEADS, -1).transpose(1, 2)

        q, k, v = heads(self.q(q)), heads(self.k(kv)), heads(self.v(kv))
        # scores are formed explicitly (no fused attention kernel): they are also the next stage's message
        scores = q @ k.transpose(-2, -1) * self.scale  # (B, heads, T*hq*wq, T*hk*wk)
        if self.fuse is not None and message is not None:
            previous, grid = message
            scores = self.fuse(torch.cat([scores, resize_query_grid(previous, t, grid, (hq, wq))], dim=1))
        out = scores.softmax(dim=-1) @ v  # (B, heads, Lq, C / heads)
        out = self.proj(out.transpose(1, 2).reshape(b, -1, c))
        return out.view(b, t, hq, wq, c), (scores, (hq, wq))


class JointTaskBlock(nn.Module):
    """Pre-norm transformer block over all tasks' tokens: attention at half resolution, resized back and added,
    then an MLP (ratio 4). x: (B, T, C, h, w) -> same shape."""

    def __init__(self, tasks: int, dim: int, kv_stride: int, receives_message: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = JointTaskAttention(tasks, dim, kv_stride, receives_message)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, MLP_RATIO * dim), nn.GELU(), nn.Linear(MLP_RATIO * dim, dim))

    def forward(self, x: torch.Tensor, message: Any) -> tuple[torch.Tensor, Any]:
        h, w = x.shape[-2:]
        tokens = _tokens(x)
        attn, message = self.attn(self.norm1(tokens), message)
        tokens = tokens + _tokens(_resize_tasks(_maps(attn), (h, w)))
        tokens = tokens + self.mlp(self.norm2(tokens))
        return _maps(tokens), message


class UpTransformerStage(nn.Module):
    """One UP-Transformer stage. Stage 1 works on the preliminary tokens as they are; later stages first upsample
    every task to the encoder skip's grid (per-task `up_block`) and add that skip, projected to this width
    (`skip`: conv3x3 at H/16, or a stride-2 transposed conv from H/16 to H/8)."""

    def __init__(self, tasks: int, cin: int, dim: int, kv_stride: int, skip: nn.Module | None):
        super().__init__()
        self.skip = skip
        self.up = nn.ModuleList(up_block(cin, dim) for _ in range(tasks)) if skip is not None else None
        self.block = JointTaskBlock(tasks, dim, kv_stride, receives_message=skip is not None)

    def forward(self, x: torch.Tensor, encoder_map: torch.Tensor | None, message: Any) -> tuple[torch.Tensor, Any]:
        if self.skip is not None:
            skip = self.skip(encoder_map)
            x = _resize_tasks(x, tuple(skip.shape[-2:]))
            x = torch.stack([up(x[:, i]) + skip for i, up in enumerate(self.up)], dim=1)
        return self.block(x, message)


class InvPTHost(Host):
    """image (B, 3, H, W) in [0, 1] -> outputs at (H, W), features (B, C_vit, H/16, W/16), aux {"inter": {task:
    (B, C_t, H/32, W/32)}} (H/32 rounded up)."""

    def __init__(self, channels: dict[str, int], image_size: tuple[int, int], vit: str = "vit-l",
                 width: int | None = None, pretrained: str | None = None):
        super().__init__()
        name, skips, default_width = VITS[vit]
        width = width or default_width
        self.tasks = list(channels)
        n = len(self.tasks)
        self.normalize = ImageNormalize()
        self.encoder = ViTEncoder(name, skips, image_size, pretrained)
        enc = self.encoder.channels
        self.feature_channels = enc
        self.size_divisor = 16  # the ViT's patches; every decoder size is taken from the actual maps
        dims = [width + width // 8, (width + width // 8) // 2, (width + width // 8) // 4]  # 576, 288, 144

        # preliminary decoder (H/32): features, intermediate prediction, and both mixed into the first tokens
        self.preliminary = nn.ModuleDict({t: nn.Sequential(conv_bn_relu(enc, enc), conv_bn_relu(enc, width))
                                          for t in self.tasks})
        self.inter_heads = nn.ModuleDict({t: nn.Conv2d(width, c, 1) for t, c in channels.items()})
        self.mix = nn.ModuleDict({t: nn.Conv2d(width + c, dims[0], 1) for t, c in channels.items()})

        # UP-Transformer: stage 2 adds the block-12 map (H/16), stage 3 the block-6 map brought to H/8
        skip_proj = [None, nn.Conv2d(enc, dims[1], 3, padding=1),
                     nn.ConvTranspose2d(enc, dims[2], 3, stride=2, padding=1, output_padding=1)]
        self.stages = nn.ModuleList(UpTransformerStage(n, dims[max(i - 1, 0)], dims[i], KV_STRIDES[i], skip_proj[i])
                                    for i in range(3))

        # multi-scale aggregation: LayerNorm over all tasks' channels of a pixel, per-task 1x1 back to dims[0]
        # (a grouped conv = one 1x1 conv per task), summed at H/4
        self.stage_norms = nn.ModuleList(nn.LayerNorm(n * d) for d in dims)
        self.stage_reduce = nn.ModuleList([nn.Identity()] + [nn.Conv2d(n * d, n * dims[0], 1, groups=n)
                                                             for d in dims[1:]])
        self.fuse = nn.ModuleDict({t: conv_bn_relu(dims[0], dims[0], bias=True) for t in self.tasks})
        self.heads = nn.ModuleDict({t: nn.Conv2d(dims[0], c, 1) for t, c in channels.items()})
        self._init_decoder()

    def _init_decoder(self) -> None:
        """Upstream's init: truncated normal (std 0.02) for the UP-Transformer's linear layers and the fuse convs."""
        for m in self.stages.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        for block in self.fuse.values():
            nn.init.trunc_normal_(block[0].weight, std=0.02)

    def forward(self, image: torch.Tensor) -> HostOutput:
        skips, final = self.encoder(self.normalize(image))
        h16, w16 = final.shape[-2:]
        x = resize_bilinear(final, ((h16 + 1) // 2, (w16 + 1) // 2))

        inter, tokens = {}, []
        for t in self.tasks:
            feat = self.preliminary[t](x)
            inter[t] = self.inter_heads[t](feat)
            tokens.append(self.mix[t](torch.cat([feat, inter[t]], dim=1)))
        x = torch.stack(tokens, dim=1)  # (B, T, D0, H/32, W/32)

        n, message, per_stage = len(self.tasks), None, []
        for stage, encoder_map in zip(self.stages, [None, skips[1], skips[0]]):
            x, message = stage(x, encoder_map, message)
            per_stage.append(x)

        b = image.shape[0]
        size = (2 * x.shape[-2], 2 * x.shape[-1])  # H/4: twice the last stage's grid
        total = 0
        for x_i, norm, reduce in zip(per_stage, self.stage_norms, self.stage_reduce):
            h, w = x_i.shape[-2:]
            y = norm(x_i.permute(0, 3, 4, 1, 2).reshape(b, h, w, -1)).permute(0, 3, 1, 2)  # (B, T*C_i, h, w)
            total = total + resize_bilinear(reduce(y), size)
        per_task = total.chunk(n, dim=1)
        outputs = {t: self.heads[t](self.fuse[t](per_task[i])) for i, t in enumerate(self.tasks)}
        return HostOutput(upsample_maps(outputs, tuple(image.shape[-2:])), final, {"inter": inter})


def build_invpt(spec: HostSpec) -> InvPTHost:
    options = dict(spec.model.host_options)
    unknown = set(options) - {"width"}
    if unknown:
        raise Mtl3dError(f"unknown model.host_options for invpt: {', '.join(sorted(unknown))} (known: width)")
    vit = spec.model.backbone
    if vit not in VITS:
        raise Mtl3dError(f"model.backbone must be one of {', '.join(VITS)} for the invpt host, got {vit!r}")
    width = options.get("width")
    if width is not None and (not isinstance(width, int) or width <= 0 or width % 64):
        raise Mtl3dError(f"model.host_options.width must be a positive multiple of 64, got {width!r}")
    return InvPTHost(spec.channels, spec.image_size, vit, width, spec.pretrained)
