"""`mtl3d study --launcher submitit`: every run a job (submitit's local executor here), a preempted job requeued
from its checkpoint, the summary equal to the local launcher's; the SLURM options; submitit missing."""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES
from rich.console import Console

from mtl3dcli.commands.study import LauncherSpec, StudySpec, load_spec, run_dir, run_study, study_grid, with_launcher
from mtl3dcli.commands.study import cluster as cluster_module
from mtl3dcli.errors import Interrupted, Mtl3dError

submitit = pytest.importorskip("submitit")
STEPS = 40  # about 2 s of training after the first step: the window the preemption signal must hit


def _spec(data: Path, **launcher) -> StudySpec:
    """2 variants (noreg, reg) x 1 seed of STEPS tiny steps, one checkpoint at the end only (a resume from the middle
    must come from the state saved on the preemption signal)."""
    return StudySpec(preset="demo", seeds=1, variants=["reg"], data=str(data),
                     overrides=[*TINY_OVERRIDES, f"train.steps={STEPS}", f"train.eval_every={STEPS}",
                                f"train.save_every={STEPS}"],
                     launcher=LauncherSpec(**launcher))


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _preempt_when_training(out: Path, run: Path, sent: list[int], stop: threading.Event) -> None:
    """Send the preemption signal (USR2) to the job training `run` once it has logged its first step: the job
    submitit's local executor started (its controller's child, the controller's pid being the job id)."""
    while not stop.is_set() and not sent:
        jobs_file, log = out / "submitit" / "jobs.pkl", run / "metrics.jsonl"
        if jobs_file.is_file() and log.is_file() and log.read_text().strip():
            job = pickle.loads(jobs_file.read_bytes()).get(str(run))
            for pid in _children(int(job.job_id)) if job is not None else []:
                os.kill(pid, signal.SIGUSR2)
                sent.append(pid)
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the job's process in /proc")
def test_a_submitit_study_survives_a_preempted_job_and_equals_the_local_one(tmp_path, tiny_dataset, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the jobs train with 1 thread (cpus_per_run): equal numbers need equal threads
    try:
        local = run_study(_spec(tiny_dataset), tmp_path / "local", Console(quiet=True))
    finally:
        torch.set_num_threads(threads)
    spec = _spec(tiny_dataset, name="submitit", cluster="local", cpus_per_run=1, time_min=10)
    out = tmp_path / "cluster"
    run = run_dir(out, study_grid(spec.variants)[1], 0)
    sent: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_preempt_when_training, args=(out, run, sent, stop), daemon=True)
    watcher.start()
    try:
        summary = run_study(spec, out, Console(quiet=True))
    finally:
        stop.set()
        watcher.join()
    assert sent, "the reg job was never seen training"
    job = pickle.loads((out / "submitit" / "jobs.pkl").read_bytes())[str(run)]
    assert "Requeued job" in job.stdout()  # submitit's checkpoint protocol: requeued, then finished
    starts = json.loads((run / "environment.json").read_text())["starts"]
    assert [s["step"] for s in starts][0] == 0 and 0 < starts[1]["step"] < STEPS  # resumed from the signal's step
    assert summary == local
    assert (out / "results.csv").read_text() == (tmp_path / "local" / "results.csv").read_text()
    # a rerun collects the finished runs and submits nothing
    monkeypatch.setattr(cluster_module, "make_executor", lambda *a: pytest.fail("a finished run was submitted"))
    assert run_study(spec, out, Console(quiet=True)) == summary


class _FakeJob:
    """A job an earlier command submitted and that still runs: the rerun waits for it instead of submitting."""

    job_id = "41"

    def __init__(self, run: str):
        self.run = run

    def done(self) -> bool:
        return (Path(self.run) / "done").is_file()

    def result(self) -> dict:
        return {"seconds": 1.0}


def test_a_rerun_collects_a_job_still_running_instead_of_submitting_it_again(tmp_path, monkeypatch):
    spec = StudySpec(preset="demo", seeds=1, variants=["reg"], launcher=LauncherSpec(name="submitit", cluster="local"))
    variant = study_grid(spec.variants)[1]
    run = str(run_dir(tmp_path, variant, 0))
    (tmp_path / "submitit").mkdir()
    (tmp_path / "submitit" / "jobs.pkl").write_bytes(pickle.dumps({run: _FakeJob(run)}))
    submitted = []

    class Executor:
        cluster = "local"

        def submit(self, job):
            submitted.append(job.run)
            (job.run / "done").parent.mkdir(parents=True, exist_ok=True)
            (job.run / "done").touch()
            return _FakeJob(str(job.run))

    monkeypatch.setattr(cluster_module, "make_executor", lambda *a: Executor())
    monkeypatch.setattr(cluster_module, "POLL_S", 0.01)
    Path(run).mkdir(parents=True)
    threading.Timer(0.3, lambda: (Path(run) / "done").touch()).start()
    finished = []
    cluster_module.submit_runs(spec, tmp_path, [(variant, 0)], lambda *a: None, finished.append)
    assert submitted == [] and finished == [1.0]
    # once that job is over (its run unfinished, e.g. it failed), the run is submitted again
    cluster_module.submit_runs(spec, tmp_path, [(variant, 0)], lambda *a: None, finished.append)
    assert submitted == [Path(run)]


def test_the_preemption_signal_stops_training_before_submitit_requeues(monkeypatch):
    """Outside training submitit's handler runs at once; while a trainer listens for SIGTERM the signal goes to it
    first, and submitit's handler runs once the trainer stopped with its state saved (Interrupted)."""
    calls: list[str] = []
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR2, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGUSR2, lambda *a: calls.append("requeue"))  # as submitit's job process has it
        signal.signal(signal.SIGTERM, lambda *a: calls.append("bypass"))
        with pytest.raises(Interrupted):
            with cluster_module._stop_training_first():
                signal.raise_signal(signal.SIGUSR2)
                assert calls == ["requeue"]
                signal.signal(signal.SIGTERM, lambda *a: calls.append("stop at the next step"))  # the trainer's
                signal.raise_signal(signal.SIGUSR2)
                assert calls == ["requeue", "stop at the next step"]
                raise Interrupted("interrupted at step 3; checkpoint saved")
        assert calls == ["requeue", "stop at the next step", "requeue"]
        assert signal.getsignal(signal.SIGUSR2) is not None and calls[-1] == "requeue"
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_a_job_checkpoints_as_the_same_call(tmp_path):
    job = cluster_module.StudyRunJob(StudySpec(preset="demo", seeds=1, variants=["reg"]),
                                     study_grid(["reg"])[1], 0, tmp_path, threads=2)
    delayed = job.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission) and delayed.function is job
    assert pickle.loads(pickle.dumps(job)).run == tmp_path  # what submitit writes for the requeued job


def test_a_job_reports_a_user_error_as_the_local_launcher_does(tmp_path):
    spec = StudySpec(preset="demo", seeds=1, variants=["reg"], data=str(tmp_path / "missing"),
                     overrides=TINY_OVERRIDES)
    result = cluster_module.StudyRunJob(spec, study_grid(["reg"])[1], 0, tmp_path / "run")()
    assert "missing" in result["error"]

    class Finished:
        job_id = "7"

        def result(self):
            return result

    with pytest.raises(Mtl3dError, match=r"^study run reg seed 0 \(job 7\): .*missing"):
        cluster_module._outcome(Finished(), study_grid(["reg"])[1], 0)


def test_the_launcher_options_become_sbatch_options(tmp_path, monkeypatch):
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # as if SLURM were installed
    launcher = LauncherSpec(name="submitit", cluster="slurm", partition="gpu", gpus_per_run=1, cpus_per_run=8,
                            time_min=600, mem_gb=40, slurm={"qos": "high"})
    executor = cluster_module.make_executor(launcher, tmp_path)
    sbatch = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--time=600", "--mem=40GB",
                 "--qos=high", "--signal=USR2@90", "--ntasks-per-node=1", "--nodes=1"):
        assert f"#SBATCH {line}\n" in sbatch, line


def test_launcher_settings_from_a_study_file_and_the_command_line(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("preset: demo\nseeds: 2\nvariants: [reg]\nlauncher: {name: submitit, partition: gpu, "
                    "gpus_per_run: 1}\n")
    spec = load_spec(path)
    assert spec.launcher == LauncherSpec(name="submitit", partition="gpu", gpus_per_run=1)
    spec = with_launcher(spec, partition="long", time_min=None, mem_gb=32)
    assert (spec.launcher.partition, spec.launcher.gpus_per_run, spec.launcher.mem_gb) == ("long", 1, 32)
    path.write_text("preset: demo\nseeds: 2\nvariants: [reg]\nlauncher: {name: submitit, gpus: 1}\n")
    with pytest.raises(Mtl3dError, match="launcher: .*unexpected keyword argument 'gpus'"):
        load_spec(path)
    with pytest.raises(Mtl3dError, match="unknown launcher 'slurm' \\(--launcher\\): use local or submitit"):
        LauncherSpec(name="slurm")
    with pytest.raises(Mtl3dError, match=r"time_min \(--time-min\) must be positive"):
        LauncherSpec(time_min=0)


def test_a_submitit_launcher_without_submitit_is_one_error_line(tmp_path, monkeypatch, capsys):
    from test_cli import invoke

    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    code, _, err = invoke(["study", "--launcher", "submitit", "--out", tmp_path / "s"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        "error: --launcher submitit needs submitit: pip install 'mtl3d[cluster]' (or pip install submitit)"]
    assert not (tmp_path / "s").exists()
    code, _, err = invoke(["study", "--launcher", "submitit", "--jobs", "2", "--out", tmp_path / "s"], capsys)
    assert code == 2 and "error:" in err


def test_a_submitit_study_without_slurm_stops_before_writing_anything(tmp_path, monkeypatch, capsys):
    from test_cli import invoke

    monkeypatch.setenv("PATH", str(tmp_path))  # no srun: submitit itself would run the jobs here, unasked
    code, _, err = invoke(["study", "--launcher", "submitit", "--out", tmp_path / "s"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        "error: no SLURM found here (sbatch); run the study where SLURM is, or give --cluster local to run its jobs on "
        "this machine"]
    assert not (tmp_path / "s").exists()

