"""The submitit launcher: every run of a study as its own job, on SLURM or with submitit's local executor.

    <out>/submitit/<job id>/   each job's submitit files: its pickled call, stdout and stderr logs
    <out>/submitit/jobs.pkl    the job of every run submitted, so that a rerun of the study collects a job still
                               queued or running (from an earlier command that ended) instead of submitting it twice

Results are collected as jobs finish (a run's reports in its folder are its result; the job returns its wall time).
A preempted or timed-out job follows submitit's checkpointing protocol: on the signal (USR2, sent `signal_delay_s`
before the time limit or on preemption) a training run stops at the next step boundary and saves its state, then
`StudyRunJob.checkpoint` hands submitit the same call, which requeues it; the requeued job resumes the run from that
state (`runs.train_and_evaluate`: `train --resume`). A job whose run is past training is requeued as it is (scoring
starts over). submitit is an optional dependency (`pip install 'mtl3d[cluster]'`).
"""

from __future__ import annotations

import os
import pickle
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mtl3dcli import fileio
from mtl3dcli.commands.study.runs import train_and_evaluate
from mtl3dcli.commands.study.spec import LauncherSpec, StudySpec, Variant, run_dir
from mtl3dcli.errors import Interrupted, Mtl3dError

POLL_S = 2.0  # how often the study looks for finished jobs
JOBS_FILE = "jobs.pkl"


def require_submitit() -> Any:
    """The submitit module, or one clear error saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise Mtl3dError("--launcher submitit needs submitit: pip install 'mtl3d[cluster]' (or pip install "
                         "submitit)") from None
    return submitit


NO_SLURM = ("no SLURM found here (sbatch); run the study where SLURM is, or give --cluster local to run its jobs on "
            "this machine")


def check_launcher(launcher: LauncherSpec) -> str:
    """The submitit executor the launcher uses: its `cluster`, else SLURM (submitit's own choice would fall back to
    running the jobs on this machine unasked); or one clear error: submitit missing, or SLURM asked for and not
    here. Run before a study writes anything."""
    submitit = require_submitit()
    if launcher.cluster is not None:
        return launcher.cluster
    if submitit.SlurmExecutor.affinity() <= 0:  # no srun on the PATH
        raise Mtl3dError(NO_SLURM)
    return "slurm"


def make_executor(launcher: LauncherSpec, folder: Path) -> Any:
    """A submitit executor for one run per job: one task on one node, the launcher's partition, GPUs, CPUs, memory
    and time limit."""
    submitit = require_submitit()
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=check_launcher(launcher))
    parameters: dict[str, Any] = {"name": "mtl3d-study", "nodes": 1, "tasks_per_node": 1,
                                  "timeout_min": launcher.time_min}
    optional = {"gpus_per_node": launcher.gpus_per_run, "cpus_per_task": launcher.cpus_per_run,
                "mem_gb": launcher.mem_gb, "slurm_partition": launcher.partition,
                "slurm_additional_parameters": launcher.slurm or None}
    executor.update_parameters(**parameters, **{k: v for k, v in optional.items() if v is not None})
    return executor


class StudyRunJob:
    """One run of a study as a submitit job: train it (resuming its saved state) and score it, with
    `threads` CPU threads. Returns {"seconds": wall time}; {"interrupted": message} for a run stopped by SIGTERM or
    SIGINT (e.g. scancel), its state saved; {"error": message} for a user error (bad data, a config the run
    refuses). The study reports either as it would locally."""

    def __init__(self, spec: StudySpec, variant: Variant, seed: int, run: Path, threads: int | None = None):
        self.spec, self.variant, self.seed, self.run, self.threads = spec, variant, seed, run, threads

    def __call__(self) -> dict[str, Any]:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        start = time.perf_counter()
        try:
            with _stop_training_first():
                train_and_evaluate(self.spec, self.variant, self.seed, self.run)
        except Interrupted as exc:  # stopped by SIGTERM or SIGINT (scancel): its state is saved
            return {"interrupted": str(exc)}
        except Mtl3dError as exc:
            return {"error": str(exc)}
        return {"seconds": time.perf_counter() - start}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's checkpointing protocol, called on preemption or timeout: the same call, which resumes the run
        from the state it saved (`train --resume`)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def preemption_signal() -> signal.Signals:
    """The signal submitit checkpoints on: USR2 unless SUBMITIT_PREEMPT_SIGNAL names another."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


@contextmanager
def _stop_training_first() -> Iterator[None]:
    """Inside a submitit job, submitit's handler of the preemption signal checkpoints and requeues at once, wherever
    the job is. While a run trains, pass the signal on as SIGTERM instead, on which the trainer stops at the next
    step boundary and saves its state (raising Interrupted), and only then run submitit's handler. Outside training
    (loading, scoring) nothing would be lost: submitit's handler runs at once."""
    usr = preemption_signal()
    requeue, idle = signal.getsignal(usr), signal.getsignal(signal.SIGTERM)
    if not callable(requeue):  # not in a submitit job: nothing to hand over
        yield
        return
    caught: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if signal.getsignal(signal.SIGTERM) is idle:  # no trainer is listening for SIGTERM
            requeue(signum, frame)
        else:
            caught.append(signum)
            signal.raise_signal(signal.SIGTERM)

    signal.signal(usr, on_signal)
    try:
        yield
    except Interrupted:
        if not caught:
            raise
        requeue(caught[0], None)  # checkpoint, requeue and exit
        raise
    finally:
        signal.signal(usr, requeue)


def submit_runs(spec: StudySpec, out: Path, todo: list[tuple[Variant, int]], started: Callable[[Variant, int], None],
                finished: Callable[[float], None]) -> None:
    """Submit every run of `todo` as a job (or collect the job an earlier command submitted for it, if it is still
    queued or running), then collect the jobs as they finish. A failed run stops the study with its error; the other
    jobs go on (on SLURM, a rerun collects them; local jobs are cancelled, their runs resume on a rerun)."""
    folder = out / "submitit"
    executor = make_executor(spec.launcher, folder)  # first: it says how to install submitit if it is missing
    from submitit.helpers import clean_env

    known = _load_jobs(folder / JOBS_FILE)
    jobs: dict[Any, tuple[Variant, int]] = {}
    for variant, seed in todo:
        run = run_dir(out, variant, seed)
        job = known.get(str(run))
        if job is None or job.done():
            with clean_env():  # a study driven from inside a SLURM job submits plain jobs, not steps of its own
                job = executor.submit(StudyRunJob(spec, variant, seed, run, spec.launcher.cpus_per_run))
            known[str(run)] = job
            fileio.write_bytes(folder / JOBS_FILE, pickle.dumps(known))
        jobs[job] = (variant, seed)
        started(variant, seed)
    try:
        for job in _as_completed(list(jobs)):
            finished(_outcome(job, *jobs[job]))
    except BaseException:
        if executor.cluster == "local":
            for job in jobs:
                if not job.done():
                    job.cancel(check=False)
        raise


def _as_completed(jobs: list[Any]) -> Iterator[Any]:
    require_submitit()
    from submitit.helpers import as_completed

    return as_completed(jobs, poll_frequency=POLL_S)


def _outcome(job: Any, variant: Variant, seed: int) -> float:
    """A finished job's wall seconds, or its error as one Mtl3dError line."""
    where = f"{variant.name} seed {seed} (job {job.job_id})"
    try:
        result = job.result()
    except Exception as exc:  # the job died: a bug, the cluster, or too many timeouts
        lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith(("-", " "))]
        cause = next((line for line in reversed(lines) if ":" in line and not line.startswith("You can")), "")
        raise Mtl3dError(f"study run {where} failed: {cause or type(exc).__name__}; its log: "
                         f"{job.paths.stderr}") from None
    if "interrupted" in result:
        raise Interrupted(result["interrupted"])
    if "error" in result:
        raise Mtl3dError(f"study run {where}: {result['error']}")
    return result["seconds"]


def _load_jobs(path: Path) -> dict[str, Any]:
    """run folder -> the job last submitted for it (see the module docstring)."""
    if not path.is_file():
        return {}
    try:
        return pickle.loads(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return {}  # unreadable (another submitit version): submit again
