"""Every closed choice of the config (its Literal types) is tied to what implements it: the Literal equals the
implementing module's table, or, where a two-way switch implements it, every choice builds and runs. Adding a choice
to one side only fails here, not in a user's run."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
from conftest import tiny_config

from mtl3dcli import config as cfg
from mtl3dcli.data.transforms import EVAL_MODES
from mtl3dcli.engine.trainer import OPTIMIZERS, SCHEDULES, build_optimizer, lr_factor
from mtl3dcli.metrics.dense import SALIENCY_VARIANTS
from mtl3dcli.models.build import build_model
from mtl3dcli.models.hosts.baseline import HEADS
from mtl3dcli.models.regularizer import DENSITY_ACTIVATIONS
from mtl3dcli.render.rays import SPACINGS
from mtl3dcli.render.triplane import AGGREGATIONS


@pytest.mark.parametrize("literal, table", [
    (cfg.EvalMode, EVAL_MODES), (cfg.Head, HEADS), (cfg.Spacing, SPACINGS), (cfg.DensityActivation,
                                                                              DENSITY_ACTIVATIONS),
    (cfg.Aggregation, AGGREGATIONS), (cfg.Optimizer, OPTIMIZERS), (cfg.Schedule, SCHEDULES),
    (cfg.SaliencyProtocol, SALIENCY_VARIANTS)])
def test_literal_equals_the_implementing_table(literal, table):
    assert set(get_args(literal)) == set(table)


def test_every_schedule_and_optimizer_runs():
    train = cfg.TrainConfig(steps=10, warmup_steps=2)
    for schedule in get_args(cfg.Schedule):
        train.schedule = schedule
        factors = [lr_factor(step, train) for step in range(10)]
        assert factors[:2] == [0.5, 1.0] and all(0.0 <= f <= 1.0 for f in factors)
    for name in get_args(cfg.Optimizer):
        train.optimizer = name
        assert isinstance(build_optimizer(torch.nn.Linear(2, 2), train), torch.optim.Optimizer)


@pytest.mark.parametrize("kind, camera, decode", [
    (kind, camera, decode) for kind in get_args(cfg.RegularizerKind) for camera in get_args(cfg.CameraModel)
    for decode in get_args(cfg.Decode)])
def test_every_regularizer_kind_camera_and_decode_builds_and_renders(tiny_dataset, kind, camera, decode):
    from mtl3dcli.data.layout import DatasetLayout

    config = tiny_config(tiny_dataset, f"regularizer.kind={kind}", f"regularizer.camera={camera}",
                         f"regularizer.decode={decode}")
    model = build_model(config, DatasetLayout(tiny_dataset).meta)
    assert model.regularizer is not None
    if kind == "triplane":
        image = torch.rand(1, 3, 32, 48)
        features = model(image).features
        K = torch.tensor([[[40.0, 0.0, 24.0], [0.0, 40.0, 16.0], [0.0, 0.0, 1.0]]])
        renders = model.render(features, K, (32, 48))
        assert torch.isfinite(renders.depth).all()
