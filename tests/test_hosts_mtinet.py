"""The MTI-Net host: upstream parameter counts, shapes, the FPM's attention, a training step, a weights round trip."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from torch.utils.data import default_collate

from mtl3dcli.config import ModelConfig
from mtl3dcli.data.dataset import MultiTaskDataset
from mtl3dcli.data.layout import DatasetLayout
from mtl3dcli.data.transforms import eval_transform
from mtl3dcli.engine.objective import Objective
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.backbones import build_backbone
from mtl3dcli.models.build import build_model, model_from_weights, resolve_tasks
from mtl3dcli.models.hosts import HostSpec, build_host
from mtl3dcli.models.hosts.mtinet import FeaturePropagation, MTINetHost
from mtl3dcli.weights import load_weights, save_weights

NYUD = {"semseg": 40, "depth": 1, "normals": 3, "edge": 1}
PASCAL = {"semseg": 21, "parts": 7, "saliency": 1, "normals": 3, "edge": 1}
SCALES = [f"scale_{k}" for k in range(4)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these convolutions are tiny, and on a shared, loaded CPU two spinning threads made a
    64x96 HRNet-18 forward 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _host(backbone: str, channels: dict[str, int], **options) -> MTINetHost:
    model = ModelConfig(host="mti-net", backbone=backbone, host_options=options)
    return build_host(HostSpec(model, channels, (64, 96)))


# research/hosts.md: the upstream code itself instantiated with random init (batch-1 counts)
@pytest.mark.parametrize("backbone, channels, total, encoder", [
    ("hrnet18", NYUD, 17_960_945, 3_860_720),
    ("hrnet18", PASCAL, 24_494_171, 3_860_720),
    ("hrnet48", NYUD, 165_402_153, 65_325_120),
    ("hrnet48", PASCAL, 211_871_031, 65_325_120),
])
def test_parameter_counts_equal_upstream(backbone, channels, total, encoder):
    with torch.device("meta"):
        net = _host(backbone, channels)
    assert sum(p.numel() for p in net.parameters()) == total
    assert sum(p.numel() for p in net.backbone.parameters()) == encoder


def test_hrnet18_outputs_aux_and_features_shapes():
    torch.manual_seed(0)
    net = _host("hrnet18", NYUD).eval()
    assert net.feature_channels == 18 + 36 + 72 + 144
    with torch.no_grad():
        out = net(torch.rand(2, 3, 64, 96))
    assert {t: tuple(y.shape) for t, y in out.outputs.items()} == {t: (2, c, 64, 96) for t, c in NYUD.items()}
    assert tuple(out.features.shape) == (2, net.feature_channels, 16, 24)  # the fused backbone at stride 4
    assert list(out.aux) == SCALES
    for k, group in enumerate(SCALES):  # scale_k at stride 4 * 2^k
        h, w = 64 // (4 << k), 96 // (4 << k)
        assert {t: tuple(y.shape) for t, y in out.aux[group].items()} == {t: (2, c, h, w) for t, c in NYUD.items()}


def test_odd_sizes_fit_between_scales():
    """Upstream doubles the coarser map; sizing it to the finer map also fits inputs that are not multiples of 32
    (tiny backbone at 40x56: scales 10x14, 5x7, 3x4, 2x2)."""
    channels = {"semseg": 5, "depth": 1}
    net = MTINetHost(build_backbone("tiny", width=8), channels).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 40, 56))
    assert tuple(out.outputs["semseg"].shape) == (1, 5, 40, 56)
    assert [tuple(out.aux[g]["depth"].shape[-2:]) for g in SCALES] == [(10, 14), (5, 7), (3, 4), (2, 2)]


class _Record(torch.nn.Module):
    """Stands in for the FPM's reduction: records the attention-weighted concatenation, returns zeros (so the SE
    gates add nothing and the FPM returns each task's own features)."""

    def __init__(self, width: int):
        super().__init__()
        self.width, self.seen = width, None

    def forward(self, x):
        self.seen = x
        return x.new_zeros(x.shape[0], self.width, *x.shape[-2:])


@pytest.mark.parametrize("attention", ["tasks", "upstream"])
def test_fpm_attention_weights_the_concatenation(attention):
    """N = 3 tasks, C = 4 channels: concat channel j = task j // 4, channel j % 4. Logits of +50 on every channel of
    task 0 ("tasks") select task 0 for every channel: [f_0, 0, 0]. Upstream's view (B, C, N) groups adjacent
    channels (j = 3i + n): logits of +50 where j % 3 == 0 keep exactly those concat channels."""
    tasks, width, n = ["a", "b", "c"], 4, 3
    fpm = FeaturePropagation(tasks, width, attention)
    fpm.reduce = _Record(width)
    features = {t: torch.rand(2, width, 3, 5) + 1 for t in tasks}
    concat = torch.cat([features[t] for t in tasks], dim=1)
    j = torch.arange(n * width)
    hot = (j < width) if attention == "tasks" else (j % n == 0)
    del fpm.logits  # a plain function in place of the submodule: fixed logits whatever the input
    fpm.logits = lambda x: 50.0 * hot.float().view(1, -1, 1, 1).expand_as(x)
    out = fpm(features)
    torch.testing.assert_close(fpm.reduce.seen, concat * hot.float().view(1, -1, 1, 1))
    for t in tasks:
        torch.testing.assert_close(out[t], features[t])


def test_unknown_host_options_are_an_error():
    with pytest.raises(Mtl3dError, match="unknown model.host_options for mti-net: depth"):
        _host("tiny", {"semseg": 5, "depth": 1}, depth=3)
    with pytest.raises(Mtl3dError, match="fpm_attention must be one of tasks, upstream"):
        _host("tiny", {"semseg": 5, "depth": 1}, fpm_attention="channels")


def _config(root):
    return tiny_config(root, "model.host=mti-net", "model.backbone=hrnet18", "data.size=64x96")


def _batch(config, root):
    dataset = MultiTaskDataset(root, config.data.train_split, resolve_tasks(config), eval_transform((64, 96)))
    return default_collate([dataset[0], dataset[1]])


@pytest.mark.slow
def test_training_step_with_the_regularizer(tiny_dataset):
    config = _config(tiny_dataset)
    torch.manual_seed(0)
    model = build_model(config, DatasetLayout(tiny_dataset).meta)
    assert model.regularizer is not None
    objective = Objective(model, config).train()
    total, terms = objective(_batch(config, tiny_dataset))
    assert torch.isfinite(total)
    tasks = [t.name for t in model.tasks]
    assert {f"aux/{g}/{t}" for g in SCALES for t in tasks} | {f"render/{t}" for t in tasks} <= set(terms)
    total.backward()
    net = model.net

    def reached(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    parts = {"backbone": net.backbone, "regularizer": model.regularizer}
    for t in tasks:
        parts |= {f"head {t}": net.heads[t], f"scale_0 {t}": net.initial[0].predict[t],
                  f"scale_3 {t}": net.initial[3].predict[t], f"distill {t}": net.distill[0].messages[t]}
    parts |= {f"fpm {k}": net.propagate[k] for k in net.propagate}
    assert [name for name, module in parts.items() if not reached(module)] == []


@pytest.mark.slow
def test_weights_round_trip(tmp_path, tiny_dataset):
    config = _config(tiny_dataset)
    meta = DatasetLayout(tiny_dataset).meta
    torch.manual_seed(0)
    model = build_model(config, meta).eval()
    path = save_weights(tmp_path / "mti.safetensors", model.state_dict(), config, meta, 0)
    inference = model_from_weights(load_weights(path)).eval()
    image = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = inference(image), model.net(image)
    assert isinstance(inference.net, MTINetHost) and inference.regularizer is None
    for name in want.outputs:
        assert torch.equal(got.outputs[name], want.outputs[name]), name
    for group in SCALES:
        for name in want.aux[group]:
            assert torch.equal(got.aux[group][name], want.aux[group][name]), (group, name)
