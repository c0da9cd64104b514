"""The two library examples (docs/examples) run end to end at tiny sizes: a torchvision network trained by a plain
PyTorch loop with and without the regularizer, and the same network as a CLI host."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES

from mtl3dcli.weights import load_weights

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "docs" / "examples"


@pytest.fixture
def examples(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    yield
    for name in ("plain_pytorch", "custom_host"):
        sys.modules.pop(name, None)


@pytest.mark.slow
def test_the_plain_pytorch_example_trains_with_and_without_the_regularizer(examples, tiny_dataset, capsys):
    import plain_pytorch

    results = plain_pytorch.main(["--data", str(tiny_dataset), "--steps", "2", "--batch-size", "2", "--size", "32",
                                  "48", "--render-size", "8", "12", "--edge-thresholds", "5", "--device", "cpu"])
    assert set(results) == {"noreg", "reg"}
    for metrics in results.values():
        assert set(metrics) == {"semseg", "depth", "normals", "edge"}
        assert all(math.isfinite(value) for task in metrics.values() for value in task.values())
    assert results["noreg"] != results["reg"]  # the rendered loss changed the training
    printed = capsys.readouterr().out
    assert "reg step 2" in printed and "Delta_m of reg over noreg" in printed


@pytest.mark.slow
def test_the_custom_host_example_trains_evaluates_predicts_and_renders(examples, tiny_dataset, tmp_path):
    import custom_host

    sets = [arg for o in [*TINY_OVERRIDES, "regularizer.plane_size=[8,12]"] for arg in ("--set", o)]
    custom_host.main(["--data", str(tiny_dataset), "--out", str(tmp_path / "run"), "--steps", "2", "--frames", "2",
                      "--edge-thresholds", "5", *sets])
    weights = load_weights(tmp_path / "run" / "weights" / "last.safetensors")
    assert weights.host == "custom_host:build" and weights.step == 2
    assert any(key.startswith("net.network.backbone.") for key in weights.state)
    report = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert set(report["results"]) >= {"semseg", "depth", "normals", "edge"}
    assert any((tmp_path / "run" / "predictions").glob("*_semseg.png"))
    assert any((tmp_path / "run" / "views").glob("*.gif"))
