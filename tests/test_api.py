"""The public regularizer API: the same rendered loss as the CLI's objective, gradients into the user's encoder,
the user's network left alone, user tasks, autocast, DDP, and one clear error per bad argument."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import tiny_config
from torch import nn

import mtl3dcli
from mtl3dcli import Mtl3dError, PartnerView, TaskSpec, TriplaneRegularizer
from mtl3dcli.data.dataset import MultiTaskDataset
from mtl3dcli.data.transforms import eval_transform
from mtl3dcli.engine.objective import Objective
from mtl3dcli.models.build import build_model, resolve_tasks
from mtl3dcli.models.regularizer_fused import FusedRegularizer

TINY = dict(render_size=(8, 12), samples=8, plane_channels=4, density_hidden=8, task_hidden=8)


def _objective_and_batch(tiny_dataset, *extra):
    config = tiny_config(tiny_dataset, *extra)
    tasks = resolve_tasks(config)
    pairs = config.regularizer.cross_view
    dataset = MultiTaskDataset(tiny_dataset, "train", tasks, eval_transform((32, 48)), pairs=pairs, min_overlap=0.0)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    torch.manual_seed(0)
    model = build_model(config, dataset.meta, tasks=tasks)
    return Objective(model, config).train(), model, batch, dataset.meta, config


def _api_like(objective, config, meta) -> TriplaneRegularizer:
    """The API regularizer with the CLI model's settings, task weights and regularizer parameters."""
    model, reg = objective.model, config.regularizer
    config_extra = {"camera": reg.camera, "decode": reg.decode, "cross_alpha": reg.cross_alpha}
    tasks = [TaskSpec(t.name, channels=t.channels(meta), weight=objective.weights[t.name],
                      alpha=objective.alpha[t.name]) for t in model.tasks]
    api = TriplaneRegularizer(model.net.feature_channels, tasks, depth_range=meta.depth_range, **TINY, **config_extra)
    api.load_state_dict(model.regularizer.state_dict(prefix="regularizer."))
    return api


@pytest.mark.parametrize("extra", [
    (),
    ("regularizer.decode=point",),
    ("regularizer.camera=perspective", "regularizer.cross_view=true", "regularizer.min_overlap=0.0",
     "regularizer.alpha={depth: 0.5}", "train.loss_weights={semseg: 3.0}", "regularizer.cross_alpha=0.25"),
])
def test_the_api_loss_is_the_objectives_rendered_term(tiny_dataset, extra):
    objective, model, batch, meta, config = _objective_and_batch(tiny_dataset, *extra)
    torch.manual_seed(7)  # the same stratified draws: the host's forward draws nothing
    _, terms = objective(batch)
    api = _api_like(objective, config, meta)
    assert isinstance(api.regularizer, FusedRegularizer)
    torch.manual_seed(7)
    host = model.net(batch["image"])
    features = host.features
    partner = None
    if "pair" in batch:
        pair = batch["pair"]
        partner = PartnerView(pair["K"], pair["pose"], pair["labels"], pair["valid"], batch["has_pair"])
    out = api(features, batch["labels"], valid=batch["valid"], K=batch["K"], pose=batch.get("pose"),
              partner=partner, scales=host.scales)
    for name, loss in out.losses.items():
        torch.testing.assert_close(loss, terms[f"render/{name}"], rtol=0, atol=0)
    for name, loss in out.cross_losses.items():
        torch.testing.assert_close(loss, terms[f"cross/{name}"], rtol=0, atol=0)
    assert len(out.cross_losses) == (4 if partner is not None else 0)
    rendered = [v for k, v in terms.items() if k.startswith(("render/", "cross/")) and k != "cross/visible"]
    torch.testing.assert_close(out.total, torch.stack(rendered).sum())
    if partner is not None:
        assert out.visible == terms["cross/visible"] and 0 < out.visible <= 1
    assert out.maps["semseg"].shape == (2, len(meta.classes["semseg"]), 8, 12) and out.opacity.shape == (2, 1, 8, 12)


class Encoder(nn.Module):
    """A user's network: an encoder and a depth head; the regularizer is not part of it."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU())
        self.depth = nn.Conv2d(16, 1, 1)

    def forward(self, image):
        features = self.encoder(image)
        return features, nn.functional.interpolate(self.depth(features), size=image.shape[-2:])


def _labels(batch=2, size=(16, 24)):
    g = torch.Generator().manual_seed(0)
    return {"depth": 1 + 3 * torch.rand(batch, 1, *size, generator=g),
            "height": torch.rand(batch, 1, *size, generator=g)}


def test_gradients_reach_the_users_encoder_and_its_state_dict_stays_its_own():
    net = Encoder()
    own = set(net.state_dict())
    reg = TriplaneRegularizer(16, ["depth", TaskSpec("height", channels=1,
                                                     loss=lambda out, y, v: (out - y).abs()[:, 0][v].mean())],
                              depth_range=(0.5, 5.0), **TINY)
    optimizer = torch.optim.SGD([*net.parameters(), *reg.parameters()], lr=0.1)
    features, depth = net(torch.rand(2, 3, 16, 24))
    labels = _labels()
    out = reg(features, labels)
    assert set(out.losses) == {"depth", "height"} and out.visible is None
    assert out.losses["height"].item() > 0 and torch.isfinite(out.total)
    out.total.backward()
    assert net.encoder[0].weight.grad.abs().sum() > 0  # the rendered loss trains the user's encoder
    assert net.depth.weight.grad is None  # and nothing else of the user's network
    assert all(p.grad is not None for p in reg.parameters())
    optimizer.step()
    assert set(net.state_dict()) == own


def test_eval_mode_renders_midpoints_deterministically():
    reg = TriplaneRegularizer(16, ["depth"], depth_range=(0.5, 5.0), **TINY).eval()
    features = torch.randn(2, 16, 8, 12)
    first, second = reg(features, _labels()), reg(features, _labels())
    assert torch.equal(first.total, second.total)


def test_the_perspective_camera_takes_per_sample_intrinsics():
    reg = TriplaneRegularizer(16, ["depth", "normals"], camera="perspective", depth_range=(0.5, 5.0), **TINY)
    K = torch.tensor([[20.0, 0, 12], [0, 20.0, 8], [0, 0, 1]]).expand(2, 3, 3).clone()
    K[1, 0, 0] = 30.0
    labels = {"depth": _labels()["depth"], "normals": nn.functional.normalize(torch.randn(2, 3, 16, 24), dim=1)}
    out = reg(torch.randn(2, 16, 8, 12), labels, K=K)
    assert out.maps["normals"].shape == (2, 3, 8, 12) and torch.isfinite(out.total)


def test_autocast_keeps_the_loss_finite_and_close_to_float32():
    torch.manual_seed(0)
    reg = TriplaneRegularizer(16, ["depth"], depth_range=(0.5, 5.0), **TINY).eval()
    features = torch.randn(2, 16, 8, 12)
    full = reg(features, _labels()).total
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = reg(features, _labels())
    assert half.total.dtype == torch.float32 and torch.isfinite(half.total)
    torch.testing.assert_close(half.total, full, rtol=0.05, atol=0.05)


DDP_SCRIPT = """
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from mtl3dcli import TriplaneRegularizer
dist.init_process_group("gloo", init_method="file://{store}", rank=0, world_size=1)
reg = DistributedDataParallel(TriplaneRegularizer(16, ["depth"], depth_range=(0.5, 5.0), render_size=(4, 6),
                                                  samples=4, plane_channels=4, density_hidden=8, task_hidden=8))
features = torch.randn(2, 16, 8, 12, requires_grad=True)
out = reg(features, {{"depth": 1 + torch.rand(2, 1, 8, 12)}})
out.total.backward()
assert features.grad.abs().sum() > 0
dist.destroy_process_group()
print("ok")
"""


@pytest.mark.slow
def test_the_regularizer_trains_under_ddp(tmp_path):
    script = DDP_SCRIPT.format(store=tmp_path / "store")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("build, call, message", [
    (dict(tasks=[TaskSpec("height", channels=1)]), None, r"tasks: 'height' is not a built-in task.*needs channels and a loss"),
    (dict(tasks=["semseg"]), None, r"tasks: 'semseg' is a class task: give its number of classes"),
    (dict(tasks=["depth"], camera="fisheye"), None, r"regularizer.camera must be one of orthographic, perspective"),
    (dict(tasks=["depth"], samples_per_ray=3), None, r"unknown option\(s\) samples_per_ray"),
    (dict(tasks=["depth"]), dict(features=torch.randn(16, 8, 12)), r"features must be a 4-D tensor"),
    (dict(tasks=["depth"]), dict(features=torch.randn(2, 8, 8, 12)), r"features have 8 channels"),
    (dict(tasks=["depth"]), dict(scales=[torch.randn(2, 8, 8, 12), torch.randn(2, 4, 4, 6)]),
     r"scales must be the 4-D maps that features \(2, 16, 8, 12\) fuse"),
    (dict(tasks=["depth"]), dict(labels={"depth": torch.rand(2, 16, 24)}), r"labels\['depth'\] has shape \(2, 16, 24\)"),
    (dict(tasks=["depth"]), dict(labels={"dep": torch.rand(2, 1, 16, 24)}), r"labels has no tensor for task 'depth'"),
    (dict(tasks=["depth"], camera="perspective"), dict(), r"K is missing: camera='perspective' needs"),
    (dict(tasks=["depth"], camera="perspective"), dict(K=torch.eye(3)), r"K must be a \(2, 3, 3\) tensor"),
    (dict(tasks=["depth"]), dict(partner=PartnerView(torch.eye(3), torch.eye(4), {})),
     r"partner: the cross-view term needs camera='perspective'"),
])
def test_bad_input_is_one_error_naming_the_argument(build, call, message):
    def make():
        return TriplaneRegularizer(16, depth_range=(0.5, 5.0), **{**TINY, **build})

    if call is None:
        with pytest.raises(Mtl3dError, match=message):
            make()
        return
    reg = make()
    args = {"features": torch.randn(2, 16, 8, 12), "labels": {"depth": 1 + torch.rand(2, 1, 16, 24)}, **call}
    features, labels = args.pop("features"), args.pop("labels")
    with pytest.raises(Mtl3dError, match=message):
        reg(features, labels, **args)


def test_the_public_surface_is_importable_without_torch_at_first():
    code = "import sys, mtl3dcli; assert 'torch' not in sys.modules; print(sorted(mtl3dcli.__all__))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in mtl3dcli.__all__:
        assert getattr(mtl3dcli, name) is not None, name
