"""Interval arithmetic against hand-worked numbers; paired differences use matching seeds only."""

from __future__ import annotations

import json
import math
import random

import pytest

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.stats import (next_seed_count, paired, pooled_paired, relative_change, seeds_for_half_width,
                            split_spread, t_interval, t_quantile)


def test_t_quantiles_from_the_table():
    assert t_quantile(0.95, 2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(0.95, 4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(0.95, 10_000) == pytest.approx(1.9600, abs=1e-3)


def test_t_interval_by_hand():
    # mean 2, sd = sqrt(((1-2)^2 + 0 + (3-2)^2) / 2) = 1, half width = 4.3027 * 1 / sqrt(3) = 2.4842
    interval = t_interval([1.0, 2.0, 3.0])
    assert (interval.mean, interval.sd, interval.n) == (2.0, 1.0, 3)
    assert interval.low == pytest.approx(2 - 2.48414, abs=1e-4) and interval.high == pytest.approx(4.48414, abs=1e-4)
    assert not interval.excludes_zero()
    single = t_interval([5.0])
    assert single.mean == 5.0 and math.isnan(single.sd) and math.isnan(single.low) and not single.excludes_zero()
    with pytest.raises(Mtl3dError):
        t_interval([])


def test_paired_differences_match_seeds():
    control = {0: 50.0, 1: 52.0, 2: 48.0}
    treatment = {0: 51.0, 1: 53.5, 2: 48.5, 7: 99.0}  # seed 7 has no control run: ignored
    interval = paired(treatment, control)
    # differences 1.0, 1.5, 0.5 -> mean 1.0, sd 0.5, half width 4.3027 * 0.5 / sqrt(3) = 1.2421
    assert interval.n == 3 and interval.mean == pytest.approx(1.0) and interval.sd == pytest.approx(0.5)
    assert interval.low == pytest.approx(1.0 - 1.24208, abs=1e-4)
    # unpaired, the same numbers would give a far wider interval: the seeds' spread (sd 2) dominates
    assert t_interval(list(treatment.values())[:3]).half_width > 3 * interval.half_width
    with pytest.raises(Mtl3dError, match="same seed"):
        paired({3: 1.0}, control)


def test_relative_change_sign_follows_the_metric_direction():
    assert relative_change(44.0, 40.0, True) == pytest.approx(10.0)
    assert relative_change(0.45, 0.50, False) == pytest.approx(10.0)


def test_seeds_for_a_half_width_by_hand():
    # sd 1.14: n = 7 gives 2.4469 * 1.14 / sqrt(7) = 1.054 > 1, n = 8 gives 2.3646 * 1.14 / sqrt(8) = 0.953 <= 1
    assert seeds_for_half_width(1.14, 1.0) == 8
    # sd 0.23: n = 2 gives 12.706 * 0.23 / sqrt(2) = 2.07, n = 3 gives 4.3027 * 0.23 / sqrt(3) = 0.571
    assert seeds_for_half_width(0.23, 1.0) == 3
    assert seeds_for_half_width(0.0, 1.0) == 2  # no spread: the fewest seeds an interval needs
    assert seeds_for_half_width(math.nan, 1.0) is None and seeds_for_half_width(None, 1.0) is None  # one seed
    assert seeds_for_half_width(100.0, 1.0, limit=50) is None


def test_splitting_a_spread_between_two_evaluation_sets_by_hand():
    # a = [1, 2, 3], b = [1, 3, 2]: var a = var b = 1, cov = ((-1)(-1) + 0 * 1 + 1 * 0) / 2 = 0.5,
    # a - b = [0, -1, 1]: var 1 -> own variance 0.5; shared + own = 1 = the mean variance
    split = split_spread([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert split.shared_sd == pytest.approx(math.sqrt(0.5)) and split.own_sd == pytest.approx(math.sqrt(0.5))
    assert split.correlation == pytest.approx(0.5) and split.n == 3
    # the same values on both sets: all spread is shared; a constant offset between the sets changes nothing
    same = split_spread([1.0, 2.0, 4.0], [3.0, 4.0, 6.0])
    assert same.shared_sd == pytest.approx(t_interval([1.0, 2.0, 4.0]).sd) and same.own_sd == 0.0
    assert same.correlation == pytest.approx(1.0)
    # opposite values: cov -1 reads as no shared spread; a - b = [-2, 0, 2], var 4 -> own variance 2
    opposite = split_spread([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert opposite.shared_sd == 0.0 and opposite.own_sd == pytest.approx(math.sqrt(2.0))
    assert opposite.correlation == pytest.approx(-1.0)
    with pytest.raises(Mtl3dError, match="3 or more seeds"):
        split_spread([1.0, 2.0], [1.0, 2.0])


def test_the_sequential_seed_rule_by_hand():
    # 3 seeds of sd 1.14: +/- 4.3027 * 1.14 / sqrt(3) = 2.83 > 1 -> one more seed, unless at the maximum
    wide = t_interval([0.0, 1.14, 2.28])
    assert next_seed_count([wide], 1.0, 10) == 4 and next_seed_count([wide], 1.0, 3) == 3
    # narrow enough (sd 0.1: +/- 0.25) -> no more seeds; every interval must be narrow
    narrow = t_interval([1.0, 1.1, 0.9])
    assert next_seed_count([narrow], 1.0, 10) == 3 and next_seed_count([narrow, wide], 1.0, 10) == 4
    # 4 seeds: [0, 0.6, -0.6, 0] has sd 0.490, +/- 3.182 * 0.490 / 2 = 0.78 (stop); [0.65, -0.65, 0.65, -0.65] has
    # sd 0.751, +/- 1.19 (one more)
    assert next_seed_count([t_interval([0.0, 0.6, -0.6, 0.0])], 1.0, 10) == 4
    assert next_seed_count([t_interval([0.65, -0.65, 0.65, -0.65])], 1.0, 10) == 5
    assert next_seed_count([t_interval([1.0])], 1.0, 7) == 2  # one seed: no interval yet


def test_the_sequential_rule_keeps_its_coverage_in_simulation():
    """Normal seed noise of sd 0.7 (this benchmark's paired Delta_m spread), mean 0, from 3 seeds to at most 10 at
    +/- 1: the final t-interval covers the true mean in about 94% of 2,000 simulated studies (stopping on a lucky
    small sd costs a point; a rule that stopped on the mean would cost far more), and every study meets the
    width, with 4.5 seeds on average."""
    rng = random.Random(0)
    covered = met = seeds = 0
    for _ in range(2000):
        values = [rng.gauss(0.0, 0.7) for _ in range(3)]
        while next_seed_count([t_interval(values)], 1.0, 10) > len(values):
            values.append(rng.gauss(0.0, 0.7))
        interval = t_interval(values)
        covered += interval.low <= 0.0 <= interval.high
        met += interval.half_width <= 1.0
        seeds += len(values)
    assert 0.92 <= covered / 2000 <= 0.96 and met == 2000 and 4.2 <= seeds / 2000 <= 4.8


@pytest.mark.slow
def test_the_coverage_benchmark_simulates_both_rules(capsys, monkeypatch):
    """benchmarks/sequential_coverage.py (the coverage figures of docs/studies/sequential.md) on a few studies, for all three rules: with
    no seed noise every study stops at its start and covers; with huge noise every study runs to the maximum."""
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "sequential_coverage.py"
    monkeypatch.setattr(sys, "argv", ["sequential_coverage.py", "--studies", "50", "--sd", "0", "100",
                                      "--max-seeds", "5"])
    runpy.run_path(str(script), run_name="__main__")
    results = json.loads(capsys.readouterr().out)["results"]
    for rule in ("one seed at a time", "jump to the planned seeds", "pooled over 3 variants, one seed at a time"):
        assert results[rule]["0.0"] == {"coverage": 1.0, "met": 1.0, "mean_seeds": 3.0}
        assert results[rule]["100.0"]["mean_seeds"] == 5.0 and results[rule]["100.0"]["met"] == 0.0


def test_pooled_paired_intervals_by_hand():
    """{a: [1, 2, 3], b: [2, 2, 5]}: variant means 2 and 3, seed means 1.5, 2, 4, grand mean 2.5; residuals
    (0, 0.5, -0.5) and (0, -0.5, 0.5) sum to 1 on (2 - 1)(3 - 1) = 2 degrees of freedom: sigma^2 = 0.5, one seed's
    difference has sd sqrt(2 * 0.5) = 1, and both intervals are mean +/- t(0.95, 2) * 1 / sqrt(3)."""
    pooled = pooled_paired({"a": [1.0, 2.0, 3.0], "b": [2.0, 2.0, 5.0]})
    half = 4.302653 / math.sqrt(3)
    assert pooled.dof == 2 and pooled.run_sd == pytest.approx(math.sqrt(0.5))
    assert pooled.control_sd == pytest.approx(math.sqrt(1.5))  # cov(a, b) = (1 + 0 + 2) / 2
    for name, mean in (("a", 2.0), ("b", 3.0)):
        interval = pooled.intervals[name]
        assert interval.mean == pytest.approx(mean) and interval.sd == pytest.approx(1.0) and interval.n == 3
        assert interval.half_width == pytest.approx(half, rel=1e-5) and interval.low == pytest.approx(mean - half)
    # a shift common to one seed (the control's noise) changes no residual: the same width
    shifted = pooled_paired({"a": [1.0, 12.0, 3.0], "b": [2.0, 12.0, 5.0]})
    assert shifted.intervals["a"].half_width == pytest.approx(half, rel=1e-5)
    assert pooled_paired({"a": [1.0, 2.0, 3.0]}) is None and pooled_paired({"a": [1.0], "b": [2.0]}) is None
    assert pooled_paired({"a": [1.0, 2.0], "b": [2.0]}) is None


def test_pooled_intervals_cover_and_are_narrower_when_every_run_has_the_same_noise():
    """Three variants with no effect and one control, every run N(0, 1), 3 seeds, 2,000 simulated studies: the
    pooled intervals (4 degrees of freedom) cover 0 in about 95% of studies, as the per-variant paired ones do,
    and are about a third narrower on average."""
    rng = random.Random(1)
    covered = {"pooled": 0, "paired": 0}
    width = {"pooled": 0.0, "paired": 0.0}
    for _ in range(2000):
        control = [rng.gauss(0.0, 1.0) for _ in range(3)]
        differences = {v: [rng.gauss(0.0, 1.0) - c for c in control] for v in "abc"}
        pooled = pooled_paired(differences).intervals["a"]
        alone = t_interval(differences["a"])
        for name, interval in (("pooled", pooled), ("paired", alone)):
            covered[name] += interval.low <= 0.0 <= interval.high
            width[name] += interval.half_width / 2000
    assert 0.93 <= covered["pooled"] / 2000 <= 0.97 and 0.93 <= covered["paired"] / 2000 <= 0.97
    assert 0.55 <= width["pooled"] / width["paired"] <= 0.8


def test_the_pooled_coverage_benchmark_shows_the_gain_and_the_assumption(capsys, monkeypatch):
    """benchmarks/pooled_coverage.py (the figures of docs/studies/pooling.md) on 400 studies: with equal noise the pooled interval is
    narrower than the per-variant one; with a control twice as noisy as its variants it covers clearly less."""
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "pooled_coverage.py"
    monkeypatch.setattr(sys, "argv", ["pooled_coverage.py", "--studies", "400"])
    runpy.run_path(str(script), run_name="__main__")
    results = json.loads(capsys.readouterr().out)["results"]
    same = results["5 variants, same noise"]
    assert same["pooled"]["mean_half_width_first"] < 0.7 * same["paired"]["mean_half_width_first"]
    noisy_control = results["3 variants, the control twice as noisy"]
    assert noisy_control["pooled"]["coverage_first"] < noisy_control["paired"]["coverage_first"] - 0.04
