"""A study's files: results.csv, summary.json, summary.md (its tables and notes) and the plots."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from mtl3dcli import fileio
from mtl3dcli.commands.study.spec import RESOLUTION, StudySpec, Variant, run_dir
from mtl3dcli.commands.study.summary import higher_is_better, study_summary, task_keys
from mtl3dcli.environment import summarize


def write_summary(spec: StudySpec, grid: list[Variant], out: Path, seeds: int | None = None) -> dict[str, Any]:
    """results.csv, summary.json, summary.md and the plots of seeds 0..seeds-1 (default spec.seeds)."""
    seeds = spec.seeds if seeds is None else seeds
    summary, rows, keys, deltas = study_summary(spec, grid, out, seeds)
    _write_results_csv(out, rows)
    fileio.write_json(out / "summary.json", summary)
    fileio.write_text(out / "summary.md", summary_markdown(summary, keys, deltas, spec.resolution))
    plot_study(out, summary, keys, deltas, grid, seeds)
    return summary


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
    arrows = {k: "↑" if higher_is_better(k) else "↓" for k in keys}
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
