"""Multi-view consistency: exactly perfect for ground truth used as the prediction, lower for a shifted one."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from mtl3dcli.data.dataset import MultiTaskDataset
from mtl3dcli.metrics.consistency import ConsistencyMeter
from mtl3dcli.tasks import TASKS, parse_tasks

TASK_LIST = parse_tasks("semseg,depth,normals")


def _score(root, split, predict) -> dict[str, float]:
    """Feed every batch of the split, with predictions made from its labels by `predict`."""
    meter = ConsistencyMeter({t.name: t.consistency for t in TASK_LIST}, "depth")
    for batch in DataLoader(MultiTaskDataset(root, split, TASK_LIST), batch_size=3):
        predictions = {name: predict(name, label) for name, label in batch["labels"].items()}
        meter.update(list(batch["scene"]), predictions, batch["labels"], batch["valid"], batch["K"], batch["pose"])
    return meter.compute()


def test_ground_truth_is_exactly_consistent(tiny_dataset):
    scores = _score(tiny_dataset, "train", lambda name, label: label)
    assert scores["pairs"] > 0
    assert scores["semseg"] == 100.0 and scores["depth"] == 100.0 and scores["normals"] == 100.0
    assert scores["depth_rel"] < 0.05 and scores["normals_deg"] < 11.25


def test_a_shifted_prediction_is_less_consistent(tiny_dataset):
    def shifted(name, label):  # every view's prediction moved 3 pixels right: views no longer agree
        return torch.roll(label, 3, dims=-1)

    def biased(name, label):  # depth 20 % too far in every view, normals tilted the same way in every view
        if TASKS[name].consistency == "depth":
            return label * torch.linspace(1.0, 1.4, label.shape[-1])
        return label

    truth = _score(tiny_dataset, "train", lambda name, label: label)
    moved = _score(tiny_dataset, "train", shifted)
    assert moved["semseg"] < truth["semseg"] and moved["depth"] < truth["depth"]
    stretched = _score(tiny_dataset, "train", biased)
    assert stretched["depth"] < 100.0 and stretched["depth_rel"] > truth["depth_rel"]
    assert stretched["semseg"] == 100.0  # the other tasks are untouched


@pytest.mark.slow
def test_the_evaluate_report_includes_consistency(tiny_weights, tiny_dataset, tmp_path):
    from mtl3dcli.commands.evaluate import run_evaluation

    report = run_evaluation(tiny_weights, data=tiny_dataset, split="train", out=tmp_path / "m.json", device="cpu",
                            workers=0)
    scores = report["results"]["consistency"]
    assert {"semseg", "depth", "normals", "depth_rel", "normals_deg", "pairs"} <= set(scores)
    assert 0.0 <= scores["semseg"] <= 100.0 and scores["pairs"] > 0 and "consistency" in report["protocols"]
    assert "consistency" not in run_evaluation(tiny_weights, data=tiny_dataset, out=tmp_path / "n.json",
                                               device="cpu", workers=0, consistency=False)["results"]
    with pytest.raises(Exception, match="depth"):
        run_evaluation(tiny_weights, data=tiny_dataset, tasks="seg", out=tmp_path / "o.json", device="cpu",
                       workers=0, consistency=True)
