"""InvPT host: parameter counts against the upstream code (meta device), shapes at several input sizes, a training
step through the objective with the regularizer, and a weights round trip. CPU work uses the ViT-S/16 variant."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import default_collate

from conftest import tiny_config
from layout_fixtures import write_layout
from mtl3dcli.config import ModelConfig
from mtl3dcli.data.dataset import MultiTaskDataset
from mtl3dcli.data.transforms import eval_transform
from mtl3dcli.engine.objective import Objective
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.build import build_model, model_from_weights, resolve_tasks
from mtl3dcli.models.hosts import HostSpec, build_host
from mtl3dcli.models.hosts.invpt import load_vit_weights, resize_query_grid
from mtl3dcli.weights import load_weights, save_weights

NYUD = {"semseg": 40, "depth": 1, "normals": 3, "edge": 1}
PASCAL_INVPT = {"semseg": 21, "parts": 7, "saliency": 2, "normals": 3, "edge": 1}  # InvPT's 2-class saliency
PASCAL_OURS = {**PASCAL_INVPT, "saliency": 1}  # our registry's 1-channel saliency: 513 + 576 + 577 fewer
SIZE = (64, 96)


def _meta_host(channels: dict[str, int], size: tuple[int, int]):
    with torch.device("meta"):
        return build_host(HostSpec(ModelConfig(host="invpt", backbone="vit-l"), channels, size))


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# hosts.md: upstream totals and the parameters upstream builds but never uses (no gradient ever reaches them:
# scale_embed[2], redu_chan[0], stage-1 fuse_attn, norm_mt). The host leaves those out on purpose, so it must equal
# upstream's *used* count exactly and stay within 2% of upstream's total.
@pytest.mark.parametrize("channels, size, upstream, dead, encoder", [
    (NYUD, (448, 576), 402_092_888, 6_639_562, 304_133_120),
    (PASCAL_INVPT, (512, 512), 422_929_810, 6_972_202, 304_149_504),
])
def test_vit_large_parameters_match_upstream(channels, size, upstream, dead, encoder):
    net = _meta_host(channels, size)
    total, enc = _count(net), _count(net.encoder)
    assert enc == encoder  # timm vit_large_patch16_384 at the training size = upstream's vendored ViT-L
    assert total - enc == upstream - encoder - dead  # decoder: NYUD 91,320,206; PASCAL 111,808,104
    assert total == upstream - dead
    assert abs(total - upstream) / upstream < 0.02
    assert net.feature_channels == 1024


def test_vit_large_flops_match_upstream_graph():
    # hosts.md: upstream 1203.76 GFLOPs (FlopCounterMode, NYUD 448x576, batch 1), of which the dead block-18 skip
    # conv (1024 -> 576, 3x3, at 28x36) costs 2*1024*576*9*28*36 = 10.70 GFLOPs; encoder 711.08 GFLOPs.
    from torch.utils.flop_counter import FlopCounterMode

    net = _meta_host(NYUD, (448, 576)).eval()
    counter = FlopCounterMode(display=False, depth=2)
    with torch.device("meta"), torch.no_grad(), counter:
        out = net(torch.rand(1, 3, 448, 576))
    assert counter.get_total_flops() / 1e9 == pytest.approx(1203.76 - 2 * 1024 * 576 * 9 * 28 * 36 / 1e9, abs=0.01)
    assert sum(counter.get_flop_counts()["InvPTHost.encoder"].values()) / 1e9 == pytest.approx(711.08, abs=0.01)
    assert tuple(out.features.shape) == (1, 1024, 28, 36)
    assert tuple(out.aux["inter"]["semseg"].shape) == (1, 40, 14, 18)


def test_pascal_with_one_channel_saliency():
    assert _count(_meta_host(PASCAL_OURS, (512, 512))) == 422_929_810 - 6_972_202 - (513 + 576 + 577)


def test_backbone_and_host_options_are_checked():
    for backbone, options, match in [("vit-h", {}, "model.backbone must be one of"),
                                     ("vit-s", {"width": 100}, "multiple of 64"),
                                     ("vit-s", {"depth": 3}, "unknown model.host_options")]:
        with pytest.raises(Mtl3dError, match=match):
            build_host(HostSpec(ModelConfig(host="invpt", backbone=backbone, host_options=options), NYUD, SIZE))


def test_attention_message_keeps_task_and_key_layout():
    # previous scores for B=1, 2 heads, T=2 tasks on a 1x1 query grid, 3 keys: value = 100*head + 10*task + key.
    # Resizing the query grid to 2x2 must copy each (head, task) row to the task's 4 new query positions.
    scores = torch.tensor([[[100 * h + 10 * t + k for k in range(3)] for t in range(2)] for h in range(2)],
                          dtype=torch.float32).view(1, 2, 2, 3)
    out = resize_query_grid(scores, tasks=2, grid=(1, 1), size=(2, 2))
    expected = scores.repeat_interleave(4, dim=2)  # (1, 2, T*4, 3): task 0's four queries, then task 1's
    torch.testing.assert_close(out, expected)


def test_local_vit_weights_resample_the_position_embedding(tmp_path):
    # a 384x384 checkpoint (24x24 grid + cls) loaded into a ViT built for 64x96 (4x6 grid): every tensor loads and
    # the grid part of the position embedding is timm's resampling of the checkpoint's, cls entry unchanged
    import timm
    from safetensors.torch import save_file
    from timm.layers import resample_abs_pos_embed

    source = timm.create_model("vit_small_patch16_384", depth=1, num_classes=0)
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}  # an upstream-style prefix
    save_file(state, str(tmp_path / "vit.safetensors"))
    target = timm.create_model("vit_small_patch16_384", depth=1, num_classes=0, img_size=SIZE, dynamic_img_size=True)
    load_vit_weights(target, tmp_path / "vit.safetensors")
    torch.testing.assert_close(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    expected = resample_abs_pos_embed(source.pos_embed, new_size=(4, 6), old_size=(24, 24), num_prefix_tokens=1)
    torch.testing.assert_close(target.pos_embed, expected)
    torch.testing.assert_close(target.pos_embed[:, 0], source.pos_embed[:, 0])
    save_file({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(Mtl3dError, match="does not fit this ViT"):
        load_vit_weights(target, tmp_path / "other.safetensors")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 64x96 dataset and one ViT-S InvPT model with the regularizer (building it dominates the test time)."""
    root = write_layout(tmp_path_factory.mktemp("invpt") / "data", scenes=1, views=3, size=SIZE)
    config = tiny_config(root, "model.host=invpt", "model.backbone=vit-s", f"data.size={SIZE[0]}x{SIZE[1]}")
    dataset = MultiTaskDataset(root, config.data.train_split, resolve_tasks(config), eval_transform(None))
    torch.manual_seed(0)
    return config, dataset, build_model(config, dataset.meta)


@pytest.mark.parametrize("size", [SIZE, (96, 128), (80, 112)])  # the training size and two others (H/32 odd)
def test_vit_small_outputs_at_input_size(setup, size):
    _, dataset, model = setup
    net = model.net.eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, *size))
    channels = {t.name: t.channels(dataset.meta) for t in model.tasks}
    h16, w16 = size[0] // 16, size[1] // 16
    assert net.feature_channels == 384 and tuple(out.features.shape) == (2, 384, h16, w16)
    assert set(out.outputs) == set(channels) and set(out.aux) == {"inter"}
    for name, c in channels.items():
        assert tuple(out.outputs[name].shape) == (2, c, *size)
        assert tuple(out.aux["inter"][name].shape) == (2, c, (h16 + 1) // 2, (w16 + 1) // 2)


@pytest.mark.slow
def test_train_step_reaches_every_parameter(setup):
    config, dataset, model = setup
    model = copy.deepcopy(model).train()
    objective = Objective(model, config)
    batch = default_collate([dataset[0], dataset[1]])
    loss, terms = objective(batch)
    loss.backward()
    assert torch.isfinite(loss)
    for t in model.tasks:
        assert {t.name, f"aux/inter/{t.name}", f"render/{t.name}"} <= set(terms)
    net = model.net
    without = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without == []  # no dead parameters: encoder, preliminary decoder, inter heads, all stages, heads
    assert net.encoder.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert net.inter_heads["semseg"].weight.grad.abs().sum() > 0
    assert net.stages[1].block.attn.fuse.weight.grad.abs().sum() > 0  # the cross-scale message is used
    assert model.regularizer is not None and any(p.grad is not None for p in model.regularizer.parameters())


@pytest.mark.slow
def test_weights_round_trip(setup, tmp_path):
    config, dataset, model = setup
    path = save_weights(tmp_path / "invpt.safetensors", model.state_dict(), config, dataset.meta, step=0)
    rebuilt = model_from_weights(load_weights(path)).eval()
    image = torch.rand(1, 3, *SIZE)
    with torch.no_grad():
        a, b = model.net.eval()(image), rebuilt.net(image)
    for name in a.outputs:
        torch.testing.assert_close(a.outputs[name], b.outputs[name], rtol=0, atol=0)
    torch.testing.assert_close(a.features, b.features, rtol=0, atol=0)
