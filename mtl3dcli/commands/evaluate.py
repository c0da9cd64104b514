"""`mtl3d evaluate`: score self-describing weights on a split and write a metrics JSON (with the protocol of every
metric, and Delta_m against single-task references when given). The weights may be an `mtl3d export` ONNX file
(scored through ONNX Runtime: exactly what will be deployed) and may come from the hub or a URL (`sources`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Subset

from mtl3dcli import fileio
from mtl3dcli.data.dataset import MultiTaskDataset
from mtl3dcli.data.transforms import eval_transform
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.inference import InferenceSession, read_weights
from mtl3dcli.interrupts import StopRequest
from mtl3dcli.models.build import MTL3DModel
from mtl3dcli.onnx_backend import OnnxModel
from mtl3dcli.progress import progress_bar
from mtl3dcli.reports import evaluation_report, scores_consistency
from mtl3dcli.sources import is_remote, resolve_weights


def check_dataset_fits(model: MTL3DModel | OnnxModel, dataset: MultiTaskDataset) -> None:
    """Class-count mismatches would give meaningless numbers: refuse them."""
    for task in dataset.tasks:
        if task.name in model.meta.classes and task.name in dataset.meta.classes:
            ours, theirs = len(model.meta.classes[task.name]), len(dataset.meta.classes[task.name])
            if ours != theirs:
                raise Mtl3dError(f"{task.name}: the model predicts {ours} classes but dataset {dataset.layout.root} "
                                 f"has {theirs}")


def default_report_path(reference: str | Path, local: Path, split: str) -> Path:
    """`<weights>.<split>.json` next to local weights (`<name>.onnx.<split>.json` for an export, so it never
    replaces its source's report); in the working folder for remote weights (never inside a download cache)."""
    name = f"{local.stem}{'.onnx' if local.suffix.lower() == '.onnx' else ''}.{split}.json"
    return Path(name) if is_remote(reference) else local.with_name(name)


def run_evaluation(weights_path: str | Path, *, data: Path | None = None, split: str = "val", tasks: str | None = None,
                   rendered: bool = False, references: Path | None = None, out: Path | None = None,
                   batch_size: int = 8, device: str = "auto", edge_thresholds: int | None = None,
                   edge_nms: bool | None = None, limit: int | None = None, workers: int = 2,
                   consistency: bool | None = None, console: Console | None = None) -> dict[str, Any]:
    """Evaluate `weights_path` (a file or remote reference) on `split` of `data` (default: the dataset it trained
    on), or its first `limit` images, and write the report (default: `default_report_path`); returns the report with
    "results" {task: {metric: value}} and "protocols" {task: definition}. `consistency` (default: when the dataset has
    cameras and the model predicts depth) adds the multi-view consistency of the predictions."""
    console = console or Console(stderr=True)
    local = resolve_weights(weights_path, lambda label: progress_bar(label, console, bytes_mode=True))
    weights = read_weights(local)
    session = InferenceSession.from_weights(weights, device=device, tasks=tasks, with_regularizer=rendered)
    config = weights.config
    root = data or Path(config.data.root)
    dataset = MultiTaskDataset(root, split, session.tasks, eval_transform(config.data.eval_size,
                                                                          config.data.eval_mode))
    check_dataset_fits(session.model, dataset)
    if limit is not None and limit < 1:
        raise Mtl3dError(f"--limit must be at least 1, got {limit}")
    samples = Subset(dataset, range(min(limit, len(dataset)))) if limit else dataset
    dataset.check_files(len(samples))
    loader = DataLoader(samples, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=session.device.type == "cuda")
    if edge_thresholds is not None:
        config.eval.edge_thresholds = edge_thresholds
    if edge_nms is not None:
        config.eval.edge_nms = edge_nms
    options = config.eval.metric_options()
    if consistency is None:
        consistency = scores_consistency(dataset.layout.has_cameras, session.tasks)
    with progress_bar(f"evaluating {split}", console, unit="images") as advance:
        done = [0]

        def on_batch(images: int) -> None:
            done[0] += images
            advance(done[0], len(samples))

        with StopRequest() as stop, stop.immediate():  # Ctrl-C stops it at once, also in a `study --jobs` worker
            results = session.evaluate(loader, rendered=rendered, metric_options=options, consistency=consistency,
                                       on_batch=on_batch)
    report = evaluation_report(
        weights=weights_path, step=weights.step, dataset=root, split=split, samples=len(samples), results=results,
        protocols=session.protocols(options, consistency=consistency), tasks=session.tasks,
        references=_references(references) if references else config.eval.references)
    target = out or default_report_path(weights_path, local, split)
    fileio.write_json(target, report)
    report["written"] = str(target)
    return report


def _references(path: Path) -> dict[str, dict[str, float]]:
    data = fileio.read_json(path)
    if isinstance(data, dict) and isinstance(data.get("results"), dict):  # an `mtl3d evaluate` output file
        data = data["results"]
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise Mtl3dError(f"{path}: references must be {{task: {{metric: value}}}}")
    return data


def show_results(report: dict[str, Any], console: Console) -> None:
    """One table per task family (heads, then rendered maps), primary metric first."""
    for name, metrics in report["results"].items():
        table = Table(title=f"{name}  ({report['split']}, {report['samples']} images, step {report['step']})",
                      title_justify="left")
        scalar = {k: v for k, v in metrics.items() if "/" not in k}
        for key in scalar:
            table.add_column(key, justify="right")
        table.add_row(*(f"{v:.4g}" for v in scalar.values()))
        console.print(table)
    if "delta_m" in report:
        console.print(f"Delta_m vs single-task references: {report['delta_m']:+.2f}%")
    console.print(f"metrics written to {report['written']}")
