"""The model card every training run writes as its README.md: metrics equal to its eval.<dataset>.json, the
settings that made it, how to reproduce and cite it."""

from __future__ import annotations

import re

import yaml

from mtl3dcli.config import load_config
from mtl3dcli.fileio import read_json
from mtl3dcli.modelcard import CITATION, metric_rows, model_card
from mtl3dcli.reports import run_report_path


def card_metrics(card: str) -> dict[tuple[str, str], float]:
    """{(task, metric): value} of the card's results table."""
    rows = re.findall(r"^\| (\S+) \| (\S+) \| (-?[0-9.e+-]+|nan|inf) \|$", card, flags=re.M)
    return {(task, metric): float(value) for task, metric, value in rows}


def test_a_run_writes_a_card_whose_metrics_equal_its_report(tiny_weights):
    run = tiny_weights.parents[1]
    config = load_config(str(run / "config.yaml"))
    report = read_json(run_report_path(run, config.data.root))
    card = (run / "README.md").read_text(encoding="utf-8")
    expected = {(task, name): float(f"{value:.6g}") for task, metrics in report["results"].items()
                for name, value in metrics.items() if "/" not in name}
    assert card_metrics(card) == expected
    assert len(expected) > 20 and ("semseg", "mIoU") in expected and ("edge", "odsF") in expected
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "mit" and header["library_name"] == "mtl3d"
    for fact in ("| host | baseline", "| backbone | tiny", "trained on split `train`, scored on `val`",
                 "| tasks | semseg, depth, normals, edge |", "mtl3d train --preset config.yaml", CITATION,
                 "## License", f"step {report['step']}"):
        assert fact in card, fact
    settings = yaml.safe_load(card.split("## Regularizer")[1].split("```yaml")[1].split("```")[0])
    assert settings["regularizer"] == config.to_dict()["regularizer"]


def test_card_of_a_run_without_the_regularizer(tmp_path):
    config = load_config("demo", ["regularizer.enabled=false", "data.root=data/nyuv2"])
    report = {"dataset": "data/nyuv2", "split": "val", "samples": 654, "step": 800, "delta_m": 1.234,
              "results": {"semseg": {"mIoU": 41.23456789, "IoU/wall": 60.0}, "depth": {"rmse": 0.5}},
              "protocols": {"semseg": "pooled confusion matrix"}}
    card = model_card(tmp_path / "run", config, report)
    assert card_metrics(card) == {("semseg", "mIoU"): 41.2346, ("depth", "rmse"): 0.5}
    assert metric_rows(report) == [("semseg", "mIoU", "41.2346"), ("depth", "rmse", "0.5")]
    assert "Off: this run trained the host alone" in card and "```yaml" not in card
    assert "Delta_m against the single-task references: +1.23%" in card and "(654 images)" in card
    assert "- semseg: pooled confusion matrix" in card and "datasets:\n- nyuv2" in card
