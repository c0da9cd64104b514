"""A study's numbers: every run's metrics and Delta_m to its control, intervals over seeds, paired and pooled
differences, the seeds a planned interval would need, the split of the spread between evaluation sets."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mtl3dcli import fileio
from mtl3dcli.commands.study.spec import StudySpec, Variant, dataset_names, run_datasets, run_dir
from mtl3dcli.environment import training_environments
from mtl3dcli.metrics.consistency import GROUP as CONSISTENCY
from mtl3dcli.metrics.summary import delta_m
from mtl3dcli.reports import run_report_path
from mtl3dcli.stats import (Interval, PooledIntervals, all_within, paired, pooled_paired, seeds_for_half_width,
                            split_spread, t_interval)
from mtl3dcli.tasks import TASKS, get_task


def run_metrics(spec: StudySpec, variant: Variant, seed: int, run: Path) -> dict[str, float]:
    """Every scalar metric of a finished run: "<task>/<metric>" on the study's data, "<dataset>:<task>/<metric>"
    on each eval_data set."""
    config = spec.config(variant, seed)
    metrics: dict[str, float] = {}
    for name, data in zip(dataset_names(spec), run_datasets(spec, config)):
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


def higher_is_better(key: str) -> bool:
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
    (`task_keys`): `metrics.summary.delta_m` with the control run as the reference. Consistency is reported beside
    it, not inside."""
    primary = {key: key.rpartition(":")[2].partition("/") for key in task_keys(keys, dataset)}
    return delta_m({task: {name: run[key]} for key, (task, _, name) in primary.items()},
                   {task: {name: control[key]} for key, (task, _, name) in primary.items()},
                   {task: (name, higher_is_better(key)) for key, (task, _, name) in primary.items()})


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


def delta_m_intervals(rows: dict[tuple[str, int], dict[str, float]], grid: list[Variant], seeds: int,
                       pooled: bool = False) -> dict[str, Interval]:
    """Each compared variant's paired Delta_m interval on the study's own data (what a sequential study narrows);
    with `pooled`, the interval pooled over the variants of its control where it has one (`_pooled_groups`)."""
    own = {v.name: t_interval([rows[(v.name, s)][delta_m_key()] for s in range(seeds)]) for v in grid
           if v.name != v.control}
    if pooled:
        for group in _pooled_groups(rows, grid, seeds, delta_m_key()):
            own.update(group.intervals)
    return own


def study_summary(spec: StudySpec, grid: list[Variant], out: Path,
                  seeds: int) -> tuple[dict[str, Any], dict[tuple[str, int], dict[str, float]], list[str], list[str]]:
    """The summary of seeds 0..seeds-1 (what summary.json holds; NaN written as None), with `summary_rows`'s rows,
    primary metric keys and Delta_m keys."""
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
        widths = delta_m_intervals(rows, grid, seeds, spec.pooled)
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
    return _json_safe(summary), rows, keys, deltas


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
              for names in control_groups(grid).values())
    return [group for group in groups if group is not None]


def control_groups(grid: list[Variant]) -> dict[str, list[str]]:
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
