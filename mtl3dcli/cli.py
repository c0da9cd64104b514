"""The `mtl3d` command line: one thin function per subcommand that parses options and calls the core.

User errors (`Mtl3dError`) become one red line on stderr and exit code 2; `mtl3d --debug ...` shows tracebacks.
Heavy imports (torch, models) happen inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from mtl3dcli import __version__
from mtl3dcli.datasets.registry import DATASETS, REMAPS
from mtl3dcli.errors import DiskFull, Interrupted, Mtl3dError, disk_full_reason

app = typer.Typer(
    help="Multi-task dense prediction (segmentation, depth, normals, boundaries, ...) with the 3D-aware tri-plane "
         "regularizer of Li et al., ICLR 2024.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False, rich_markup_mode="rich",
)
console = Console(stderr=True, soft_wrap=True)
out_console = Console(soft_wrap=True)
_state = {"debug": False}
WEIGHTS_HELP = ("hf://owner/repo[@revision]/file and https:// URLs are downloaded once and cached; append "
                "#sha256=<hex> to check the file.")



def _size(text: Optional[str], option: str) -> Optional[tuple[int, int]]:
    """'96x128' -> (96, 128)."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise Mtl3dError(f"{option} must look like HEIGHTxWIDTH (e.g. 96x128), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise Mtl3dError(f"{option} must be positive, got {text!r}")
    return h, w


def _download_progress(label: str):
    from mtl3dcli.progress import progress_bar

    return progress_bar(label, console, bytes_mode=True)


def _version(value: bool) -> None:
    if value:
        out_console.print(f"mtl3d {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    _state["debug"] = debug


# --- data ---------------------------------------------------------------------------------------------------------
@app.command()
def download(
    dataset: Annotated[str, typer.Argument(help=f"One of: {', '.join(DATASETS)}.")],
    out: Annotated[Optional[Path], typer.Option(help="Dataset folder to create (default data/<dataset>).")] = None,
    url: Annotated[Optional[str], typer.Option(help="Archive URL or mirror (real datasets; also "
                                                    "MTL3D_NYUV2_URL / MTL3D_PASCAL_URL).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset folder.")] = False,
    keep_archive: Annotated[bool, typer.Option(help="Keep the downloaded archive after conversion.")] = False,
    train_scenes: Annotated[int, typer.Option(help="synthetic: training scenes.")] = 80,
    val_scenes: Annotated[int, typer.Option(help="synthetic: held-out validation scenes.")] = 180,
    views: Annotated[int, typer.Option(help="synthetic: camera views per scene.")] = 6,
    size: Annotated[str, typer.Option(help="synthetic: image size HEIGHTxWIDTH.")] = "96x128",
    seed: Annotated[int, typer.Option(help="synthetic: generator seed.")] = 0,
    arc_degrees: Annotated[float, typer.Option(help="synthetic: yaw span (degrees) of a scene's cameras around "
                                                    "what they look at; larger = wider baselines.")] = 90.0,
    fov_range: Annotated[Optional[str], typer.Option(help="synthetic: random intrinsics, horizontal field of view "
                                                          "A-B degrees drawn per view (default: NYUv2's, 63).")] = None,
    principal_jitter: Annotated[float, typer.Option(help="synthetic: principal point offset per view, up to this "
                                                         "fraction of the image size.")] = 0.0,
    workers: Annotated[int, typer.Option(help="synthetic: parallel processes (output is identical for any "
                                              "number).")] = 0,
) -> None:
    """Fetch a dataset into the common layout: [bold]synthetic[/] is generated locally (no network); [bold]nyuv2[/]
    and [bold]pascal-context[/] download the standard NYUD_MT / PASCAL_MT archives (resumable, checksummed)."""
    from mtl3dcli.datasets.registry import get_dataset, prepare_dataset
    from mtl3dcli.datasets.synthetic import SyntheticOptions, parse_fov_range
    from mtl3dcli.progress import progress_bar

    spec = get_dataset(dataset)
    height, width = _size(size, "--size")
    synthetic = SyntheticOptions(train_scenes=train_scenes, val_scenes=val_scenes, views=views, height=height,
                                 width=width, seed=seed, arc_degrees=arc_degrees,
                                 fov_range=parse_fov_range(fov_range), principal_jitter=principal_jitter)
    root = prepare_dataset(spec.name, out or Path("data") / spec.name, url=url, overwrite=overwrite,
                           keep_archive=keep_archive, synthetic=synthetic,
                           workers=workers or min(4, os.cpu_count() or 1),
                           progress=lambda label: progress_bar(label, console, bytes_mode=spec.source is not None),
                           log=lambda message: console.print(message, highlight=False))
    _print_dataset_summary(root)


def _print_dataset_summary(root: Path) -> None:
    from rich.table import Table

    from mtl3dcli.data.layout import DatasetLayout

    layout = DatasetLayout(root)
    table = Table(title=f"{layout.meta.name} at {root}", show_header=True)
    table.add_column("split")
    table.add_column("samples", justify="right")
    for split in layout.splits():
        table.add_row(split, str(len(layout.ids(split))))
    out_console.print(table)
    out_console.print(f"tasks: {', '.join(t.name for t in layout.available_tasks())}")
    for task, names in layout.meta.classes.items():
        out_console.print(f"{task} classes ({len(names)}): {', '.join(names)}")
    out_console.print(f"cameras: {'yes (K and pose per view)' if layout.has_cameras else 'no'}")


@app.command()
def preprocess(
    root: Annotated[Path, typer.Argument(help="Dataset folder in the common layout.")],
    remap: Annotated[Optional[str], typer.Option(help="Write a copy with a class remap of the dataset registry: "
                                                      f"{', '.join(REMAPS)}.")] = None,
    resize: Annotated[Optional[str], typer.Option(help="Write a resized copy HEIGHTxWIDTH (needs --out).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Destination of a converted copy.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
) -> None:
    """Derive missing labels in place (boundaries from segmentation, normals from depth and K) and optionally write
    a converted copy (classes remapped, e.g. NYUv2 40->13; resized). Idempotent: a second run has nothing to do."""
    from mtl3dcli.datasets.preprocess import preprocess as run_preprocess
    from mtl3dcli.progress import progress_bar

    if remap is not None and remap not in REMAPS:
        raise Mtl3dError(f"unknown --remap {remap!r}; available: {', '.join(REMAPS)}")
    with progress_bar("preprocessing", console) as advance:
        summary = run_preprocess(root, remap=REMAPS.get(remap), resize=_size(resize, "--resize"), out=out,
                                 overwrite=overwrite, progress=advance)
    for key, value in summary.items():
        out_console.print(f"{key}: {value}")


# --- training -----------------------------------------------------------------------------------------------------
@app.command()
def train(
    preset: Annotated[str, typer.Option(help="Preset name (see presets/) or a YAML path.")] = "demo",
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config value: "
                                                           "section.key=value (repeatable).")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="Tasks to train, e.g. seg,depth (default from the preset).")]
    = None,
    data: Annotated[Optional[Path], typer.Option(help="Dataset root (default from the preset).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/<preset name>, auto-numbered).")]
    = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder from its last "
                                                        "checkpoint.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Total optimizer steps.")] = None,
) -> None:
    """Train a multi-task model (with the 3D-aware regularizer unless the preset disables it). Multi-GPU:
    [bold]torchrun --nproc_per_node N -m mtl3dcli train ...[/]"""
    from mtl3dcli.config import load_config
    from mtl3dcli.runs import next_run_dir
    from mtl3dcli.tasks import parse_tasks

    values = {"data.tasks": [t.name for t in parse_tasks(tasks)] if tasks else None,
              "data.root": str(data) if data else None, "train.device": device, "train.seed": seed,
              "train.steps": steps}
    options = {key: value for key, value in values.items() if value is not None}
    if resume is not None:
        config_file = resume / "config.yaml"
        if not config_file.is_file():
            raise Mtl3dError(f"cannot resume: {config_file} not found (is {resume} a run folder?)")
        config = load_config(str(config_file), overrides, options)
        run_dir = resume
    else:
        config = load_config(preset, overrides, options)
        run_dir = out if out is not None else next_run_dir(Path("runs") / config.name)
    from mtl3dcli.engine.trainer import train as run_train  # torch import after the config checks: typos fail fast

    summary = run_train(config, run_dir, resume=resume is not None, console=console)
    best = summary["best"]
    if best is not None:
        out_console.print(f"done: {summary['step']} steps, best {best['metric']} = {best['value']:.4g} at step "
                          f"{best['step']}; weights in {run_dir / 'weights'}")


# --- inference ----------------------------------------------------------------------------------------------------
@app.command()
def evaluate(
    weights: Annotated[str, typer.Option(help="A .safetensors file written by `mtl3d train`, or its `mtl3d export` "
                                              f".onnx (run by ONNX Runtime). {WEIGHTS_HELP}")],
    data: Annotated[Optional[Path], typer.Option(help="Dataset root (default: the one the model trained on).")]
    = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "val",
    tasks: Annotated[Optional[str], typer.Option(help="Subset of the model's tasks, e.g. seg,depth.")] = None,
    rendered: Annotated[bool, typer.Option(help="Also score the regularizer's rendered maps (diagnosis).")] = False,
    references: Annotated[Optional[Path], typer.Option(help="JSON {task: {metric: value}} of single-task runs for "
                                                            "Delta_m (default: the preset's eval.references).")]
    = None,
    out: Annotated[Optional[Path], typer.Option(help="Metrics JSON to write (default next to the weights).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    edge_thresholds: Annotated[Optional[int], typer.Option(help="Boundary odsF sweep: N evenly spaced thresholds "
                                                                "(default: the hosts' 101 HED thresholds).")] = None,
    edge_nms: Annotated[Optional[bool], typer.Option("--edge-nms/--no-edge-nms", help="Thin boundary maps with "
                                                     "non-maximum suppression before matching (the hosts' protocol; "
                                                     "default from the weights' config).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N images of the split (a quick "
                                                      "look).")] = None,
    workers: Annotated[int, typer.Option(help="Data-loading processes.")] = 2,
    consistency: Annotated[Optional[bool], typer.Option("--consistency/--no-consistency", help="Multi-view "
                                                        "consistency of the predictions (default: on for datasets "
                                                        "with cameras, when the model predicts depth).")] = None,
) -> None:
    """Score a trained model on a split: a table per task and a metrics JSON (mIoU, RMSE, mean angle, odsF, maxF,
    ..., the protocol of each, and Delta_m when references are given)."""
    from mtl3dcli.commands.evaluate import run_evaluation, show_results

    results = run_evaluation(weights, data=data, split=split, tasks=tasks, rendered=rendered,
                             references=references, out=out, batch_size=batch_size, device=device,
                             edge_thresholds=edge_thresholds, edge_nms=edge_nms, limit=limit, workers=workers,
                             consistency=consistency, console=console)
    show_results(results, out_console)


@app.command()
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Images and/or folders of images.")],
    weights: Annotated[str, typer.Option(help="A .safetensors file written by `mtl3d train`, or its `mtl3d export` "
                                              f".onnx (run by ONNX Runtime). {WEIGHTS_HELP}")],
    tasks: Annotated[Optional[str], typer.Option(help="Tasks to output, e.g. seg,depth (default: all).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("predictions"),
    format: Annotated[str, typer.Option(help="Comma list of png (colourised), npy (raw arrays; depth in "
                                             "metres).")] = "png,npy",
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 4,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Predict every task of a trained model on images of any size; outputs at the input resolution. The weights
    file alone defines the model; the 3D regularizer is never built."""
    from mtl3dcli.commands.predict import run_predict

    failures = run_predict(inputs, weights, tasks=tasks, out=out, formats=format, batch_size=batch_size,
                           device=device, console=console)
    if failures:
        raise typer.Exit(2)


@app.command("render-views")
def render_views(
    image: Annotated[Path, typer.Argument(help="Input image.")],
    weights: Annotated[str, typer.Option(help=f"Weights of a model trained with the regularizer. {WEIGHTS_HELP}")],
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("views"),
    frames: Annotated[int, typer.Option(help="Number of novel views.")] = 36,
    orbit_degrees: Annotated[float, typer.Option(help="Largest rotation away from the input view.")] = 15.0,
    path: Annotated[str, typer.Option(help="Camera path: orbit, spiral or swing.")] = "orbit",
    size: Annotated[Optional[str], typer.Option(help="Render size HEIGHTxWIDTH (default: 4x the training "
                                                     "render size).")] = None,
    fps: Annotated[float, typer.Option(help="GIF frame rate.")] = 12.0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Render the learned tri-plane fields (each task, depth, opacity, feature PCA) from novel camera poses
    around the input view: PNG frames, one animated GIF per field and a contact sheet."""
    render_size = _size(size, "--size")  # before the heavy import, so a typo fails at once
    from mtl3dcli.commands.views import run_render_views
    from mtl3dcli.sources import resolve_weights

    weights_path = resolve_weights(weights, _download_progress)
    written = run_render_views(image, weights_path, out=out, frames=frames, orbit_degrees=orbit_degrees, path=path,
                               size=render_size, fps=fps, device=device)
    out_console.print(f"wrote {len(written['gifs'])} GIFs, {written['frames']} frames and {written['sheet']}")


@app.command()
def export(
    weights: Annotated[str, typer.Option(help=f"A .safetensors file written by `mtl3d train`. {WEIGHTS_HELP}")],
    out: Annotated[Path, typer.Option(help="The file to write, e.g. model.onnx.")],
    format: Annotated[str, typer.Option(help="Export format: onnx.")] = "onnx",
    size: Annotated[Optional[str], typer.Option(help="Input size HEIGHTxWIDTH, multiples of the host's size divisor "
                                                     "(default: the size the weights evaluate at).")] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Symbolic batch, height and width (sides still "
                                          "multiples of the size divisor) instead of one fixed image.")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset (17 or newer).")] = 18,
    tolerance: Annotated[float, typer.Option(help="Largest absolute difference from PyTorch allowed in the "
                                                  "self-check.")] = 1e-4,
) -> None:
    """Export the host network (never the regularizer) for deployment, with one output per task and, in the file's
    metadata, what [bold]predict[/] and [bold]evaluate[/] need; the file is checked against PyTorch with ONNX
    Runtime before it is written."""
    export_size = _size(size, "--size")
    from mtl3dcli.commands.export import run_export

    summary = run_export(weights, out, format=format, size=export_size, dynamic=dynamic, opset=opset,
                         tolerance=tolerance, progress=_download_progress)
    shape = "dynamic batch and size" if dynamic else f"1x3x{summary['size'][0]}x{summary['size'][1]}"
    worst = max(summary["max_abs_diff"].values())
    out_console.print(f"wrote {out} ({summary['bytes'] / 1e6:.1f} MB, opset {opset}, input {shape}, outputs "
                      f"{', '.join(summary['outputs'])}); ONNX Runtime matches PyTorch within {worst:.2g}")


@app.command()
def study(
    spec_file: Annotated[Optional[Path], typer.Argument(help="A study YAML (preset, seeds, variants, ...) instead of "
                                                             "the options.")] = None,
    preset: Annotated[str, typer.Option(help="Preset every run starts from.")] = "demo",
    seeds: Annotated[int, typer.Option(help="Seeds per variant (0..N-1).")] = 3,
    variants: Annotated[str, typer.Option(help="Comma list: noreg, reg, reg-alpha=X, crossview, 2d-control, "
                                               "low-data=F, NAME:KEY=VALUE; combine with +.")]
    = "noreg,reg",
    data: Annotated[Optional[Path], typer.Option(help="Dataset root (default from the preset).")] = None,
    eval_data: Annotated[Optional[list[Path]], typer.Option("--eval-data", help="A further dataset every run is "
                                                            "scored on, e.g. other camera intrinsics (repeatable).")]
    = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="Config override for every run: "
                                                           "section.key=value (repeatable).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps per run (default from the preset).")] = None,
    half_width: Annotated[Optional[float], typer.Option(help="Sequential seeds: after --seeds, add seeds until every "
                                                            "variant's paired Delta_m interval is within +/- this "
                                                            "many points, or --max-seeds is reached.")] = None,
    max_seeds: Annotated[Optional[int], typer.Option(help="The most seeds a sequential study trains (default 10 "
                                                          "with --half-width).")] = None,
    pooled: Annotated[bool, typer.Option("--pooled", help="With --half-width: judge a variant that shares its "
                                         "control with others by its pooled Delta_m interval (assumes every run's "
                                         "noise is the same; narrower, so fewer seeds).")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Study folder (default studies/<preset>).")] = None,
    jobs: Annotated[int, typer.Option(help="Runs at once, each in its own process with an equal share of the CPU "
                                           "threads (and its own GPU where there are several). A run's numbers "
                                           "depend on its thread count.")] = 1,
    launcher: Annotated[Optional[str], typer.Option(help="local (default) or submitit: each run a SLURM job.")] = None,
    cluster: Annotated[Optional[str], typer.Option(help="submitit's executor: slurm or local.")] = None,
    partition: Annotated[Optional[str], typer.Option(help="submitit: the SLURM partition.")] = None,
    gpus_per_run: Annotated[Optional[int], typer.Option(help="submitit: GPUs per job.")] = None,
    cpus_per_run: Annotated[Optional[int], typer.Option(help="submitit: CPUs per job (its runs' threads).")] = None,
    time_min: Annotated[Optional[int], typer.Option(help="submitit: a job's time limit, minutes (240).")] = None,
    mem_gb: Annotated[Optional[float], typer.Option(help="submitit: memory per job, GB.")] = None,
) -> None:
    """Train and evaluate a grid of variants x seeds and summarize it: per variant the mean and 95% interval of every
    primary metric, and the paired difference to the control (same seeds) with its interval (for Delta_m also
    pooled over the variants of one control). Rerunning finishes an interrupted study and redoes no finished run; a
    rerun with more seeds, other variants or another --eval-data set adds only what is missing. The launcher flags
    override a study file's `launcher` (docs/cluster.md)."""
    from mtl3dcli.commands.study import StudySpec, load_spec, with_launcher

    if jobs < 1:
        raise Mtl3dError(f"--jobs must be at least 1, got {jobs}")
    if spec_file is not None:
        spec = load_spec(spec_file)
    else:
        if half_width is not None and max_seeds is None:
            max_seeds = max(10, seeds)
        spec = StudySpec(preset=preset, seeds=seeds, variants=[v for v in variants.split(",") if v.strip()],
                         data=str(data) if data else None, eval_data=[str(p) for p in eval_data or []],
                         overrides=list(overrides or []), steps=steps, half_width=half_width, max_seeds=max_seeds,
                         pooled=pooled)
    spec = with_launcher(spec, name=launcher, cluster=cluster, partition=partition, gpus_per_run=gpus_per_run,
                         cpus_per_run=cpus_per_run, time_min=time_min, mem_gb=mem_gb)
    target = out or Path("studies") / Path(spec.preset).stem
    summary = _locked_study(spec, target, jobs)
    out_console.print((target / "summary.md").read_text(encoding="utf-8"))
    out_console.print(f"study: {len(summary['variants'])} variants x {summary['seeds']} seeds in {target}")


def _locked_study(spec, target: Path, jobs: int) -> dict:
    """run_study holding the study folder's writer lock (each run's training locks its own folder); Ctrl-C while
    a run is being scored (or between runs) ends like one during training: kept work and how to go on."""
    from mtl3dcli.commands.study import run_study
    from mtl3dcli.runlock import folder_lock

    with folder_lock(target, "study"):
        try:
            return run_study(spec, target, console, jobs)
        except KeyboardInterrupt:
            raise Interrupted("study interrupted; finished runs and checkpoints are kept: rerun the same command "
                              "to finish the grid") from None


@app.command("presets")
def list_presets_command() -> None:
    """The bundled presets as a table: host, backbone, dataset, tasks, input size, regularizer and the preset's
    one-line description (which names the paper's reference numbers where there are any)."""
    from rich.table import Table

    from mtl3dcli.config import list_presets, load_config, preset_description

    table = Table(show_lines=False)
    for column in ("preset", "host", "backbone", "data", "tasks", "input", "regularizer", "description"):
        table.add_column(column, overflow="fold")
    for name in list_presets():
        config = load_config(name)
        reg = config.regularizer
        regularizer = (f"{reg.camera}{' + cross-view' if reg.cross_view else ''}, {reg.render_size[0]}x"
                       f"{reg.render_size[1]}" if reg.enabled else "off")
        table.add_row(name, config.model.host, config.model.backbone, config.data.root, ",".join(config.data.tasks),
                      f"{config.data.size[0]}x{config.data.size[1]}", regularizer, preset_description(name))
    out_console.print(table)


def _interrupted(exc: BaseException | None) -> bool:
    """Whether `exc` was raised because of a KeyboardInterrupt (Typer chains it: Exit(130) from it)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def main() -> None:
    """Console-script entry: run the app, turning user errors into one line and exit code 2.

    Typer runs in standalone mode so it reports usage errors and honours `typer.Exit(code)` itself (it vendors its
    own click, whose exception classes differ from the `click` package's)."""
    try:
        app()
    except Mtl3dError as exc:
        if _state["debug"]:
            raise
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)  # text, not markup
        sys.exit(2)
    except SystemExit as exc:  # Typer turns Ctrl-C outside the commands' own handling into exit code 130
        if exc.code == 130 and _interrupted(exc):
            console.print("[red]interrupted[/]: files are written whole or not at all; run the same command again "
                          "to continue", highlight=False)
        raise
    except Exception as exc:  # a bug, not a user error: still one line unless --debug
        if _state["debug"]:
            raise
        reason = disk_full_reason(exc)
        if reason is not None:  # a writer outside the checked ones met a full disk: still the user's to fix
            where = getattr(exc, "filename", None) or "a file"
            console.print(f"[red]error:[/] {DiskFull.writing(where, reason)}", highlight=False, soft_wrap=True)
            sys.exit(2)
        first = (str(exc).splitlines() or [""])[0]
        console.print(f"[red]internal error:[/] {type(exc).__name__}: {first} (rerun with --debug for the traceback)",
                      highlight=False, soft_wrap=True)
        sys.exit(1)
