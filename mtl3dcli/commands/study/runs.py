"""One run of a study: its folder's state (trained, scored, trained as the study asks) and training and scoring it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from mtl3dcli import fileio
from mtl3dcli.commands.study.spec import StudySpec, Variant, run_datasets, run_dir
from mtl3dcli.config import Config
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.reports import run_report_path


def _scored(report: Path, steps: int) -> bool:
    """Whether `report` holds an evaluation of the run's last weights (after `steps` steps)."""
    return report.is_file() and fileio.read_json(report).get("step") == steps


def run_finished(spec: StudySpec, variant: Variant, seed: int, run: Path) -> bool:
    config = spec.config(variant, seed)
    return all(_scored(run_report_path(run, data), config.train.steps) for data in run_datasets(spec, config))


def check_existing_runs(spec: StudySpec, grid: list[Variant], out: Path) -> None:
    """Refuse a study folder whose runs of the grid's variants, any seed, were trained with another configuration
    than the study now asks of them (a variant name given a new definition, an edited preset file): their results
    would be filed under the wrong variant. The device is free (a parallel study puts runs on several GPUs)."""
    for variant in grid:
        for run in sorted(run_dir(out, variant, 0).parent.glob("seed*")):
            seed = run.name.removeprefix("seed")
            if seed.isdigit():
                _check_run_config(run, spec.config(variant, int(seed)))


def _check_run_config(run: Path, config: Config) -> None:
    path = run / "config.yaml"
    if not path.is_file():
        return
    trained = _flat(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    wanted = _flat(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    differ = [key for key in sorted(set(trained) & set(wanted))  # a setting added since the run keeps its default
              if key != "train.device" and trained[key] != wanted[key]]
    if differ:
        key = differ[0]
        raise Mtl3dError(f"{run} was trained with another configuration ({key}: {trained[key]!r}, the study now "
                         f"asks {wanted[key]!r}); give the variant another name or the study another --out")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"seed": 0}} -> {"train.seed": 0}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def train_and_evaluate(spec: StudySpec, variant: Variant, seed: int, run: Path, device: str | None = None) -> None:
    """Train (resuming an interrupted run) into `run`, then score its last weights on every dataset of the study
    that has no report of them yet: training itself writes the report on the study's data (its final validation),
    and a study that adds an evaluation set to finished runs scores only that set.
    `device` overrides the preset's train.device (a parallel study's GPU per worker)."""
    from mtl3dcli.commands.evaluate import run_evaluation
    from mtl3dcli.engine.trainer import train

    config = spec.config(variant, seed)
    if device is not None:
        config.train.device = device
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "train.log", "a", encoding="utf-8") as log:
        train(config, run, resume=(run / "weights" / "last.state.pt").is_file(), console=Console(file=log))
    for data in run_datasets(spec, config):
        report = run_report_path(run, data)
        if not _scored(report, config.train.steps):
            run_evaluation(run / "weights" / "last.safetensors", data=Path(data), out=report,
                           device=device or "auto", console=Console(file=io.StringIO()))
