"""The 2d-control branch: the regularizer's size within 5%, its inputs and losses, training-only, no 3D."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from mtl3dcli.config import load_config
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.models.build import build_model, model_from_weights
from mtl3dcli.models.control2d import Control2D, decoder_parameters
from mtl3dcli.weights import load_weights

META = DatasetMeta(name="toy", tasks=["semseg", "depth", "normals", "edge"], classes={"semseg": list("abcde")},
                   depth_range=(0.5, 5.0))


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_decoder_parameter_count_by_hand():
    # trunk (48*15 + 15) + (9*15*15 + 15) = 735 + 2,040 = 2,775; heads 4 x (15*32 + 32) + 33 * (13+1+3+1) = 2,642
    assert decoder_parameters(48, 15, 32, {"a": 13, "b": 1, "c": 3, "d": 1}) == 2775 + 2642


@pytest.mark.parametrize("preset, extra", [("demo", []), ("hrnet18", ["model.pretrained=null"]),
                                           ("mtinet-hrnet18-nyuv2", ["model.pretrained=null"])])
def test_same_size_as_the_regularizer_within_5_percent(preset, extra):
    torch.manual_seed(0)
    with torch.device("meta"):
        triplane = build_model(load_config(preset, extra), META)
        control = build_model(load_config(preset, [*extra, "regularizer.kind=2d-control"]), META)
    assert isinstance(control.regularizer, Control2D)
    ours, theirs = _count(control.regularizer), _count(triplane.regularizer)
    assert abs(ours - theirs) / theirs < 0.05, (ours, theirs)
    assert _count(control.net) == _count(triplane.net)  # the host is untouched


def test_trained_like_the_regularizer_and_absent_at_inference(tiny_dataset, tmp_path):
    from mtl3dcli.engine.trainer import train

    config = tiny_config(tiny_dataset, "regularizer.kind=2d-control", "train.steps=2", "train.eval_every=2")
    run = tmp_path / "run"
    summary = train(config, run)
    records = [line for line in (run / "metrics.jsonl").read_text().splitlines() if '"render/semseg"' in line]
    assert records and summary["step"] == 2  # the same render/<task> terms supervise it
    weights = load_weights(run / "weights" / "last.safetensors")
    assert weights.has_regularizer
    inference = model_from_weights(weights)
    assert inference.regularizer is None
    assert _count(inference) == _count(model_from_weights(weights).net)
    renders = model_from_weights(weights, with_regularizer=True).render(torch.zeros(1, 80, 8, 12),
                                                                          torch.eye(3)[None], (32, 48))
    assert tuple(renders.tasks["semseg"].shape[-2:]) == tuple(config.regularizer.render_size)
    with pytest.raises(Mtl3dError, match="no 3D field"):
        model_from_weights(weights, with_regularizer=True).render(torch.zeros(1, 80, 8, 12), torch.eye(3)[None],
                                                                  (32, 48), transform=torch.eye(4)[None])


def test_cross_view_needs_the_triplane():
    with pytest.raises(Mtl3dError, match="kind=triplane"):
        load_config("demo-crossview", ["regularizer.kind=2d-control"])
