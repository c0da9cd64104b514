"""Evaluation reports: the JSON that `mtl3d evaluate` writes, and that training writes for its last weights.

A training run ends with the full evaluation protocol on its validation split; it writes that as the report
`mtl3d evaluate` would write for weights/last.safetensors, to `<run>/eval.<dataset folder>.json` (`run_report_path`),
so a run needs no second pass over the split (`mtl3d study` reads these files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtl3dcli.metrics import delta_m
from mtl3dcli.tasks import Task, primary_metrics


def run_report_path(run: Path, data: str | Path) -> Path:
    """Where a run's report on dataset `data` lives: `<run>/eval.<data folder name>.json`."""
    return Path(run) / f"eval.{Path(data).name}.json"


def scores_consistency(has_cameras: bool, tasks: list[Task]) -> bool:
    """Whether a report includes multi-view consistency by default: the split has cameras and a task gives depth."""
    return has_cameras and any(task.consistency == "depth" for task in tasks)


def evaluation_report(*, weights: Path, step: int, dataset: str | Path, split: str, samples: int,
                      results: dict[str, dict[str, float]], protocols: dict[str, str], tasks: list[Task],
                      references: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """The report of `results` ({task: {metric: value}}): what was scored (weights, step, dataset, split, samples),
    the protocols, and Delta_m against single-task `references` when given."""
    report: dict[str, Any] = {"weights": str(weights), "step": step, "dataset": str(dataset), "split": split,
                              "samples": samples, "results": results, "protocols": protocols}
    if references:
        report["delta_m"] = delta_m(results, references, primary_metrics(tasks))
    return report
