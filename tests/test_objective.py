"""The training objective's formula: each term is its task loss times its weights, and the total is their sum."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from mtl3dcli.data.dataset import MultiTaskDataset
from mtl3dcli.data.transforms import eval_transform
from mtl3dcli.engine.objective import Objective
from mtl3dcli.models.build import build_model, resolve_tasks
from mtl3dcli.models.hosts import HostOutput
from mtl3dcli.models.layers import upsample_maps


def _setup(tiny_dataset, *extra):
    config = tiny_config(tiny_dataset, *extra)
    tasks = resolve_tasks(config)
    dataset = MultiTaskDataset(tiny_dataset, "train", tasks, eval_transform((32, 48)))
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    torch.manual_seed(0)
    model = build_model(config, dataset.meta, tasks=tasks)
    return Objective(model, config).eval(), model, batch  # eval: midpoint ray samples, deterministic


def test_terms_are_weighted_task_losses_and_the_total_is_their_sum(tiny_dataset):
    objective, model, batch = _setup(tiny_dataset, "train.loss_weights={semseg: 3.0}",
                                     "regularizer.alpha={depth: 0.5}", "regularizer.default_alpha=0.2")
    with torch.no_grad():
        total, terms = objective(batch)
        out = model.net(batch["image"])
        renders = model.render(out.features, batch["K"], (32, 48))
    labels, valid = batch["labels"], batch["valid"]
    up = upsample_maps(renders.tasks, (32, 48))
    weight = {"semseg": 3.0, "depth": 1.0, "normals": 10.0, "edge": 50.0}  # loss_weights override, else registry
    alpha = {"semseg": 0.2, "depth": 0.5, "normals": 0.2, "edge": 0.2}
    assert set(terms) == {*weight, *(f"render/{t}" for t in weight)}
    for task in model.tasks:
        head = task.loss(out.outputs[task.name], labels[task.name], valid[task.name])
        rendered = task.loss(up[task.name], labels[task.name], valid[task.name])
        torch.testing.assert_close(terms[task.name], weight[task.name] * head)
        torch.testing.assert_close(terms[f"render/{task.name}"], alpha[task.name] * weight[task.name] * rendered)
    torch.testing.assert_close(total, sum(terms.values()))


def test_deep_supervision_terms_are_upsampled_and_weighted_like_the_outputs(tiny_dataset, monkeypatch):
    objective, model, batch = _setup(tiny_dataset, "regularizer.enabled=false")
    forward = model.net.forward

    def with_aux(image):
        out = forward(image)
        half = {name: value[..., ::2, ::2] for name, value in out.outputs.items()}  # a coarser copy
        return HostOutput(out.outputs, out.features, {"scale_1": half})

    monkeypatch.setattr(model.net, "forward", with_aux)
    with torch.no_grad():
        total, terms = objective(batch)
        out = with_aux(batch["image"])
    up = upsample_maps(out.aux["scale_1"], (32, 48))
    for task in model.tasks:
        expected = task.loss_weight * task.loss(up[task.name], batch["labels"][task.name], batch["valid"][task.name])
        torch.testing.assert_close(terms[f"aux/scale_1/{task.name}"], expected)
    torch.testing.assert_close(total, sum(terms.values()))
    assert not any(key.startswith("render/") for key in terms)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_alpha_zero_leaves_the_regularizer_without_gradient(tiny_dataset, alpha):
    objective, model, batch = _setup(tiny_dataset, f"regularizer.default_alpha={alpha}")
    total, terms = objective.train()(batch)
    rendered = sum(v for k, v in terms.items() if k.startswith("render/"))
    rendered.backward()
    projector = next(model.regularizer.parameters())
    assert (projector.grad.abs().sum() > 0) == (alpha > 0)
