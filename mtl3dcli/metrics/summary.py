"""Multi-task summaries: Delta_m, the relative gain over single-task references."""

from __future__ import annotations

from collections.abc import Mapping

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.stats import relative_change


def delta_m(results: Mapping[str, Mapping[str, float]], references: Mapping[str, Mapping[str, float]],
            primary: Mapping[str, tuple[str, bool]]) -> float:
    """Multi-task gain in percent: mean over tasks of s * (M_mt - M_st) / M_st * 100 on each task's primary metric,
    s = +1 if higher is better else -1 (Maninis et al. 2019; Vandenhende et al. 2021).

    results / references: {task name: {metric: value}} of the multi-task model and the single-task baselines;
    primary: {task name: (primary metric, higher_is_better)} for the tasks that count.
    Example: mIoU 44 vs 40 (+10%) and rmse 0.55 vs 0.5 (-10%) -> Delta_m = 0."""
    terms = []
    for name, (key, higher) in primary.items():
        if key not in results.get(name, {}):
            raise Mtl3dError(f"Delta_m: no {key!r} result for task {name}")
        if key not in references.get(name, {}):
            raise Mtl3dError(f"Delta_m: no single-task reference {key!r} for task {name}")
        reference = float(references[name][key])
        if reference == 0:
            raise Mtl3dError(f"Delta_m: the single-task reference {key!r} of task {name} is 0")
        terms.append(relative_change(float(results[name][key]), reference, higher))
    if not terms:
        raise Mtl3dError("Delta_m needs at least one task")
    return sum(terms) / len(terms)
