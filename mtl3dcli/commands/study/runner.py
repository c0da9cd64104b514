"""Running a study: train and score every missing run of the grid, in this process or in worker processes, and
grow a sequential study's seeds until its Delta_m intervals are narrow enough."""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from mtl3dcli import fileio
from mtl3dcli.commands.study.cluster import check_launcher, submit_runs
from mtl3dcli.commands.study.report import write_summary
from mtl3dcli.commands.study.runs import check_existing_runs, run_finished, train_and_evaluate
from mtl3dcli.commands.study.spec import RUN_FIELDS, StudySpec, Variant, run_dir, study_grid
from mtl3dcli.commands.study.summary import control_groups, delta_m_intervals, summary_rows
from mtl3dcli.errors import Interrupted, Mtl3dError
from mtl3dcli.interrupts import remember_interrupts
from mtl3dcli.stats import next_seed_count


def run_study(spec: StudySpec, out: Path, console: Console, jobs: int = 1) -> dict[str, Any]:
    """Run every missing (variant, seed) of the grid, `jobs` at a time (`run_parallel`) or each as a submitit job
    (`spec.launcher`, `cluster.submit_runs`), then write results.csv, the summaries and the plots. A sequential
    study (`spec.half_width`) repeats this with more seeds until `stats.next_seed_count` says its intervals are
    narrow enough or max_seeds is reached."""
    grid = study_grid(spec.variants)
    if spec.launcher.name == "submitit":
        check_launcher(spec.launcher)
        if jobs > 1:
            raise Mtl3dError("--jobs applies to the local launcher: with --launcher submitit every run is a job")
    for variant in grid:  # every variant's config loads: a bad override or host fails before anything is written
        spec.config(variant, 0)
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
            widths = delta_m_intervals(summary_rows(spec, grid, out, seeds)[0], grid, seeds, spec.pooled)
            wanted = next_seed_count(list(widths.values()), spec.half_width, spec.max_seeds) if widths else seeds
            if wanted == seeds:
                break
            worst = max(widths, key=lambda name: math.inf if math.isnan(widths[name].half_width)  # one seed
                        else widths[name].half_width)
            kind = "pooled" if spec.pooled and any(worst in names and len(names) > 1
                                                   for names in control_groups(grid).values()) else "paired"
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
        at_once = len(todo) if spec.launcher.name == "submitit" else min(jobs, len(todo))
        eta = sum(durations) / len(durations) * (len(todo) - len(durations)) / at_once
        progress.update(task, advance=1, eta=time.strftime("%H:%M:%S", time.gmtime(eta)))

    try:
        if spec.launcher.name == "submitit" and todo:
            submit_runs(spec, out, todo, started, finished)
        elif jobs > 1 and len(todo) > 1:
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

