"""`mtl3d evaluate`: load self-describing weights, stream a split through the model, report and save metrics
(with Delta_m against single-task references when given)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from mtl3dcli import fileio
from mtl3dcli.data.dataset import MultiTaskDataset
from mtl3dcli.data.transforms import eval_transform
from mtl3dcli.weights import load_weights
from mtl3dcli.engine.distributed import DistContext
from mtl3dcli.engine.evaluate import evaluate
from mtl3dcli.engine.trainer import resolve_device
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.metrics import delta_m
from mtl3dcli.models.build import MTL3DModel, model_from_weights
from mtl3dcli.tasks import Task, parse_tasks, primary_metrics


def select_tasks(model: MTL3DModel, spec: str | None) -> list[Task]:
    """The model's tasks named in `spec` ("seg,depth"); a task the model lacks is a clear error."""
    if not spec:
        return list(model.tasks)
    have = {t.name: t for t in model.tasks}
    wanted = parse_tasks(spec)
    missing = [t.name for t in wanted if t.name not in have]
    if missing:
        raise Mtl3dError(f"the model has no {', '.join(missing)} head (it predicts: {', '.join(have)})")
    return [have[t.name] for t in wanted]


def check_dataset_fits(model: MTL3DModel, dataset: MultiTaskDataset) -> None:
    """Class-count mismatches would give meaningless numbers: refuse them."""
    for task in dataset.tasks:
        if task.name in model.meta.classes and task.name in dataset.meta.classes:
            ours, theirs = len(model.meta.classes[task.name]), len(dataset.meta.classes[task.name])
            if ours != theirs:
                raise Mtl3dError(f"{task.name}: the model predicts {ours} classes but dataset {dataset.layout.root} "
                                 f"has {theirs}")


def run_evaluation(weights_path: Path, *, data: Path | None = None, split: str = "val", tasks: str | None = None,
                   rendered: bool = False, references: Path | None = None, out: Path | None = None,
                   batch_size: int = 8, device: str = "auto", edge_thresholds: int | None = None,
                   workers: int = 2) -> dict[str, Any]:
    """Evaluate `weights_path` on `split` of `data` (default: the dataset it trained on) and write the report
    (default `<weights>.<split>.json`); returns the report with "results" {task: {metric: value}}."""
    weights = load_weights(weights_path)
    config = weights.config
    model = model_from_weights(weights, with_regularizer=rendered)
    selected = select_tasks(model, tasks)
    root = data or Path(config.data.root)
    dataset = MultiTaskDataset(root, split, selected, eval_transform(config.data.eval_size, config.data.eval_mode))
    check_dataset_fits(model, dataset)
    torch_device = resolve_device(device, DistContext())
    model.to(torch_device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=torch_device.type == "cuda")
    if edge_thresholds is not None:
        config.eval.edge_thresholds = edge_thresholds
    results = evaluate(model, loader, torch_device, rendered=rendered, tasks=selected,
                       metric_options=config.eval.metric_options())
    refs = _references(references) if references else config.eval.references
    report: dict[str, Any] = {
        "weights": str(weights_path), "step": weights.step, "dataset": str(root), "split": split,
        "samples": len(dataset), "results": results,
    }
    if refs:
        report["delta_m"] = delta_m(results, refs, primary_metrics(selected))
    target = out or Path(weights_path).with_suffix(f".{split}.json")
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

