"""Faults a long run meets (issue #32): kill -9 at any moment, a full disk, two writers on one folder, Ctrl-C in a
validation or an evaluation, and the permissions of what is written."""

from __future__ import annotations

import errno
import io
import json
import multiprocessing
import os
import pickle
import random
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES, tiny_config
from rich.console import Console
from safetensors import SafetensorError

from mtl3dcli import cli, fileio
from mtl3dcli.config import load_config
from mtl3dcli.datasets import download
from mtl3dcli.engine import checkpoint as checkpoint_module
from mtl3dcli.engine.checkpoint import load_state, save_state
from mtl3dcli.engine.logger import RunLogger
from mtl3dcli.engine.trainer import train
from mtl3dcli.errors import DiskFull, Interrupted, Mtl3dError, disk_full_reason
from mtl3dcli.inference import InferenceSession
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.runlock import LOCK_NAME, folder_lock
from mtl3dcli.weights import load_weights, save_weights

TESTS = Path(__file__).parent
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _env() -> dict[str, str]:
    root = str(TESTS.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def _temps(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.glob(f".*{fileio.TEMP_MARK}*")]


def _cli(capsys, *args: str) -> tuple[int, str]:
    """`mtl3d ARGS` in this process: (exit code, stderr)."""
    argv = sys.argv
    sys.argv = ["mtl3d", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
    return code, capsys.readouterr().err


# --- kill -9 ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_reproduces_the_weights_bit_for_bit(tmp_path, tiny_dataset):
    """10 SIGKILLs in a row (from outside at random times; inside a step, a validation, and halfway through writing
    the training state or a weights file), each followed by `--resume`: the final weights equal the uninterrupted
    run's bit for bit, every step and validation is logged once, nothing temporary is left, and under umask 022
    every file is 0644. MTL3D_FAULT_SEED replays a failure."""
    seed = int(os.environ.get("MTL3D_FAULT_SEED", random.randrange(2**31)))
    sets = [*TINY_OVERRIDES, "train.steps=24", "train.save_every=1", "train.eval_every=6", "train.device=cpu"]
    result = subprocess.run([sys.executable, str(TESTS / "fault_driver.py"), str(tiny_dataset), str(tmp_path),
                             str(seed), "10", *sets], env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    context = f"seed {seed}: {report}"
    assert report["reference"] == report["final"] == "exit 0", context
    assert [r["ended"] for r in report["rounds"]] == ["killed"] * 10, context
    assert report["differ"] == [], context
    run = tmp_path / "killed"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 25)), context
    assert [r["step"] for r in records if r.get("split") == "val"] == [6, 12, 18, 24], context
    assert not _temps(run, run / "weights") and not (run / LOCK_NAME).exists(), context
    for path in [*run.glob("weights/*"), run / "config.yaml", run / "results.csv", run / "eval.fixture.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, (path, context)


# --- permissions --------------------------------------------------------------------------------------------------
def test_atomic_writes_get_the_permissions_of_the_umask(tmp_path, monkeypatch):
    """Every atomic writer, including safetensors (which recreates the file) and the training state, gives the
    file 0666 & ~umask, as open() would; the umask is read without changing it."""
    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(fileio, "UMASK", fileio._process_umask())
        assert os.umask(0o027) == 0o027  # reading it did not change it
    finally:
        os.umask(previous)
    assert fileio.UMASK == 0o027
    fileio.write_json(tmp_path / "a.json", {"a": 1})
    save_state(tmp_path / "s.pt", {"step": 1})
    from safetensors.torch import save_file

    with fileio.atomic_path(tmp_path / "w.safetensors") as tmp:
        save_file({"x": torch.zeros(2)}, str(tmp))
    folder = fileio.make_temp_dir(tmp_path, ".staging-")
    for path in ("a.json", "s.pt", "w.safetensors"):
        assert stat.S_IMODE((tmp_path / path).stat().st_mode) == 0o640, path
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750


# --- a full disk --------------------------------------------------------------------------------------------------
class _FillingFile(io.FileIO):
    """A file on a disk that fills after `room` bytes: the next write raises ENOSPC."""

    room = 1000

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def _full_disk_open(path, mode="r", *args, **kwargs):
    return _FillingFile(path, mode.replace("t", "")) if "w" in mode or "a" in mode else open(path, mode, *args,
                                                                                                **kwargs)


def test_disk_full_reason_sees_through_how_writers_report_it():
    try:
        try:
            raise OSError(errno.EDQUOT, "quota")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    except RuntimeError as exc:
        assert disk_full_reason(exc) == "disk quota exceeded"  # torch.save's error, raised while handling
    assert disk_full_reason(SafetensorError("I/O error: No space left on device (os error 28)")) == \
        "no space left on device"
    assert disk_full_reason(ValueError("bad value")) is None
    copied = pickle.loads(pickle.dumps(DiskFull.writing("w.pt", "disk quota exceeded")))  # from a study worker
    assert (str(copied), copied.path, copied.reason) == (
        "disk full: cannot write w.pt (disk quota exceeded); free some space and run the command again", "w.pt",
        "disk quota exceeded")


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    save_state(tmp_path / "last.state.pt", {"step": 1})
    monkeypatch.setattr(checkpoint_module, "open", _full_disk_open, raising=False)
    with pytest.raises(DiskFull, match=f"disk full: cannot write {tmp_path / 'last.state.pt'} \\(no space left"):
        save_state(tmp_path / "last.state.pt", {"step": 2, "x": torch.zeros(10_000)})
    assert load_state(tmp_path / "last.state.pt")["step"] == 1
    assert not _temps(tmp_path)

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("safetensors.torch.save_file", full)
    meta = DatasetMeta(name="m", tasks=["semseg"], classes={"semseg": ["a", "b"]}, depth_range=(0.5, 4.0))
    with pytest.raises(DiskFull, match="cannot write .*w.safetensors"):
        save_weights(tmp_path / "w.safetensors", {"x": torch.zeros(2)}, load_config("demo"), meta, 1)
    with pytest.raises(DiskFull, match="cannot write .*log.jsonl"):
        with fileio.writing(tmp_path / "log.jsonl"):
            raise ENOSPC
    assert not _temps(tmp_path)


def test_training_on_a_full_disk_names_the_file_and_the_intact_checkpoint_then_resumes(tmp_path, tiny_dataset,
                                                                                      monkeypatch):
    """The disk fills at the second state save (the last step, 4): one DiskFull names last.state.pt and step 2 as
    intact; once space is freed, --resume finishes the run from step 2."""
    saves = [0]

    def filling_open(path, mode="r", *args, **kwargs):
        if "w" in mode:
            saves[0] += 1
            if saves[0] == 2:
                return _FillingFile(path, "wb")
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "open", filling_open, raising=False)
    run_dir = tmp_path / "run"
    config = tiny_config(tiny_dataset)
    state = run_dir / "weights" / "last.state.pt"
    with pytest.raises(DiskFull, match=f"cannot write {state} \\(no space left on device\\); the last intact "
                                       f"checkpoint is step 2 \\({state}\\); free some space, then `mtl3d train "
                                       f"--resume {run_dir}`"):
        train(config, run_dir)
    assert load_state(state)["step"] == 2
    assert not _temps(run_dir, run_dir / "weights") and not (run_dir / LOCK_NAME).exists()
    monkeypatch.undo()
    assert train(load_config(str(run_dir / "config.yaml")), run_dir, resume=True)["step"] == 4


def test_cli_reports_a_full_disk_in_one_line(tmp_path, capsys, monkeypatch):
    """A full disk met by a writer without its own check still ends in one `error:` line and exit code 2."""

    def preprocess(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x.png"))

    monkeypatch.setattr("mtl3dcli.datasets.preprocess.preprocess", preprocess)
    code, err = _cli(capsys, "preprocess", str(tmp_path))
    assert code == 2
    assert err.strip() == f"error: disk full: cannot write {tmp_path / 'x.png'} (no space left on device); free " \
                          f"some space and run the command again"


def test_a_download_on_a_full_disk_stops_at_once_and_keeps_its_bytes(tmp_path, monkeypatch):
    """No retries and no other mirror: the bytes received stay in .part for the resume after space is freed."""

    class Response(io.BytesIO):
        status, headers = 200, {"Content-Length": "5000", "Content-Type": "application/octet-stream"}

    opened = []
    monkeypatch.setattr(download.urllib.request, "urlopen",
                        lambda request, timeout: opened.append(request) or Response(b"x" * 5000))
    monkeypatch.setattr(download, "CHUNK_BYTES", 500)
    monkeypatch.setattr(download, "open", _full_disk_open, raising=False)
    part = tmp_path / "archive.tar.part"
    with pytest.raises(DiskFull, match=f"cannot write {part} \\(no space left on device\\); the bytes downloaded "
                                       f"so far are kept there"):
        download.download_file("http://example.invalid/archive.tar", tmp_path / "archive.tar")
    assert len(opened) == 1 and part.stat().st_size == 1000


# --- one writer per folder ----------------------------------------------------------------------------------------
def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path):
    with folder_lock(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        with pytest.raises(Mtl3dError, match=f"{tmp_path / 'run'} is in use by another mtl3d process "
                                             f"\\(pid {os.getpid()}\\)"):
            with folder_lock(tmp_path / "run"):
                pass
    with folder_lock(tmp_path / "run"):  # released
        pass
    assert not (tmp_path / "run").exists()  # created for nothing: removed again


HOLDER = """import multiprocessing, sys, time
from mtl3dcli.runlock import folder_lock
with folder_lock(sys.argv[1]):
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(120,))  # like a DataLoader worker
    child.start()
    print(child.pid, flush=True)
    time.sleep(120)
"""


def test_the_lock_dies_with_its_holder_even_when_its_forked_children_live_on(tmp_path):
    """kill -9 of the holder runs no clean-up: the kernel drops the lock, and the holder's forked child (which
    outlives it, as DataLoader workers do for a few seconds) closed its copy at the fork, so holds nothing."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], env=_env(), stdout=subprocess.PIPE,
                              text=True)
    child = int(holder.stdout.readline())
    try:
        with pytest.raises(Mtl3dError, match=f"in use by another mtl3d process \\(pid {holder.pid}\\)"):
            with folder_lock(tmp_path):
                pass
        holder.kill()
        holder.wait()
        os.kill(child, 0)  # still alive
        with folder_lock(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        os.kill(child, signal.SIGKILL)


def test_two_trainings_on_one_folder(tmp_path, tiny_dataset, capsys):
    run_dir = tmp_path / "run"
    sets = [f"--set={item}" for item in TINY_OVERRIDES]
    with folder_lock(run_dir):
        code, err = _cli(capsys, "train", "--data", str(tiny_dataset), "--out", str(run_dir), *sets)
        assert code == 2
        assert err.strip().startswith(f"error: {run_dir} is in use by another mtl3d process (pid {os.getpid()})")
        assert len(err.strip().splitlines()) == 1
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # nothing written


def test_two_studies_on_one_folder_and_ctrl_c_in_a_study(tmp_path, capsys, monkeypatch):
    with folder_lock(tmp_path / "study", "study"):
        code, err = _cli(capsys, "study", "--out", str(tmp_path / "study"), "--seeds", "1")
        assert code == 2 and err.startswith(f"error: {tmp_path / 'study'} is in use by another mtl3d process")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mtl3dcli.commands.study.run_study", interrupted)
    code, err = _cli(capsys, "study", "--out", str(tmp_path / "study"), "--seeds", "1")
    assert code == 2
    assert err.strip() == "error: study interrupted; finished runs and checkpoints are kept: rerun the same " \
                          "command to finish the grid"
    assert not (tmp_path / "study").exists()


# --- Ctrl-C -------------------------------------------------------------------------------------------------------
def _interrupt_after_first_batch(monkeypatch, where) -> list[int]:
    """SIGINT to this process once `where`'s evaluation has scored one batch; returns [batches handed out after]."""
    after = [0]
    evaluate = InferenceSession.evaluate

    def patched(self, batches, **kwargs):
        def batches_then_sigint():
            for index, batch in enumerate(batches):
                if index == 1:
                    os.kill(os.getpid(), signal.SIGINT)
                if index >= 1:
                    after[0] += 1
                yield batch

        return evaluate(self, batches_then_sigint(), **kwargs)

    monkeypatch.setattr(where, "evaluate", patched)
    return after


def test_ctrl_c_during_validation_stops_at_once_and_resume_redoes_it(tmp_path, tiny_dataset, monkeypatch):
    """The final validation (the 11 training images, 2 DataLoader workers): Ctrl-C after its first batch stops
    there, with the workers gone and the state of step 4 saved; the resume does the validation and the report."""
    after = _interrupt_after_first_batch(monkeypatch, InferenceSession)
    run_dir = tmp_path / "run"
    config = tiny_config(tiny_dataset, "data.val_split=train", "data.workers=2")
    before = set(multiprocessing.active_children())
    with pytest.raises(Interrupted, match=f"interrupted at step 4 during its validation, which a resume does first; "
                                          f"checkpoint saved, continue with `mtl3d train --resume {run_dir}`"):
        train(config, run_dir)
    assert after[0] == 0  # not one batch more, of 6
    assert set(multiprocessing.active_children()) <= before  # the DataLoader workers are gone
    state = load_state(run_dir / "weights" / "last.state.pt")
    assert (state["step"], state["validation_pending"]) == (4, True)
    monkeypatch.undo()
    train(load_config(str(run_dir / "config.yaml")), run_dir, resume=True)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("split") == "val"] == [4]
    assert load_weights(run_dir / "weights" / "last.safetensors").step == 4
    assert (run_dir / "eval.fixture.json").is_file()


def test_ctrl_c_stops_an_evaluation_even_where_it_was_ignored(tmp_path, tiny_weights, tiny_dataset, monkeypatch):
    """A `study --jobs` worker ignores Ctrl-C while idle; the evaluation it runs still stops at once."""
    from mtl3dcli.commands.evaluate import run_evaluation

    after = _interrupt_after_first_batch(monkeypatch, InferenceSession)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_evaluation(tiny_weights, data=tiny_dataset, split="train", batch_size=2, workers=0,
                           out=tmp_path / "report.json")
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert after[0] == 0 and not (tmp_path / "report.json").exists()


def test_ctrl_c_in_a_download_keeps_its_bytes_and_says_how_to_resume(tmp_path, monkeypatch):
    class Response(io.BytesIO):
        status, headers = 200, {"Content-Length": "5000", "Content-Type": "application/octet-stream"}

        def read(self, size=-1):
            if self.tell() >= 1000:
                raise KeyboardInterrupt
            return super().read(size)

    monkeypatch.setattr(download.urllib.request, "urlopen", lambda request, timeout: Response(b"x" * 5000))
    monkeypatch.setattr(download, "CHUNK_BYTES", 500)
    part = tmp_path / "archive.tar.part"
    with pytest.raises(Interrupted, match=f"interrupted; 1000 bytes kept in {part}: run the same command again to "
                                          f"resume it"):
        download.download_file("http://example.invalid/archive.tar", tmp_path / "archive.tar")


# --- what a restart cleans ----------------------------------------------------------------------------------------
def test_a_restart_forgets_what_was_logged_after_its_checkpoint(tmp_path):
    lines = [{"step": s, "loss": 1.0} for s in range(1, 7)] + [{"step": 4, "split": "val", "a/b": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 7, "lo')
    (tmp_path / "results.csv").write_text("step,a/b\n2,1\n4,1\n")
    RunLogger(tmp_path, Console(file=io.StringIO()), 10, 4, redo_validation=True).close()
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == lines[:4]  # steps 1-4; the validation of step 4 is redone; the cut record is gone
    assert (tmp_path / "results.csv").read_text().splitlines() == ["step,a/b", "2,1"]


def test_stale_temporary_files_are_removed_by_the_folder_writer(tmp_path):
    (tmp_path / ".last.state.pt.tmpab12.pt").write_bytes(b"half")
    (tmp_path / "keep.json").write_text("{}")
    assert fileio.remove_stale_temps(tmp_path) == [tmp_path / ".last.state.pt.tmpab12.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]


def test_a_study_worker_interrupted_while_idle_starts_no_further_run(tmp_path, tiny_dataset, monkeypatch):
    """`study --jobs` workers remember a Ctrl-C that came between runs: the next run stops before it begins."""
    from mtl3dcli import interrupts

    monkeypatch.setattr(interrupts, "_MEMORY", {"on": False, "interrupted": False})
    previous = signal.getsignal(signal.SIGINT)
    try:
        interrupts.remember_interrupts()
        os.kill(os.getpid(), signal.SIGINT)  # recorded, not raised
        assert interrupts.interrupted() and interrupts.StopRequest().requested
        with pytest.raises(Interrupted, match=f"interrupted before {tmp_path / 'run'} started"):
            train(tiny_config(tiny_dataset), tmp_path / "run")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not (tmp_path / "run").exists()
