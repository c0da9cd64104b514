"""`mtl3d study`: the grid, its controls, a tiny end-to-end study, resuming and redoing nothing."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import shutil
import signal

import pytest
import torch
import yaml
from conftest import TINY_OVERRIDES
from rich.console import Console

from mtl3dcli import interrupts
from mtl3dcli.commands import study as study_module
from mtl3dcli.commands.study import report as report_module
from mtl3dcli.commands.study import runner as runner_module
from mtl3dcli.commands.study import (StudySpec, delta_m_vs, parse_variant, run_dir, run_study, study_grid,
                                    write_summary)
from mtl3dcli.environment import describe, summarize
from mtl3dcli.errors import Interrupted, Mtl3dError
from mtl3dcli.reports import run_report_path
from mtl3dcli.stats import pooled_paired, seeds_for_half_width, split_spread


def test_variants_and_their_controls():
    low = parse_variant("reg+low-data=0.25")
    assert low.overrides == ("regularizer.enabled=true", "data.train_fraction=0.25")
    assert low.control == "noreg+low-data=0.25"
    assert parse_variant("samples64:regularizer.samples=64;regularizer.task_hidden=8").overrides == (
        "regularizer.samples=64", "regularizer.task_hidden=8")
    assert parse_variant("samples64:regularizer.samples=64").name == "samples64"
    names = [v.name for v in study_grid(["reg", "low-data=0.5", "reg-alpha=0.5"])]
    assert names == ["noreg", "noreg+low-data=0.5", "reg", "low-data=0.5", "reg-alpha=0.5"]
    with pytest.raises(Mtl3dError, match="unknown study variant"):
        parse_variant("reg+blue")


def test_delta_m_per_dataset_by_hand():
    """Own data: mIoU 50 -> 55 (+10%), RMSE 0.5 -> 0.45 (+10%, lower is better): +10. The shifted set "narrow":
    mIoU unchanged (0%), RMSE 0.5 -> 0.6 (-20%): -10. Consistency never enters Delta_m."""
    keys = ["semseg/mIoU", "depth/rmse", "narrow:semseg/mIoU", "narrow:depth/rmse", "consistency/semseg",
            "narrow:consistency/semseg"]
    run = dict(zip(keys, [55.0, 0.45, 40.0, 0.6, 90.0, 10.0]))
    control = dict(zip(keys, [50.0, 0.5, 40.0, 0.5, 10.0, 90.0]))
    assert delta_m_vs(run, control, keys) == pytest.approx(10.0)
    assert delta_m_vs(run, control, keys, "narrow") == pytest.approx(-10.0)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_dataset):
    out = tmp_path_factory.mktemp("study") / "s"
    narrow = shutil.copytree(tiny_dataset, out.parent / "narrow")  # an eval_data set (here the same views)
    spec = StudySpec(preset="demo", seeds=2, variants=["reg", "low-data=0.5", "alpha2:regularizer.default_alpha=2"],
                     data=str(tiny_dataset),
                     eval_data=[str(narrow)], overrides=[*TINY_OVERRIDES, "train.steps=2", "train.eval_every=2"])
    return spec, out, run_study(spec, out, Console(quiet=True))


@pytest.mark.slow
def test_a_tiny_study_writes_every_output(tiny_study):
    spec, out, summary = tiny_study
    assert set(summary["variants"]) == {"noreg", "noreg+low-data=0.5", "reg", "low-data=0.5", "alpha2"}
    assert summary["variants"]["alpha2"]["control"] == "noreg"
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 10 and {r["seed"] for r in rows} == {"0", "1"}
    assert {"semseg/mIoU", "depth/rmse", "normals/mean", "edge/odsF", "delta_m"} <= set(rows[0])
    assert json.loads((out / "summary.json").read_text()) == summary
    reg = summary["variants"]["reg"]
    assert reg["control"] == "noreg" and reg["metrics"]["semseg/mIoU"]["n"] == 2
    # the paired difference is the mean of the per-seed differences to the control's run of the same seed
    by_run = {(r["variant"], int(r["seed"])): r for r in rows}
    diffs = [float(by_run[("reg", s)]["semseg/mIoU"]) - float(by_run[("noreg", s)]["semseg/mIoU"]) for s in (0, 1)]
    assert reg["paired"]["semseg/mIoU"]["mean"] == pytest.approx(sum(diffs) / 2, rel=1e-4)
    assert summary["variants"]["low-data=0.5"]["control"] == "noreg+low-data=0.5"
    assert all(float(by_run[("noreg", s)]["delta_m"]) == 0.0 for s in (0, 1))
    # every run is also scored on the eval_data set, with its own Delta_m (the same views here: the same numbers)
    assert all(r["narrow:semseg/mIoU"] == r["semseg/mIoU"] and r["narrow:delta_m"] == r["delta_m"] for r in rows)
    assert reg["paired"]["narrow:delta_m"] == reg["paired"]["delta_m"]
    assert "Delta_m vs control (%) on narrow" in (out / "summary.md").read_text()
    for plot in ("metrics.png", "curves.png"):
        assert (out / "plots" / plot).stat().st_size > 1000
    assert "| reg |" in (out / "summary.md").read_text()
    # the seeds a +/- 1 point Delta_m interval would need at each variant's paired spread, in JSON and markdown
    assert reg["seeds_needed"]["delta_m"] == seeds_for_half_width(reg["paired"]["delta_m"]["sd"], 1.0)
    assert f"reg {reg['seeds_needed']['delta_m'] or '-'}" in (out / "summary.md").read_text()
    # every run trained here, in this process's environment
    assert summary["environments"] == [{"environment": describe(torch.device("cpu")), "runs": 10}]
    assert f"Trained on {summarize(describe(torch.device('cpu')))} (10 runs)." in (out / "summary.md").read_text()


def test_the_spread_is_split_between_the_study_data_and_an_eval_set(tmp_path):
    """Per-seed paired Delta_m of 1, 2, 3 % on the study's data and 1, 3, 2 % on a second set (mIoU only, control
    at 50 everywhere) -> the split of stats.split_spread, in summary.json and summary.md."""
    spec = StudySpec(preset="demo", seeds=3, variants=["reg"], data=str(tmp_path / "d1"),
                     eval_data=[str(tmp_path / "d2")])
    grid = study_grid(spec.variants)
    for seed, (on_d1, on_d2) in enumerate([(1.0, 1.0), (2.0, 3.0), (3.0, 2.0)]):
        for variant in grid:
            for data, delta in ((spec.data, on_d1), (spec.eval_data[0], on_d2)):
                miou = 50.0 * (1 + delta / 100) if variant.name == "reg" else 50.0
                report = run_report_path(run_dir(tmp_path / "s", variant, seed), data)
                report.parent.mkdir(parents=True, exist_ok=True)
                report.write_text(json.dumps({"step": 800, "results": {"semseg": {"mIoU": miou}}}))
    summary = write_summary(spec, grid, tmp_path / "s")
    split = summary["variants"]["reg"]["spread_split"]["d2:delta_m"]
    expected = split_spread([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert split["shared_sd"] == pytest.approx(expected.shared_sd) and split["own_sd"] == pytest.approx(expected.own_sd)
    assert split["correlation"] == pytest.approx(0.5)
    assert split["seeds_needed"] == seeds_for_half_width(expected.shared_sd, 1.0)
    assert "on d2, as the sd both sets share" in (tmp_path / "s" / "summary.md").read_text()
    assert "reg 0.71 and 0.71 (r = 0.50; " in (tmp_path / "s" / "summary.md").read_text()
    assert "spread_split" not in summary["variants"]["noreg"]
    # an undefined split (a metric missing on one set: NaN, written as null) prints as "-"
    undefined = {"variants": {"reg": {"spread_split": {"d2:delta_m": dict.fromkeys(
        ("shared_sd", "own_sd", "correlation", "seeds_needed"))}}}}
    assert "reg - and - (r = -; - seeds)" in report_module._spread_lines(undefined, ["delta_m", "d2:delta_m"], 1.0)[1]


def test_the_variants_of_one_control_share_a_pooled_delta_m_interval(tmp_path):
    """reg and alpha2 share noreg, with per-seed Delta_m 1, 2, 3 and 2, 2, 5 % (mIoU only): their pooled intervals
    are stats.pooled_paired's (2 degrees of freedom); low-data=0.5, alone with its control, has none ("-")."""
    spec = StudySpec(preset="demo", seeds=3, variants=["reg", "alpha2:regularizer.default_alpha=2", "low-data=0.5"],
                     data=str(tmp_path / "d1"))
    grid = study_grid(spec.variants)
    deltas = {"reg": [1.0, 2.0, 3.0], "alpha2": [2.0, 2.0, 5.0], "low-data=0.5": [0.0, 1.0, -1.0]}
    for seed in range(3):
        for variant in grid:
            miou = 50.0 * (1 + deltas[variant.name][seed] / 100) if variant.name in deltas else 50.0
            report = run_report_path(run_dir(tmp_path / "s", variant, seed), spec.data)
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(json.dumps({"step": 800, "results": {"semseg": {"mIoU": miou}}}))
    summary = write_summary(spec, grid, tmp_path / "s")
    expected = pooled_paired({"reg": deltas["reg"], "alpha2": deltas["alpha2"]})
    for name in ("reg", "alpha2"):
        pooled = summary["variants"][name]["pooled"]["delta_m"]
        assert pooled["dof"] == 2 and pooled["mean"] == pytest.approx(expected.intervals[name].mean)
        assert pooled["low"] == pytest.approx(expected.intervals[name].low)
    assert "pooled" not in summary["variants"]["low-data=0.5"] and "pooled" not in summary["variants"]["noreg"]
    markdown = (tmp_path / "s" / "summary.md").read_text()
    assert "| Delta_m (%) | Delta_m pooled (%) |" in markdown
    assert f"| {study_module.paired_cell(summary['variants']['reg']['pooled']['delta_m'])} |" in markdown
    assert markdown.count(" | - |") == 1  # low-data's row
    assert pooled["run_sd"] == pytest.approx(expected.run_sd) and pooled["control_sd"] == pytest.approx(1.22, abs=0.01)
    assert ("2 degrees of freedom among the variants of noreg, whose runs' noise sd is 0.71 against 1.22 for "
            "noreg's own") in markdown


@pytest.mark.slow
def test_rerunning_a_finished_study_does_no_work(tiny_study, monkeypatch):
    spec, out, summary = tiny_study
    monkeypatch.setattr(runner_module, "train_and_evaluate", lambda *a: pytest.fail("a finished run was redone"))
    assert run_study(spec, out, Console(quiet=True)) == summary
    # fewer seeds and fewer variants: a summary of the finished runs asked for, nothing trained
    fewer = StudySpec(**{**spec.__dict__, "seeds": 1, "variants": ["reg"]})
    assert set(run_study(fewer, out, Console(quiet=True))["variants"]) == {"noreg", "reg"}
    # what every run is may not change: other steps or overrides are another study
    for changed in ({"steps": 3}, {"overrides": [*spec.overrides, "train.lr=0.1"]}):
        with pytest.raises(Mtl3dError, match=f"holds a study of other runs \\({next(iter(changed))} differ"):
            run_study(StudySpec(**{**spec.__dict__, **changed}), out, Console(quiet=True))
    # nor may a variant's definition: its runs were trained as the old one
    renamed = StudySpec(**{**spec.__dict__, "variants": ["alpha2:regularizer.default_alpha=3"]})
    with pytest.raises(Mtl3dError, match=r"alpha2/seed0 was trained with another configuration "
                                         r"\(regularizer.default_alpha: 2.0, the study now asks 3.0\)"):
        run_study(renamed, out, Console(quiet=True))
    assert run_study(spec, out, Console(quiet=True)) == summary  # and the study itself is as it was


@pytest.mark.slow
def test_an_interrupted_run_is_finished_by_a_rerun(tiny_study, monkeypatch):
    spec, out, _ = tiny_study
    grid = {v.name: v for v in study_grid(spec.variants)}
    run = run_dir(out, grid["reg"], 1)
    for report in run.glob("eval.*.json"):
        report.unlink()  # as if killed after training, before scoring
    done = []
    real = runner_module.train_and_evaluate
    monkeypatch.setattr(runner_module, "train_and_evaluate", lambda *a: (done.append(a[1:3]), real(*a)))
    run_study(spec, out, Console(quiet=True))
    assert done == [(grid["reg"], 1)] and list(run.glob("eval.*.json"))


@pytest.mark.slow
def test_a_run_missing_one_report_is_scored_on_that_set_only(tiny_study, monkeypatch):
    """A study that adds an evaluation set to finished runs (or was killed between two evaluations) scores only the
    sets without a report of the last weights."""
    from mtl3dcli.commands import evaluate as evaluate_module

    spec, out, summary = tiny_study
    run = run_dir(out, study_grid(spec.variants)[0], 0)
    (run / "eval.narrow.json").unlink()
    scored = []
    real = evaluate_module.run_evaluation
    monkeypatch.setattr(evaluate_module, "run_evaluation",
                        lambda *a, **k: (scored.append(k["data"].name), real(*a, **k)))
    assert run_study(spec, out, Console(quiet=True)) == summary
    assert scored == ["narrow"]


@pytest.mark.slow
def test_a_parallel_study_trains_the_runs_a_sequential_one_does(tmp_path, tiny_dataset, monkeypatch):
    """--jobs 2 runs the grid in two spawned worker processes with half the CPU threads each: at equal threads per
    run (one here) it writes the same results as the sequential study, and a rerun does no work."""
    spec = StudySpec(preset="demo", seeds=2, variants=["reg"], data=str(tiny_dataset),
                     overrides=[*TINY_OVERRIDES, "train.steps=2", "train.eval_every=2"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sequential = run_study(spec, tmp_path / "sequential", Console(quiet=True))
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(runner_module.os, "cpu_count", lambda: 2)  # two jobs -> one thread per worker
    parallel = run_study(spec, tmp_path / "parallel", Console(quiet=True), jobs=2)
    assert parallel["variants"] == sequential["variants"]
    assert (tmp_path / "parallel" / "results.csv").read_text() == (tmp_path / "sequential" / "results.csv").read_text()
    monkeypatch.setattr(runner_module, "_timed_run", lambda *a: pytest.fail("a finished run was redone"))
    assert run_study(spec, tmp_path / "parallel", Console(quiet=True), jobs=2) == parallel


@pytest.mark.slow
def test_a_failed_run_of_a_parallel_study_stops_it_with_its_own_error(tmp_path, tiny_dataset):
    spec = StudySpec(preset="demo", seeds=1, variants=["reg"], data=str(tmp_path / "missing"),
                     overrides=[*TINY_OVERRIDES, "train.steps=2"])
    with pytest.raises(Mtl3dError, match="missing"):
        run_study(spec, tmp_path / "s", Console(quiet=True), jobs=2)


def test_an_interrupted_study_says_to_rerun_it(tmp_path, tiny_dataset, monkeypatch):
    def stopped(*args):
        raise Interrupted("interrupted at step 3; checkpoint saved, continue with `mtl3d train --resume RUN`")

    monkeypatch.setattr(runner_module, "train_and_evaluate", stopped)
    spec = StudySpec(preset="demo", seeds=1, variants=["reg"], data=str(tiny_dataset), overrides=TINY_OVERRIDES)
    with pytest.raises(Mtl3dError, match=r"^study interrupted \(interrupted at step 3\); .*rerun the same command"):
        run_study(spec, tmp_path / "s", Console(quiet=True))


def test_a_parallel_study_worker_takes_its_share_of_threads_and_its_own_gpu(monkeypatch):
    queue = multiprocessing.get_context("spawn").Queue()
    queue.put(3)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(interrupts, "_MEMORY", {"on": False, "interrupted": False})
    threads, handler = torch.get_num_threads(), signal.getsignal(signal.SIGINT)
    try:
        runner_module._worker_init(queue, 1)
        assert torch.get_num_threads() == 1 and signal.getsignal(signal.SIGINT) is interrupts._remember
        assert runner_module._WORKER_DEVICE == "cuda:1"  # slot 3 of 2 GPUs
    finally:
        torch.set_num_threads(threads)
        signal.signal(signal.SIGINT, handler)
        runner_module._WORKER_DEVICE = None


def _fake_runs(monkeypatch, deltas: list[float] | dict[str, list[float]]) -> list[tuple[str, int]]:
    """Replace training with reports written at once: mIoU 50 for every control, 50 (1 + deltas[seed] / 100) for
    `reg` (or for each variant named in a dict of deltas), so reg's paired Delta_m at seed s is deltas[s]. Returns
    the (variant, seed) of every run "trained"."""
    trained = []
    per_variant = deltas if isinstance(deltas, dict) else {"reg": deltas}

    def fake(spec, variant, seed, run, device=None):
        config = spec.config(variant, seed)
        miou = 50.0 * (1 + per_variant[variant.name][seed] / 100) if variant.name in per_variant else 50.0
        for data in [config.data.root, *spec.eval_data]:
            report = run_report_path(run, data)
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(json.dumps({"step": config.train.steps, "results": {"semseg": {"mIoU": miou}}}))
        trained.append((variant.name, seed))

    monkeypatch.setattr(runner_module, "train_and_evaluate", fake)
    return trained


@pytest.mark.slow
def test_a_study_folder_grows_by_what_is_missing_only(tmp_path, monkeypatch):
    trained = _fake_runs(monkeypatch, [1.0, 2.0, 3.0, 4.0])
    spec = StudySpec(preset="demo", seeds=2, variants=["reg"], data=str(tmp_path / "d1"))
    run_study(spec, tmp_path / "s", Console(quiet=True))
    assert trained == [("noreg", 0), ("reg", 0), ("noreg", 1), ("reg", 1)]
    trained.clear()
    more = StudySpec(**{**spec.__dict__, "seeds": 4, "variants": ["reg", "crossview"]})
    summary = run_study(more, tmp_path / "s", Console(quiet=True))
    assert trained == [("crossview", 0), ("crossview", 1), ("noreg", 2), ("reg", 2), ("crossview", 2),
                       ("noreg", 3), ("reg", 3), ("crossview", 3)]
    assert summary["seeds"] == 4 and summary["variants"]["reg"]["paired"]["delta_m"]["mean"] == pytest.approx(2.5)
    assert yaml.safe_load((tmp_path / "s" / "study.yaml").read_text())["seeds"] == 4  # the latest request
    trained.clear()  # a new evaluation set: every run is scored on it (the real scoring skips the reports it has)
    run_study(StudySpec(**{**more.__dict__, "eval_data": [str(tmp_path / "d2")]}), tmp_path / "s", Console(quiet=True))
    assert len(trained) == 12


@pytest.mark.slow
def test_a_sequential_study_adds_seeds_until_its_intervals_are_narrow(tmp_path, monkeypatch):
    """Paired Delta_m 0, 2, 1 % on seeds 0-2: sd 1, +/- 2.48 > 1 -> seed 3 (1.5 %): sd 0.854, +/- 1.36 -> seed 4
    (0.5 %): 0, 2, 1, 1.5, 0.5 has sd 0.791, +/- 2.776 * 0.791 / sqrt(5) = 0.98: met, seed 5 is never trained."""
    trained = _fake_runs(monkeypatch, [0.0, 2.0, 1.0, 1.5, 0.5, 9.0])
    spec = StudySpec(preset="demo", seeds=3, variants=["reg"], data=str(tmp_path / "d1"), half_width=1.0,
                     max_seeds=6)
    console = Console(file=io.StringIO(), width=200)
    summary = run_study(spec, tmp_path / "s", console)
    assert trained == [(v, s) for s in range(5) for v in ("noreg", "reg")]
    log = console.file.getvalue()
    assert "3 seeds give reg a paired Delta_m of +/- 2.48 points (wanted +/- 1): going to 4" in log
    assert "4 seeds give reg a paired Delta_m of +/- 1.36 points (wanted +/- 1): going to 5" in log
    paired_delta = summary["variants"]["reg"]["paired"]["delta_m"]
    assert summary["seeds"] == 5 and paired_delta["n"] == 5 and paired_delta["mean"] == pytest.approx(1.0)
    assert (paired_delta["high"] - paired_delta["low"]) / 2 == pytest.approx(2.7764 * 0.7906 / 5 ** 0.5, abs=1e-3)
    assert summary["sequential"] == {"rule": summary["sequential"]["rule"], "start": 3, "half_width": 1.0,
                                     "max_seeds": 6, "pooled": False, "met": True}
    assert ("Seeds: 5 (from 3, until every paired Delta_m interval is within +/- 1 point or 6 seeds: met)"
            in (tmp_path / "s" / "summary.md").read_text())
    trained.clear()
    assert run_study(spec, tmp_path / "s", Console(quiet=True)) == summary and trained == []  # a rerun does nothing


def test_a_sequential_study_stops_at_its_maximum_and_says_the_width_is_not_met(tmp_path, monkeypatch):
    trained = _fake_runs(monkeypatch, [0.0, 5.0, -5.0, 3.0, 1.0])
    spec = StudySpec(preset="demo", seeds=3, variants=["reg"], data=str(tmp_path / "d1"), half_width=1.0,
                     max_seeds=4)
    summary = run_study(spec, tmp_path / "s", Console(quiet=True))
    assert summary["seeds"] == 4 and len(trained) == 8 and summary["sequential"]["met"] is False
    assert "or 4 seeds: not met)" in (tmp_path / "s" / "summary.md").read_text()


def test_a_sequential_study_stops_at_once_when_its_seeds_agree(tmp_path, monkeypatch):
    trained = _fake_runs(monkeypatch, [1.0, 1.1, 0.9])
    spec = StudySpec(preset="demo", seeds=3, variants=["reg"], data=str(tmp_path / "d1"), half_width=1.0,
                     max_seeds=10)
    assert run_study(spec, tmp_path / "s", Console(quiet=True))["seeds"] == 3 and len(trained) == 6


@pytest.mark.slow
def test_a_pooled_sequential_study_judges_variants_of_one_control_together(tmp_path, monkeypatch):
    """reg and alpha2 differ from noreg by 0, 2, 1 % and 1, 3, 2 %: their own intervals are +/- 2.48, but all their
    seed-to-seed spread is shared (the control's), so the pooled residual is 0 and a --pooled study stops at its 3
    seeds; low-data=0.5, alone with its control, is judged by its own interval (0, 2, 1, 1.5, 0.5: 5 seeds, as in
    the unpooled test above). Without --pooled, reg and alpha2 take the study to 5 seeds as well."""
    deltas = {"reg": [0.0, 2.0, 1.0, 1.5, 0.5, 9.0], "alpha2": [1.0, 3.0, 2.0, 2.5, 1.5, 9.0]}
    trained = _fake_runs(monkeypatch, deltas)
    spec = StudySpec(preset="demo", seeds=3, variants=["reg", "alpha2:regularizer.default_alpha=2"],
                     data=str(tmp_path / "d1"), half_width=1.0, max_seeds=6, pooled=True)
    summary = run_study(spec, tmp_path / "s", Console(quiet=True))
    assert summary["seeds"] == 3 and len(trained) == 9 and summary["sequential"]["pooled"] is True
    assert summary["variants"]["reg"]["pooled"]["delta_m"]["high"] == pytest.approx(1.0)  # mean 1 +/- 0
    assert ("until every paired Delta_m interval (pooled where a variant has one) is within +/- 1 point or 6 seeds: "
            "met)" in (tmp_path / "s" / "summary.md").read_text())
    trained = _fake_runs(monkeypatch, {**deltas, "low-data=0.5": deltas["reg"]})
    console = Console(file=io.StringIO(), width=200)
    summary = run_study(StudySpec(**{**spec.__dict__, "variants": [*spec.variants, "low-data=0.5"]}),
                        tmp_path / "s", console)
    assert summary["seeds"] == 5 and "3 seeds give low-data=0.5 a paired Delta_m of +/- 2.48" in console.file.getvalue()
    unpooled = run_study(StudySpec(**{**spec.__dict__, "pooled": False}), tmp_path / "u", Console(quiet=True))
    assert unpooled["seeds"] == 5


@pytest.mark.parametrize("fields, message", [
    ({"seeds": 0}, "at least 1 seed"),
    ({"max_seeds": 8}, r"give half_width \(--half-width\) too"),
    ({"pooled": True}, r"pooled \(--pooled\) applies to a sequential study"),
    ({"half_width": 0.0, "max_seeds": 8}, r"half_width \(--half-width\) must be positive"),
    ({"seeds": 1, "half_width": 1.0, "max_seeds": 8}, "starts from 2 or more seeds"),
    ({"half_width": 1.0}, "of at least seeds"),
    ({"half_width": 1.0, "max_seeds": 2}, r"max_seeds \(--max-seeds\) of at least seeds \(3\), got 2"),
])
def test_a_study_spec_refuses_a_bad_seed_rule(fields, message):
    with pytest.raises(Mtl3dError, match=message):
        StudySpec(**{"preset": "demo", "seeds": 3, "variants": ["reg"], **fields})


def test_the_cli_bounds_a_sequential_study_at_10_seeds_unless_told(tmp_path, monkeypatch, capsys):
    from test_cli import invoke

    specs = []

    def fake(spec, out, console, jobs):
        specs.append(spec)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.md").write_text("the tables\n")
        return {"variants": {"noreg": {}, "reg": {}}, "seeds": 7}

    monkeypatch.setattr(study_module, "run_study", fake)
    code, out, _ = invoke(["study", "--half-width", "1", "--out", tmp_path / "s"], capsys)
    assert code == 0 and "2 variants x 7 seeds" in out
    assert (specs[0].seeds, specs[0].half_width, specs[0].max_seeds) == (3, 1.0, 10)
    invoke(["study", "--seeds", "12", "--half-width", "0.5", "--out", tmp_path / "s"], capsys)
    invoke(["study", "--half-width", "0.5", "--max-seeds", "4", "--out", tmp_path / "s"], capsys)
    assert [s.max_seeds for s in specs[1:]] == [12, 4]
