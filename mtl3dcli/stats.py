"""Statistics over seeds: means with Student-t intervals, and paired differences between variants.

Runs of one study that share a seed share the data order, the augmentation draws and the initial weights of the
network (the regularizer's parameters are created after it), so the difference between two variants at the same
seed cancels most of the run-to-run noise. `paired` therefore compares seed by seed and puts the interval on the
mean difference: a t-interval over seeds, mean +/- t_{0.975, n-1} * sd / sqrt(n) (the usual choice for a handful of
seeds; a bootstrap over 3 seeds would be far too narrow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mtl3dcli.errors import Mtl3dError


@dataclass(frozen=True)
class Interval:
    """mean, sample standard deviation (n - 1) and the 95% t-interval [low, high] of n values; sd and the interval
    are NaN for a single value."""

    mean: float
    sd: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (the difference is resolved at the 95% level)."""
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def to_json(self) -> dict[str, float | int]:
        return {"mean": self.mean, "sd": self.sd, "low": self.low, "high": self.high, "n": self.n}


def t_quantile(confidence: float, dof: int) -> float:
    """The two-sided Student-t critical value, e.g. t(0.95, 2) = 4.3027."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, dof))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and t-interval of `values`. Example: [1, 2, 3] -> mean 2, sd 1, 2 +/- 4.3027 / sqrt(3)."""
    n = len(values)
    if n == 0:
        raise Mtl3dError("an interval needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, math.nan, math.nan, math.nan, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return Interval(mean, sd, mean - half, mean + half, n)


def paired(treatment: Mapping[int, float], control: Mapping[int, float], confidence: float = 0.95) -> Interval:
    """Interval of the mean of treatment[seed] - control[seed] over the seeds both have."""
    seeds = sorted(set(treatment) & set(control))
    if not seeds:
        raise Mtl3dError("a paired difference needs runs of both variants with the same seed")
    return t_interval([treatment[s] - control[s] for s in seeds], confidence)


@dataclass(frozen=True)
class PooledIntervals:
    """Paired intervals of several variants against one control, their noise pooled (`pooled_paired`): per variant
    the mean difference and its interval (sd = the pooled sd of one seed's difference, n = seeds), the degrees
    of freedom of the pooled estimate, and the assumption's check: `run_sd`, the noise sd of one run that the
    intervals use (from the variants' runs), against `control_sd`, the control runs' own, estimated apart from it
    as the mean covariance over seeds of two variants' differences (their only common noise is the control's)."""

    intervals: dict[str, Interval]
    dof: int
    run_sd: float
    control_sd: float


def pooled_paired(differences: Mapping[str, Sequence[float]], confidence: float = 0.95) -> PooledIntervals | None:
    """Paired intervals of variants that share one control, with the run-to-run noise estimated from all of them.

    differences: per variant, its difference to the control at seeds 0..n-1 (the same seeds for all). The model is
    that of a randomized block design with seeds as blocks: every run of seed s (the control's too) is its variant's
    mean plus the same noise sd sigma, so d[v][s] = delta_v + e[v][s] - e[control][s]. The control's noise is common
    to a seed's differences, so the residuals after removing variant and seed means estimate sigma^2 from every
    variant at once, with (V - 1)(n - 1) degrees of freedom instead of n - 1 per variant, and each mean difference
    gets mean +/- t_dof sqrt(2 sigma^2 / n). Under that assumption these intervals are much narrower on average at
    3 seeds; where the variants' or the control's noise differ they under- or over-cover
    (`benchmarks/pooled_coverage.py`), which `paired` does not. None for fewer than 2 variants or 2 seeds.
    Example: {a: [1, 2, 3], b: [2, 2, 5]}: residuals (0, 0.5, -0.5) and (0, -0.5, 0.5), sigma^2 = 1 / 2 on 2
    degrees of freedom, a = 2 +/- 4.3027 sqrt(1 / 3), b = 3 +/- the same; cov(a, b) = 1.5, so the control's
    noise sd is sqrt(1.5) = 1.22 against the variants' 0.71 (3 seeds cannot tell them apart).
    """
    names = list(differences)
    if len(names) < 2:
        return None
    n = len(differences[names[0]])
    if n < 2 or any(len(differences[v]) != n for v in names):
        return None
    rows = {v: sum(differences[v]) / n for v in names}
    columns = [sum(differences[v][s] for v in names) / len(names) for s in range(n)]
    grand = sum(rows.values()) / len(names)
    dof = (len(names) - 1) * (n - 1)
    residual = sum((differences[v][s] - rows[v] - columns[s] + grand) ** 2 for v in names for s in range(n))
    sd = math.sqrt(2 * residual / dof)  # of one seed's difference: both runs' noise
    half = t_quantile(confidence, dof) * sd / math.sqrt(n)
    covariances = [sum((differences[v][s] - rows[v]) * (differences[w][s] - rows[w]) for s in range(n)) / (n - 1)
                   for i, v in enumerate(names) for w in names[i + 1:]]
    control_sd = math.sqrt(max(sum(covariances) / len(covariances), 0.0))
    return PooledIntervals({v: Interval(rows[v], sd, rows[v] - half, rows[v] + half, n) for v in names}, dof,
                           sd / math.sqrt(2), control_sd)


def seeds_for_half_width(sd: float, half_width: float, confidence: float = 0.95, limit: int = 1000) -> int | None:
    """The fewest seeds whose t-interval of a mean is at most +/- `half_width` when the values spread by `sd`: the
    smallest n >= 2 with t_{confidence, n-1} sd / sqrt(n) <= half_width; None for an undefined sd or beyond `limit`.
    A planning figure: it takes a measured sd for the true one, and the sd of 3 seeds is itself uncertain by about
    a factor of two either way. Example: sd 1.14, half width 1 -> 8 (t(7) = 2.365, 2.365 * 1.14 / sqrt(8) = 0.95)."""
    if sd is None or math.isnan(sd):
        return None
    return next((n for n in range(2, limit + 1) if t_quantile(confidence, n - 1) * sd / math.sqrt(n) <= half_width),
                None)


def next_seed_count(intervals: Sequence[Interval], half_width: float, max_seeds: int) -> int:
    """How many seeds a sequential study should have after measuring `intervals` (each over the same n seeds): n when
    every interval is at most +/- `half_width` or n has reached `max_seeds`, else n + 1 (an interval of a single
    seed, or of an undefined metric, counts as too wide). Applied after every seed, this is the fixed-width rule of
    Chow and Robbins (1965). Stopping when the measured sd happens to be small costs some coverage: simulating
    normal seed noise from 3 seeds to at most 10 at +/- 1 (`benchmarks/sequential_coverage.py`), the final 95%
    t-interval covered the true mean in 94.9%, 94.1%, 92.5% and 90.7% of studies for a noise sd of 0.4, 0.7, 1.0
    and 1.5, with 3.4, 4.5, 6.0 and 8.3 seeds on average. Jumping straight to the seeds a first sd plans for
    (`seeds_for_half_width`) covered no better and trained more seeds (5.0 at sd 0.7)."""
    n = intervals[0].n
    return n if n >= max_seeds or all_within(intervals, half_width) else n + 1


def all_within(intervals: Sequence[Interval], half_width: float) -> bool:
    """Whether every interval is at most +/- `half_width` (one of a single seed, NaN wide, is not)."""
    return all(i.half_width <= half_width for i in intervals)


@dataclass(frozen=True)
class SpreadSplit:
    """The seed-to-seed spread of one quantity measured on two evaluation sets, split into the part both sets see
    and the part each adds: with sets drawn independently from one distribution, `shared_sd` is the spread of the
    trained weights themselves (training noise) and `own_sd` that of a set's sample of scenes (evaluation noise)."""

    shared_sd: float  # sqrt(max(cov(a, b), 0))
    own_sd: float  # sqrt(var(a - b) / 2)
    correlation: float  # Pearson r of a and b over seeds
    n: int

    def to_json(self) -> dict[str, float | int]:
        return {"shared_sd": self.shared_sd, "own_sd": self.own_sd, "correlation": self.correlation, "n": self.n}


def split_spread(a: Sequence[float], b: Sequence[float]) -> SpreadSplit:
    """Split the spread of per-seed values `a` (one evaluation set) and `b` (another, same seeds in the same order).
    var(a) = shared + own_a and cov(a, b) = shared, so the mean variance (var(a) + var(b)) / 2 is cov(a, b) +
    var(a - b) / 2. Example: a = [1, 2, 3], b = [1, 3, 2] -> cov 0.5, var(a - b) = 1: shared and own sd both
    sqrt(0.5), r = 0.5. A negative sample covariance (sampling noise with few seeds) reads as no shared spread."""
    n = len(a)
    if n != len(b) or n < 3:
        raise Mtl3dError(f"splitting a spread needs the same 3 or more seeds on both sets, got {len(a)} and {len(b)}")
    var_a, var_b, var_d = (t_interval(values).sd ** 2 for values in (a, b, [x - y for x, y in zip(a, b)]))
    cov = (var_a + var_b - var_d) / 2  # var(a - b) = var(a) + var(b) - 2 cov(a, b)
    correlation = cov / math.sqrt(var_a * var_b) if var_a > 0 and var_b > 0 else math.nan
    return SpreadSplit(math.sqrt(max(cov, 0.0)), math.sqrt(var_d / 2), correlation, n)


def relative_change(value: float, reference: float, higher_is_better: bool) -> float:
    """Improvement of `value` over `reference` in percent, positive when better (the Delta_m convention)."""
    sign = 1.0 if higher_is_better else -1.0
    return sign * (value - reference) / reference * 100.0
