"""`mtl3d study`: a grid of variants x seeds, each trained and evaluated as an ordinary run, summarized with intervals.

    mtl3d study --preset demo --seeds 3 --variants noreg,reg,2d-control,crossview,low-data=0.25

    <out>/study.yaml              the resolved grid (a rerun with other settings is refused)
    <out>/runs/<variant>/seed<k>  ordinary run folders (weights/, metrics.jsonl, results.csv, eval.<data>.json)
    <out>/results.csv             one row per run: variant, seed, every scalar metric, Delta_m vs its control
    <out>/summary.json, .md       per variant and metric: mean, sd and 95% t-interval over seeds; paired differences
                                  to the control (same seeds) in every primary metric and in Delta_m; Delta_m's
                                  interval again with the noise pooled over the variants of one control (a block
                                  design: narrower if every run's noise is the same); the seeds a +/- 1 point
                                  Delta_m interval would need at that spread; with --eval-data,
                                  that spread split into what the study's data and each other set share (the
                                  trained weights' own) and what each set adds (its sample of scenes); the
                                  environments the runs trained in (a bit-identical rerun needs the same one)
    <out>/plots/metrics.png       means with their intervals per variant; plots/curves.png: every run's validation

Variants are comma-separated; "+" combines modifiers (e.g. "noreg+low-data=0.25"):
    noreg           the regularizer off: the control
    reg             the preset's regularizer
    reg-alpha=X     the regularizer with alpha_t = X for every task
    crossview       perspective rays plus cross-view supervision between views of a scene (needs cameras)
    2d-control      a training-only 2D branch of the regularizer's size on the same projected features: no rays,
                    no 3D; if `reg` beats it, the gain comes from the 3D structure, not from an extra branch
    low-data=F      train on a fraction F of the training scenes (the same scenes for every seed)
    NAME:KEY=VALUE[;KEY=VALUE]   any config override, e.g. "samples64:regularizer.samples=64"
Each variant is compared with its control: `noreg` plus the variant's data modifiers (added to the grid if absent).

Finished runs are kept, an interrupted run resumes from its checkpoint, so rerunning the command finishes the grid.
A study folder grows: a rerun may ask for more seeds, other variants or another `--eval-data` set and trains or
scores only what is missing, as long as every run stays the run it was (same preset, data, overrides and steps;
a variant name keeps its definition: each run's config.yaml is checked).
`--half-width H --max-seeds M` makes the seed count sequential: after `--seeds` seeds, seeds are added one at a time
until every variant's paired Delta_m interval is within +/- H points or M seeds are reached (`stats.next_seed_count`);
with `--pooled`, a variant that shares its control with others is judged by its pooled interval.
`--jobs N` trains N runs at once in worker processes (`run_parallel`).
"""

from __future__ import annotations

import csv
import io
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from mtl3dcli import fileio
from mtl3dcli.config import Config, load_config
from mtl3dcli.environment import summarize, training_environments
from mtl3dcli.errors import Interrupted, Mtl3dError
from mtl3dcli.interrupts import remember_interrupts
from mtl3dcli.metrics.consistency import GROUP as CONSISTENCY
from mtl3dcli.reports import run_report_path
from mtl3dcli.stats import (Interval, PooledIntervals, all_within, next_seed_count, paired, pooled_paired,
                            relative_change, seeds_for_half_width, split_spread, t_interval)
from mtl3dcli.tasks import TASKS, get_task

CONTROL = "noreg"
RESOLUTION = 1.0  # the Delta_m half-width (percentage points) `seeds_needed` plans for, unless the study sets one
DATA_MODIFIERS = ("low-data",)
RUN_FIELDS = ("preset", "data", "overrides", "steps")  # what every run of a study folder shares


@dataclass(frozen=True)
class Variant:
    """A named list of config overrides; `data` holds the modifiers that also apply to its control."""

    name: str
    overrides: tuple[str, ...]
    data: tuple[str, ...] = ()

    @property
    def control(self) -> str:
        return "+".join([CONTROL, *self.data])


def _modifier(text: str) -> tuple[list[str], bool]:
    """One modifier -> (overrides, is a data modifier)."""
    key, _, value = text.partition("=")
    if ":" in text:
        return [item for item in text.split(":", 1)[1].split(";") if item], False
    simple = {"noreg": ["regularizer.enabled=false"], "reg": ["regularizer.enabled=true"],
              "crossview": ["regularizer.enabled=true", "regularizer.camera=perspective", "regularizer.cross_view=true"],
              "2d-control": ["regularizer.enabled=true", "regularizer.kind=2d-control"]}
    if text in simple:
        return simple[text], False
    if key == "reg-alpha" and value:
        return ["regularizer.enabled=true", f"regularizer.default_alpha={value}", "regularizer.alpha={}"], False
    if key == "low-data" and value:
        return [f"data.train_fraction={value}"], True
    raise Mtl3dError(f"unknown study variant {text!r}: use noreg, reg, reg-alpha=X, crossview, 2d-control, "
                     f"low-data=F or NAME:KEY=VALUE (combine with +)")


def parse_variant(text: str) -> Variant:
    """'noreg+low-data=0.25' -> Variant('noreg+low-data=0.25', overrides, data=('low-data=0.25',))."""
    text = text.strip()
    overrides, data = [], []
    for part in text.split("+"):
        found, is_data = _modifier(part.strip())
        overrides += found
        if is_data:
            data.append(part.strip())
    name = text.split(":", 1)[0] if ":" in text and "+" not in text else text
    return Variant(name, tuple(overrides), tuple(data))


def study_grid(names: list[str]) -> list[Variant]:
    """The variants asked for plus every control they need, controls first, no duplicates."""
    variants = {v.name: v for v in map(parse_variant, names)}
    if not variants:
        raise Mtl3dError("a study needs at least one variant")
    controls = {v.control: parse_variant(v.control) for v in variants.values()}
    return list({**controls, **variants}.values())


@dataclass
class StudySpec:
    """What `mtl3d study` runs; saved as study.yaml so a rerun continues the same grid."""

    preset: str
    seeds: int
    variants: list[str]
    data: str | None = None  # dataset root (default: the preset's)
    eval_data: list[str] = field(default_factory=list)  # further datasets every run is scored on (camera shift)
    overrides: list[str] = field(default_factory=list)  # `--set` for every run
    steps: int | None = None
    half_width: float | None = None  # sequential seeds: add seeds until every paired Delta_m is within +/- this
    max_seeds: int | None = None  # ... or this many seeds are reached
    pooled: bool = False  # ... where a variant has one, its pooled interval (stats.pooled_paired) decides

    def __post_init__(self):
        if self.seeds < 1:
            raise Mtl3dError(f"a study needs at least 1 seed, got {self.seeds}")
        if self.half_width is None:
            for name, flag, given in (("max_seeds", "--max-seeds", self.max_seeds is not None),
                                      ("pooled", "--pooled", self.pooled)):
                if given:
                    raise Mtl3dError(f"{name} ({flag}) applies to a sequential study: give half_width "
                                     "(--half-width) too")
            return
        if not self.half_width > 0:
            raise Mtl3dError(f"half_width (--half-width) must be positive, got {self.half_width}")
        if self.seeds < 2:
            raise Mtl3dError("a sequential study starts from 2 or more seeds (an interval needs two; 3 is usual)")
        if self.max_seeds is None or self.max_seeds < self.seeds:
            raise Mtl3dError(f"a sequential study needs max_seeds (--max-seeds) of at least seeds ({self.seeds}), got "
                             f"{self.max_seeds}")

    @property
    def resolution(self) -> float:
        """The paired Delta_m half-width the study plans seeds for."""
        return self.half_width if self.half_width is not None else RESOLUTION

    def config(self, variant: Variant, seed: int) -> Config:
        values = {"train.seed": seed, "data.root": self.data, "train.steps": self.steps}
        return load_config(self.preset, [*self.overrides, *variant.overrides],
                           {k: v for k, v in values.items() if v is not None})


def load_spec(path: Path) -> StudySpec:
    """A study YAML file: preset, seeds, variants (list), and optionally data, eval_data, overrides, steps."""
    if not path.is_file():
        raise Mtl3dError(f"study file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise Mtl3dError(f"cannot read study file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise Mtl3dError(f"study file {path} must be a YAML mapping with preset, seeds and variants")
    try:
        return StudySpec(**data)
    except (TypeError, Mtl3dError) as exc:
        raise Mtl3dError(f"study file {path}: {exc}") from None


# --- running --------------------------------------------------------------------------------------------------------
def run_dir(out: Path, variant: Variant, seed: int) -> Path:
    return out / "runs" / variant.name.replace(":", "_").replace("=", "") / f"seed{seed}"


def _datasets(spec: StudySpec, config: Config) -> list[str]:
    return [config.data.root, *spec.eval_data]


def dataset_names(spec: StudySpec) -> list[str]:
    """The metric-key prefix of each of `_datasets`: "" for the study's own data, the folder name of an eval_data
    set (its keys read "<name>:<task>/<metric>")."""
    return ["", *(Path(data).name for data in spec.eval_data)]


def _scored(report: Path, steps: int) -> bool:
    """Whether `report` holds an evaluation of the run's last weights (after `steps` steps)."""
    return report.is_file() and fileio.read_json(report).get("step") == steps


def run_finished(spec: StudySpec, variant: Variant, seed: int, run: Path) -> bool:
    config = spec.config(variant, seed)
    return all(_scored(run_report_path(run, data), config.train.steps) for data in _datasets(spec, config))


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
    for data in _datasets(spec, config):
        report = run_report_path(run, data)
        if not _scored(report, config.train.steps):
            run_evaluation(run / "weights" / "last.safetensors", data=Path(data), out=report,
                           device=device or "auto", console=Console(file=io.StringIO()))


def run_study(spec: StudySpec, out: Path, console: Console, jobs: int = 1) -> dict[str, Any]:
    """Run every missing (variant, seed) of the grid, `jobs` at a time (`run_parallel`), then write results.csv, the
    summaries and the plots. A sequential study (`spec.half_width`) repeats this with more seeds until
    `stats.next_seed_count` says its intervals are narrow enough or max_seeds is reached."""
    grid = study_grid(spec.variants)
    _check_study_file(out, spec)
    check_existing_runs(spec, grid, out)
    fileio.write_text(out / "study.yaml", yaml.safe_dump(asdict(spec), sort_keys=False))  # the latest request
    columns = (TextColumn("[bold]study"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta {task.fields[eta]}"), TextColumn("{task.description}"))
    seeds = spec.seeds
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task("", total=0, eta="-")
        while True:
            _run_seeds(spec, out, grid, seeds, jobs, console, progress, task)
            if spec.half_width is None:
                break
            widths = _delta_m_intervals(summary_rows(spec, grid, out, seeds)[0], grid, seeds, spec.pooled)
            wanted = next_seed_count(list(widths.values()), spec.half_width, spec.max_seeds) if widths else seeds
            if wanted == seeds:
                break
            worst = max(widths, key=lambda name: math.inf if math.isnan(widths[name].half_width)  # one seed
                        else widths[name].half_width)
            kind = "pooled" if spec.pooled and any(worst in names and len(names) > 1
                                                   for names in _control_groups(grid).values()) else "paired"
            console.print(f"study: {seeds} seeds give {worst} a {kind} Delta_m of +/- {widths[worst].half_width:.2f} "
                          f"points (wanted +/- {spec.half_width:g}): going to {wanted}")
            seeds = wanted
    return write_summary(spec, grid, out, seeds)


def _run_seeds(spec: StudySpec, out: Path, grid: list[Variant], seeds: int, jobs: int, console: Console,
               progress: Progress, task: TaskID) -> None:
    """Train and score the runs of seeds 0..seeds-1 that are not finished, with the study's progress display."""
    runs = [(v, s) for s in range(seeds) for v in grid]  # seed-major: early seeds give every variant a row
    todo = [(v, s) for v, s in runs if not run_finished(spec, v, s, run_dir(out, v, s))]
    progress.update(task, total=len(runs), completed=len(runs) - len(todo))
    durations: list[float] = []
    begun = len(runs) - len(todo)

    def started(variant: Variant, seed: int) -> None:
        nonlocal begun
        begun += 1
        progress.update(task, description=f"{variant.name} seed {seed}")
        if not console.is_terminal:
            console.print(f"study: run {begun}/{len(runs)}: {variant.name} seed {seed}")

    def finished(seconds: float) -> None:
        durations.append(seconds)
        eta = sum(durations) / len(durations) * (len(todo) - len(durations)) / min(jobs, len(todo))
        progress.update(task, advance=1, eta=time.strftime("%H:%M:%S", time.gmtime(eta)))

    try:
        if jobs > 1 and len(todo) > 1:
            run_parallel(spec, out, todo, jobs, started, finished)
        else:
            for variant, seed in todo:
                started(variant, seed)
                finished(_timed_run(spec, variant, seed, run_dir(out, variant, seed)))
    except Interrupted as exc:
        raise Mtl3dError(f"study interrupted ({exc.args[0].split(';')[0]}); finished runs and checkpoints are "
                         f"kept: rerun the same command to finish the grid") from None


def run_parallel(spec: StudySpec, out: Path, todo: list[tuple[Variant, int]], jobs: int, started, finished) -> None:
    """Run `todo` in `jobs` worker processes (spawned, so no CUDA or OpenMP state is forked). Each worker gets an
    equal share of the CPU threads and, where several GPUs are visible, its own GPU. A run's numbers depend on the
    threads it trained with, so a parallel study reproduces a sequential one only at equal threads per run. A
    failed run stops the study (the others finish their current run first); Ctrl-C reaches every worker, whose
    runs save a checkpoint, and a rerun finishes the grid."""
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for slot in range(jobs):
        slots.put(slot)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init, initargs=(slots, threads)) as pool:
        futures = [pool.submit(_timed_run, spec, variant, seed, run_dir(out, variant, seed)) for variant, seed in todo]
        for variant, seed in todo[:jobs]:  # the pool takes runs in order: the first `jobs` start now
            started(variant, seed)
        try:
            for count, future in enumerate(as_completed(futures)):
                finished(future.result())
                if count + jobs < len(todo):
                    started(*todo[count + jobs])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


_WORKER_DEVICE: str | None = None  # set once per worker process by _worker_init


def _worker_init(slots, threads: int) -> None:
    """A study worker: `threads` CPU threads; with several GPUs, the GPU of its slot. Ctrl-C is left to the runs
    (a training run saves its checkpoint and stops), so an idle worker does not die with a traceback."""
    import torch

    global _WORKER_DEVICE
    remember_interrupts()  # Ctrl-C while idle: no later run starts (it used to be ignored: SIG_IGN)
    torch.set_num_threads(threads)
    slot, gpus = slots.get(), torch.cuda.device_count()
    _WORKER_DEVICE = f"cuda:{slot % gpus}" if gpus > 1 else None


def _timed_run(spec: StudySpec, variant: Variant, seed: int, run: Path) -> float:
    """One run of the grid (on a parallel study's worker, with that worker's device); its wall seconds."""
    start = time.perf_counter()
    train_and_evaluate(spec, variant, seed, run, _WORKER_DEVICE)
    return time.perf_counter() - start


def _check_study_file(out: Path, spec: StudySpec) -> None:
    """An existing study folder must hold runs of the same kind (its study.yaml): seeds, variants, evaluation sets
    and the seed rule may change, what every run is may not."""
    path = out / "study.yaml"
    if path.is_file():
        existing = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        changed = [name for name in RUN_FIELDS if existing.get(name) != getattr(spec, name)]
        if changed:
            raise Mtl3dError(f"{out} holds a study of other runs ({', '.join(changed)} differ from {path}); choose "
                             f"another --out (only seeds, variants, --eval-data and the seed rule may change)")


# --- summarizing ----------------------------------------------------------------------------------------------------
def run_metrics(spec: StudySpec, variant: Variant, seed: int, run: Path) -> dict[str, float]:
    """Every scalar metric of a finished run: "<task>/<metric>" on the study's data, "<dataset>:<task>/<metric>"
    on each eval_data set."""
    config = spec.config(variant, seed)
    metrics: dict[str, float] = {}
    for name, data in zip(dataset_names(spec), _datasets(spec, config)):
        prefix = f"{name}:" if name else ""
        results = fileio.read_json(run_report_path(run, data))["results"]
        metrics.update({f"{prefix}{task}/{name}": float(value) for task, scores in results.items()
                        for name, value in scores.items() if "/" not in name})
    return metrics


def primary_keys(metrics: dict[str, float]) -> list[str]:
    """The primary metric of every task present, then the multi-view agreement (%) of every task
    ("consistency/<task>"), for every dataset prefix, in first-seen order."""
    keys = []
    for key in metrics:
        group, _, name = key.rpartition(":")[2].partition("/")
        if group == CONSISTENCY:
            keys += [key] if name in TASKS else []
        elif name == get_task(group).primary_metric:
            keys.append(key)
    return sorted(keys, key=lambda k: CONSISTENCY in k)


def _direction(key: str) -> bool:
    group = key.rpartition(":")[2].split("/")[0]
    return True if group == CONSISTENCY else get_task(group).higher_is_better


def delta_m_key(dataset: str = "") -> str:
    """The Delta_m column of one dataset: "delta_m" on the study's own data, "<name>:delta_m" on an eval_data set."""
    return f"{dataset}:delta_m" if dataset else "delta_m"


def task_keys(keys: list[str], dataset: str = "") -> list[str]:
    """The primary task metrics among `keys` on one dataset: "" = the study's own data, else an eval_data set
    (keys "<name>:<task>/<metric>"); the consistency columns are left out."""
    return [k for k in keys if k.rpartition(":")[0] == dataset and not k.rpartition(":")[2].startswith(CONSISTENCY)]


def delta_m_vs(run: dict[str, float], control: dict[str, float], keys: list[str], dataset: str = "") -> float:
    """Mean relative improvement (percent) of a run's primary task metrics over its control run's on one dataset
    (`task_keys`). The usual Delta_m; consistency is reported beside it, not inside."""
    tasks = task_keys(keys, dataset)
    return sum(relative_change(run[k], control[k], _direction(k)) for k in tasks) / len(tasks)


def summary_rows(spec: StudySpec, grid: list[Variant], out: Path,
                 seeds: int) -> tuple[dict[tuple[str, int], dict[str, float]], list[str], list[str]]:
    """Every run's metrics with its Delta_m to its control on each dataset, keyed (variant, seed); the primary
    metric keys; the Delta_m keys (the study's own data first)."""
    rows = {(v.name, s): run_metrics(spec, v, s, run_dir(out, v, s)) for v in grid for s in range(seeds)}
    keys = primary_keys({k: 0.0 for metrics in rows.values() for k in metrics})
    for metrics in rows.values():  # a metric some run could not compute (no view pairs) is undefined there
        metrics.update({k: math.nan for k in keys if k not in metrics})
    datasets = dataset_names(spec)
    controls = {v.name: v.control for v in grid}  # from the grid: a NAME:KEY=VALUE variant's name alone is no spec
    for (name, seed), metrics in rows.items():
        control = rows[(controls[name], seed)]
        metrics.update({delta_m_key(d): delta_m_vs(metrics, control, keys, d) for d in datasets})
    return rows, keys, [delta_m_key(dataset) for dataset in datasets]


def _delta_m_intervals(rows: dict[tuple[str, int], dict[str, float]], grid: list[Variant], seeds: int,
                       pooled: bool = False) -> dict[str, Interval]:
    """Each compared variant's paired Delta_m interval on the study's own data (what a sequential study narrows);
    with `pooled`, the interval pooled over the variants of its control where it has one (`_pooled_groups`)."""
    own = {v.name: t_interval([rows[(v.name, s)][delta_m_key()] for s in range(seeds)]) for v in grid
           if v.name != v.control}
    if pooled:
        for group in _pooled_groups(rows, grid, seeds, delta_m_key()):
            own.update(group.intervals)
    return own


def write_summary(spec: StudySpec, grid: list[Variant], out: Path, seeds: int | None = None) -> dict[str, Any]:
    """results.csv, summary.json, summary.md and the plots of seeds 0..seeds-1 (default spec.seeds)."""
    seeds = spec.seeds if seeds is None else seeds
    rows, keys, deltas = summary_rows(spec, grid, out, seeds)
    resolution = spec.resolution
    summary: dict[str, Any] = {"preset": spec.preset, "seeds": seeds, "interval": "95% Student-t over seeds",
                               "paired": "differences to the control at the same seed",
                               "pooled": "paired Delta_m intervals with the run-to-run noise pooled over the variants "
                                         "of one control, assuming every run's noise is the same (a randomized "
                                         "block design; stats.pooled_paired)",
                               "seeds_needed": f"seeds for a paired Delta_m interval of +/- {resolution:g} point at "
                                               "the sd measured here (stats.seeds_for_half_width)", "variants": {}}
    if spec.half_width is not None:
        widths = _delta_m_intervals(rows, grid, seeds, spec.pooled)
        summary["sequential"] = {
            "rule": "seeds added until every paired Delta_m interval on the study's data (with pooled, the pooled "
                    "one where a variant has it) is within +/- half_width or max_seeds is reached "
                    "(stats.next_seed_count)",
            "start": spec.seeds, "half_width": spec.half_width, "max_seeds": spec.max_seeds, "pooled": spec.pooled,
            "met": all_within(list(widths.values()), spec.half_width)}
    split = seeds >= 3 and len(deltas) > 1  # stats.split_spread needs 3 seeds and a second evaluation set
    if split:
        summary["spread_split"] = ("the seed spread of the paired Delta_m on the study's data and on an eval_data "
                                   "set, split into the part both share and the part each adds "
                                   "(stats.split_spread); seeds_needed at the shared sd alone")
    pooled = _pooled_delta_m(rows, grid, seeds, deltas)
    for variant in grid:
        values = {k: [rows[(variant.name, s)][k] for s in range(seeds)] for k in [*keys, *deltas]}
        control = variant.control
        entry: dict[str, Any] = {"control": control, "metrics": {k: t_interval(v).to_json() for k, v in values.items()}}
        if variant.name != control:
            entry["paired"] = {k: paired(dict(enumerate(values[k])),
                                         {s: rows[(control, s)][k] for s in range(seeds)}).to_json()
                               for k in keys}
            entry["paired"].update({k: t_interval(values[k]).to_json() for k in deltas})
            if variant.name in pooled:
                entry["pooled"] = pooled[variant.name]
            entry["seeds_needed"] = {k: seeds_for_half_width(entry["paired"][k]["sd"], resolution) for k in deltas}
            if split:
                entry["spread_split"] = {k: _spread_split(values[deltas[0]], values[k], resolution)
                                         for k in deltas[1:]}
        summary["variants"][variant.name] = entry
    summary["environments"] = _environments(out, grid, seeds)
    summary = _json_safe(summary)
    _write_results_csv(out, rows)
    fileio.write_json(out / "summary.json", summary)
    fileio.write_text(out / "summary.md", summary_markdown(summary, keys, deltas, resolution))
    plot_study(out, summary, keys, deltas, grid, seeds)
    return summary


def _pooled_delta_m(rows: dict[tuple[str, int], dict[str, float]], grid: list[Variant], seeds: int,
                    deltas: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """variant -> Delta_m key -> its pooled interval (with `dof`, `run_sd` and `control_sd`) among the variants of
    its control (`stats.pooled_paired`); variants alone with their control have none."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key in deltas:
        for group in _pooled_groups(rows, grid, seeds, key):
            for name, interval in group.intervals.items():
                out.setdefault(name, {})[key] = {**interval.to_json(), "dof": group.dof, "run_sd": group.run_sd,
                                                 "control_sd": group.control_sd}
    return out


def _pooled_groups(rows: dict[tuple[str, int], dict[str, float]], grid: list[Variant], seeds: int,
                   key: str) -> list[PooledIntervals]:
    """`stats.pooled_paired` of `key` for each control with 2 or more variants."""
    groups = (pooled_paired({name: [rows[(name, s)][key] for s in range(seeds)] for name in names})
              for names in _control_groups(grid).values())
    return [group for group in groups if group is not None]


def _control_groups(grid: list[Variant]) -> dict[str, list[str]]:
    """control -> the variants compared with it, in grid order."""
    groups: dict[str, list[str]] = {}
    for variant in grid:
        if variant.name != variant.control:
            groups.setdefault(variant.control, []).append(variant.name)
    return groups


def _spread_split(own: list[float], other: list[float], resolution: float) -> dict[str, Any]:
    split = split_spread(own, other)
    return {**split.to_json(), "seeds_needed": seeds_for_half_width(split.shared_sd, resolution)}


def _environments(out: Path, grid: list[Variant], seeds: int) -> list[dict[str, Any]]:
    """The distinct environments the study's runs trained in, each with its number of runs: equal numbers on a
    rerun need the same one (`mtl3dcli.environment`)."""
    per_run = [env for variant in grid for seed in range(seeds)
               for env in training_environments(run_dir(out, variant, seed))]
    distinct = [env for i, env in enumerate(per_run) if env not in per_run[:i]]
    return [{"environment": env, "runs": per_run.count(env)} for env in distinct]


def _json_safe(value: Any) -> Any:
    """NaN (a metric undefined for every run) becomes null, which JSON can hold."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def _write_results_csv(out: Path, rows: dict[tuple[str, int], dict[str, float]]) -> None:
    fields = ["variant", "seed", *dict.fromkeys(k for metrics in rows.values() for k in metrics)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for (name, seed), metrics in rows.items():
        writer.writerow({"variant": name, "seed": seed, **{k: f"{v:.6g}" for k, v in metrics.items()}})
    fileio.write_text(out / "results.csv", buffer.getvalue())


def _cell(interval: dict[str, float], digits: int = 3) -> str:
    if interval["mean"] is None:
        return "-"
    if interval["n"] < 2 or interval["low"] is None:
        return f"{interval['mean']:.{digits}g}"
    return f"{interval['mean']:.{digits}g} [{interval['low']:.{digits}g}, {interval['high']:.{digits}g}]"


def paired_cell(interval: dict[str, float]) -> str:
    """A paired difference as summary.md shows it: mean [low, high], and " *" where the interval excludes 0."""
    resolved = interval["low"] is not None and (interval["low"] > 0 or interval["high"] < 0)
    return _cell(interval) + (" *" if resolved else "")


def _delta_title(key: str) -> str:
    dataset = key.rpartition(":")[0]
    return "Delta_m vs control (%)" + (f" on {dataset}" if dataset else "")


def summary_markdown(summary: dict[str, Any], keys: list[str], deltas: list[str],
                     resolution: float = RESOLUTION) -> str:
    """Two tables: per variant the mean [95% interval] of every primary metric and Delta_m (per dataset); per
    variant the paired difference to its control, with a mark where the interval excludes 0. `resolution`: the
    paired Delta_m half-width the seed planning lines aim at."""
    arrows = {k: "↑" if _direction(k) else "↓" for k in keys}
    head = ["variant", *[f"{k} {arrows[k]}" for k in keys], *map(_delta_title, deltas)]
    trained = "; ".join(f"{summarize(e['environment'])} ({e['runs']} runs)"
                        for e in summary["environments"])
    lines = [f"Seeds: {summary['seeds']}{_sequential_note(summary)}; cells: mean [{summary['interval']}]."
             + (f" Trained on {trained}." if trained else ""), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in summary["variants"].items():
        metrics = entry["metrics"]
        lines.append("| " + " | ".join([name, *[_cell(metrics[k], 4) for k in keys],
                                        *[_cell(metrics[k]) for k in deltas]]) + " |")
    pooled = [k for k in deltas if any(k in e.get("pooled", {}) for e in summary["variants"].values())]
    columns = [*keys, *[k.replace("delta_m", "Delta_m (%)") for k in deltas],
               *[k.replace("delta_m", "Delta_m pooled (%)") for k in pooled]]
    lines += ["", f"Paired differences to the control ({summary['paired']}); * = the interval excludes 0.", "",
              "| variant | control | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 2)]
    for name, entry in summary["variants"].items():
        if "paired" not in entry:
            continue
        cells = [paired_cell(entry["paired"][key]) for key in [*keys, *deltas]]
        cells += [paired_cell(entry["pooled"][key]) if key in entry.get("pooled", {}) else "-" for key in pooled]
        lines.append(f"| {name} | {entry['control']} | " + " | ".join(cells) + " |")
    return "\n".join(lines + _pooled_lines(summary, pooled) + _seeds_needed_lines(summary, deltas, resolution)
                     + _spread_lines(summary, deltas, resolution)) + "\n"


def _pooled_lines(summary: dict[str, Any], pooled: list[str]) -> list[str]:
    """What the pooled columns are: per control its degrees of freedom and the check of the assumption (one run's
    noise sd from the variants against the control's own, on the study's data)."""
    if not pooled:
        return []
    groups = {entry["control"]: entry["pooled"][pooled[0]] for entry in summary["variants"].values()
              if pooled[0] in entry.get("pooled", {})}
    return ["", f"Delta_m pooled: {summary['pooled']}: "
                + "; ".join(f"{g['dof']} degrees of freedom among the variants of {control}, whose runs' noise sd "
                            f"is {_number(g['run_sd'], '.2f')} against {_number(g['control_sd'], '.2f')} for "
                            f"{control}'s own" for control, g in groups.items())
                + " (a variant alone with its control has no pooled interval: -)."]


def _sequential_note(summary: dict[str, Any]) -> str:
    """How a sequential study arrived at its seeds, e.g. " (from 3, until every paired Delta_m interval is within
    +/- 1 point or 8 seeds: met)"."""
    rule = summary.get("sequential")
    if rule is None:
        return ""
    which = "paired Delta_m interval (pooled where a variant has one)" if rule.get("pooled") else \
        "paired Delta_m interval"
    return (f" (from {rule['start']}, until every {which} is within +/- {rule['half_width']:g} point "
            f"or {rule['max_seeds']} seeds: {'met' if rule['met'] else 'not met'})")


def _seeds_needed_lines(summary: dict[str, Any], deltas: list[str], resolution: float) -> list[str]:
    """One line per Delta_m: how many seeds each variant's paired interval would need to be +/- resolution wide."""
    lines = []
    for key in deltas:
        needed = [f"{name} {entry['seeds_needed'][key] or '-'}"
                  for name, entry in summary["variants"].items() if "seeds_needed" in entry]
        if needed:
            where = f" on {key.rpartition(':')[0]}" if ":" in key else ""
            lines += ["", f"Seeds needed for a +/- {resolution:g} point paired Delta_m interval{where} at the spread "
                          f"measured here (a planning figure: the sd of {summary['seeds']} seeds is itself uncertain): "
                          + ", ".join(needed) + "."]
    return lines


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else f"{value:{spec}}"  # None: undefined (NaN in the JSON summary)


def _spread_lines(summary: dict[str, Any], deltas: list[str], resolution: float) -> list[str]:
    """One line per eval_data set: each variant's paired Delta_m spread split between the study's data and it."""
    lines = []
    for key in deltas[1:]:
        parts = []
        for name, entry in summary["variants"].items():
            if key in entry.get("spread_split", {}):
                s = entry["spread_split"][key]
                parts.append(f"{name} {_number(s['shared_sd'], '.2g')} and {_number(s['own_sd'], '.2g')} "
                             f"(r = {_number(s['correlation'], '.2f')}; {s['seeds_needed'] or '-'} seeds)")
        if parts:
            dataset = key.rpartition(":")[0]
            lines += ["", f"Spread of the paired Delta_m over seeds on the study's data and on {dataset}, as the sd "
                          "both sets share (the trained weights' own, when the sets are independent draws of one "
                          "distribution) and the sd each set adds (its sample of scenes), with the seeds a "
                          f"+/- {resolution:g} point interval would need at the shared sd alone: "
                          + ", ".join(parts) + "."]
    return lines


def plot_study(out: Path, summary: dict[str, Any], keys: list[str], deltas: list[str], grid: list[Variant],
               seeds: int) -> None:
    """plots/metrics.png (means and intervals per variant) and plots/curves.png (validation curves of every run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["variants"])
    panels = [*keys, *deltas]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    for axis, key in zip(axes[0], panels):
        stats = [summary["variants"][n]["metrics"][key] for n in names]
        means = [math.nan if s["mean"] is None else s["mean"] for s in stats]
        errors = [0.0 if s["n"] < 2 or s["high"] is None else s["high"] - s["mean"] for s in stats]
        axis.bar(range(len(names)), means, yerr=errors, capsize=3, color="#7aa6c2")
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        axis.set_title(_delta_title(key) if key in deltas else key, fontsize=8)
        ends = [(m - e, m + e) for m, e in zip(means, errors) if math.isfinite(m + e)]
        if ends:  # a metric can be undefined (NaN) for every run, e.g. consistency on a split without view pairs
            low, high = min(e[0] for e in ends), max(e[1] for e in ends)
            axis.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
    figure.tight_layout()
    _save(figure, out / "plots" / "metrics.png")
    own = task_keys(keys)
    figure, axes = plt.subplots(1, len(own), figsize=(3.4 * len(own), 3.0), squeeze=False)
    colours = plt.get_cmap("tab10")
    for index, variant in enumerate(grid):
        for seed in range(seeds):
            path = run_dir(out, variant, seed) / "results.csv"
            rows = list(csv.DictReader(open(path, encoding="utf-8"))) if path.is_file() else []
            for axis, key in zip(axes[0], own):
                points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
                if points:
                    axis.plot(*zip(*points), color=colours(index % 10), alpha=0.7,
                              label=variant.name if seed == 0 else None)
    for axis, key in zip(axes[0], own):
        axis.set_title(f"validation {key}", fontsize=8)
        axis.set_xlabel("step", fontsize=7)
    if axes[0][0].get_legend_handles_labels()[0]:  # runs without validation curves (scored reports only) have none
        axes[0][0].legend(fontsize=6)
    figure.tight_layout()
    _save(figure, out / "plots" / "curves.png")


def _save(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    with fileio.atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
