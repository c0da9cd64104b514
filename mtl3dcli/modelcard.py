"""The model card of a training run: its folder's README.md, so the run uploads to a model hub as it is.

Written at the end of training from the run's config and its evaluation report (`eval.<dataset>.json`, read back from
disk, so the card's metrics are the report's): host, backbone, dataset and split, tasks, the final metrics, the
regularizer settings, how to use the weights, the command that reproduces the run, the paper's citation and the
license. The YAML header is the Hugging Face Hub's model-card metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mtl3dcli import __version__
from mtl3dcli.config import Config
from mtl3dcli.fileio import read_json, write_text
from mtl3dcli.reports import run_report_path

LICENSE = "mit"
CITATION = """@inproceedings{li2024multitask,
  title     = {Multi-task Learning with 3D-Aware Regularization},
  author    = {Li, Wei-Hong and McDonagh, Steven and Leonardis, Ale{\\v{s}} and Bilen, Hakan},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2024},
  eprint    = {2310.00986},
  archivePrefix = {arXiv}
}"""
SIGNIFICANT = 6  # digits of each metric in the card (the report keeps full precision)


def metric_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(task, metric, value) for every scalar of the report's results; per-class entries ("IoU/wall") stay in the
    JSON. Values to `SIGNIFICANT` significant digits."""
    rows = []
    for task, metrics in report["results"].items():
        for name, value in metrics.items():
            if "/" not in name and isinstance(value, (int, float)):
                rows.append((task, name, f"{value:.{SIGNIFICANT}g}"))
    return rows


def _header(config: Config, report: dict[str, Any]) -> str:
    data = {"library_name": "mtl3d", "license": LICENSE,
            "tags": ["multi-task-learning", "dense-prediction", "3d-aware-regularization", *config.data.tasks,
                     config.model.host, config.model.backbone],
            "datasets": [Path(report["dataset"]).name]}
    return f"---\n{yaml.safe_dump(data, sort_keys=False)}---\n"


def _summary(config: Config, report: dict[str, Any]) -> str:
    data, model, train = config.data, config.model, config.train
    options = ", ".join(f"{k}={v}" for k, v in model.host_options.items()) or "default options"
    eval_size = "x".join(map(str, data.eval_size)) if data.eval_size else "the stored size"
    return f"""# {config.name}

Multi-task dense prediction ({', '.join(data.tasks)}) with the {model.host} host on a {model.backbone} backbone,
trained {'with' if config.regularizer.enabled else 'without'} the 3D-aware regularizer of *Multi-task Learning with
3D-Aware Regularization* (Li et al., ICLR 2024, [arXiv:2310.00986](https://arxiv.org/abs/2310.00986)), by mtl3d
{__version__}.

| | |
|---|---|
| host | {model.host} ({options}) |
| backbone | {model.backbone} (initialised from: {model.pretrained or 'scratch'}) |
| dataset | {Path(report['dataset']).name}: trained on split `{data.train_split}`, scored on `{report['split']}` \
({report['samples']} image{'s' if report['samples'] != 1 else ''}) |
| tasks | {', '.join(data.tasks)} |
| input | {data.size[0]}x{data.size[1]} training crops; evaluated at {eval_size} |
| training | {train.steps} steps, batch {data.batch_size}, {train.optimizer} lr {train.lr:g}, seed {train.seed} |
"""


def _results(run_dir: Path, config: Config, report: dict[str, Any]) -> str:
    rows = "\n".join(f"| {task} | {metric} | {value} |" for task, metric, value in metric_rows(report))
    protocols = "\n".join(f"- {task}: {text}" for task, text in report.get("protocols", {}).items())
    delta = f"\nDelta_m against the single-task references: {report['delta_m']:+.2f}%\n" if "delta_m" in report else ""
    name = run_report_path(run_dir, config.data.root).name
    return f"""## Results

The last weights (`weights/last.safetensors`, step {report['step']}) on `{report['split']}`, from
[`{name}`]({name}), which also holds the per-class numbers:

| task | metric | value |
|---|---|---|
{rows}
{delta}
{protocols}
"""


def _regularizer(config: Config) -> str:
    reg = config.regularizer
    if not reg.enabled:
        return "## Regularizer\n\nOff: this run trained the host alone (the paper's baseline).\n"
    what = ("the 2d-control (same size as the field, no 3D)" if reg.kind == "2d-control"
            else f"the tri-plane field, {reg.camera} rays{', cross-view supervision' if reg.cross_view else ''}")
    settings = yaml.safe_dump({"regularizer": config.to_dict()["regularizer"]}, sort_keys=False).rstrip()
    return (f"## Regularizer\n\nOn: {what}. It is used for training only: the weights' `net.*` tensors are the "
            f"whole deployed network (predict and export never build the regularizer).\n\n```yaml\n{settings}\n"
            f"```\n")


def _use(run_dir: Path, config: Config) -> str:
    return f"""## Use

```bash
mtl3d predict image.jpg --weights hf://<owner>/<repo>/weights/last.safetensors --out predictions
mtl3d evaluate --weights weights/last.safetensors --data <dataset folder>
mtl3d export --weights weights/last.safetensors --dynamic --out model.onnx   # ONNX Runtime, TensorRT, ...
```

`weights/best.safetensors` holds the step with the best validation {config.train.best_metric or 'primary metric'};
every weights file carries its config, tasks and class names, so it needs nothing else.

## Reproduce

```bash
mtl3d train --preset config.yaml --out runs/{run_dir.name}-again   # in this folder (or its hub download)
```

`config.yaml` is this run's resolved config (dataset folder `{config.data.root}`: prepare it with `mtl3d download`);
`environment.json` records the machine it ran on (bit-identical numbers need the same threads and libraries),
`metrics.jsonl` and `results.csv` the training curves.
"""


def _citation(report: dict[str, Any]) -> str:
    return f"""## Citation

```bibtex
{CITATION}
```

## License

Code: MIT (mtl3d). These weights: {LICENSE.upper()}, as the `license` field above says; the training images keep
their own terms ({Path(report['dataset']).name}).
"""


def model_card(run_dir: Path, config: Config, report: dict[str, Any]) -> str:
    """The card's Markdown for `run_dir` trained with `config` and scored in `report`."""
    sections = [_summary(config, report), _results(run_dir, config, report), _regularizer(config),
                _use(run_dir, config), _citation(report)]
    return _header(config, report) + "\n" + "\n".join(sections)


def write_model_card(run_dir: Path, config: Config) -> Path:
    """Write `<run_dir>/README.md` from the run's config and its `eval.<dataset>.json`; returns the path."""
    run_dir = Path(run_dir)
    report = read_json(run_report_path(run_dir, config.data.root))
    path = run_dir / "README.md"
    write_text(path, model_card(run_dir, config, report))
    return path
