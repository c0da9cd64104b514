"""Training engine: LR schedule, sharded sampler, checkpoints, run outputs, NaN/interrupt stops, exact resume
after a hard kill, and inference parity of the regularized model."""

from __future__ import annotations

import itertools

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES, tiny_config
from safetensors.torch import save_file

import mtl3dcli
from mtl3dcli.config import TrainConfig, load_config
from mtl3dcli.data.layout import DatasetLayout
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.engine import trainer as train_module
from mtl3dcli.engine.checkpoint import load_state, save_state
from mtl3dcli.weights import load_weights, save_weights
from mtl3dcli.data.loader import EpochSampler
from mtl3dcli.engine.trainer import lr_factor, train
from mtl3dcli.environment import code_version, describe, summarize, training_environments
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.build import build_model, model_from_weights

# A 12-step poly schedule, checkpoint every 2 steps, one evaluation at the end: shared by the reference run and
# the runs that are interrupted and resumed, which must reproduce its losses.
RESUME_OVERRIDES = ["train.steps=12", "train.save_every=2", "train.eval_every=12", "train.log_every=1",
                    "train.device=cpu", "regularizer.samples=16", "regularizer.render_size=16x24"]


@pytest.fixture
def one_thread():
    """Fixed torch thread count, so in-process runs and subprocesses (OMP_NUM_THREADS=1) reduce alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _train_losses(run_dir: Path) -> dict[int, dict]:
    """step -> its last training record (a resumed run logs the steps after the checkpoint a second time)."""
    return {r["step"]: r for r in _records(run_dir) if "loss" in r}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_dataset) -> Path:
    """The uninterrupted run every resume is compared with."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = tmp_path_factory.mktemp("engine") / "reference"
        train(tiny_config(tiny_dataset, *RESUME_OVERRIDES), run_dir)
    finally:
        torch.set_num_threads(threads)
    return run_dir


def _assert_same_losses(run_dir: Path, reference: Path, steps) -> None:
    got, want = _train_losses(run_dir), _train_losses(reference)
    for step in steps:
        for key in ("loss", "lr", "semseg", "render/depth"):
            assert got[step][key] == pytest.approx(want[step][key], rel=1e-5, abs=1e-8), (step, key)


# --- learning-rate schedule -----------------------------------------------------------------------------------------
def test_lr_factor_warmup_then_poly():
    config = TrainConfig(steps=10, warmup_steps=2, schedule="poly", poly_power=0.9)
    assert lr_factor(0, config) == pytest.approx(0.5)  # (0 + 1) / 2
    assert lr_factor(1, config) == pytest.approx(1.0)
    assert lr_factor(2, config) == pytest.approx(1.0)  # decay starts: progress 0
    assert lr_factor(6, config) == pytest.approx(0.5 ** 0.9)  # progress (6 - 2) / 8
    assert lr_factor(9, config) == pytest.approx((1 / 8) ** 0.9)
    assert lr_factor(10, config) == 0.0
    assert lr_factor(15, config) == 0.0  # clamped past the end


def test_lr_factor_cosine_and_constant():
    config = TrainConfig(steps=8, warmup_steps=0, schedule="cosine")
    assert lr_factor(0, config) == pytest.approx(1.0)
    assert lr_factor(2, config) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))  # 0.853553
    assert lr_factor(4, config) == pytest.approx(0.5)
    assert lr_factor(8, config) == pytest.approx(0.0, abs=1e-12)
    constant = TrainConfig(steps=8, warmup_steps=4, schedule="constant")
    assert [lr_factor(s, constant) for s in (0, 3, 4, 7)] == pytest.approx([0.25, 1.0, 1.0, 1.0])


# --- sampler --------------------------------------------------------------------------------------------------------
def _take(sampler, n):
    return list(itertools.islice(sampler, n))


def test_epoch_sampler_shards_are_disjoint_whole_batches():
    size, batch, seed = 11, 2, 3
    assert EpochSampler.batches_per_epoch(size, batch, 2) == 2  # 5 samples per rank -> 2 whole batches
    shards = [_take(EpochSampler(size, batch, seed, rank=rank, world=2), 8) for rank in range(2)]
    for epoch in (0, 1):  # 4 keys per rank and epoch
        keys = [shard[4 * epoch:4 * epoch + 4] for shard in shards]
        assert all(e == epoch for shard in keys for e, _ in shard)
        assert not {i for _, i in keys[0]} & {i for _, i in keys[1]}
        order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
        assert [i for _, i in keys[0]] == order[0:8:2] and [i for _, i in keys[1]] == order[1:8:2]
    # the same (seed, epoch) gives the same order; another epoch reshuffles
    single = _take(EpochSampler(size, batch, seed), 20)
    assert [i for _, i in single[:10]] != [i for _, i in single[10:]]
    assert single == _take(EpochSampler(size, batch, seed), 20)


def test_epoch_sampler_start_drops_exactly_the_consumed_batches():
    full = _take(EpochSampler(10, 3, 0), 30)  # 3 batches per epoch
    for start in range(7):
        assert _take(EpochSampler(10, 3, 0, start=start), 30 - 3 * start) == full[3 * start:]
    ranked = [_take(EpochSampler(20, 2, 0, rank=r, world=2, start=2), 10) for r in range(2)]
    for rank in range(2):
        assert ranked[rank] == _take(EpochSampler(20, 2, 0, rank=rank, world=2), 14)[4:]


# --- checkpoints ----------------------------------------------------------------------------------------------------
META = DatasetMeta(name="m", tasks=["semseg", "depth"], classes={"semseg": ["a", "b", "c"]}, depth_range=(0.5, 4.0))


def test_weights_round_trip(tmp_path):
    config = load_config("demo", ["data.tasks=[semseg, depth]", "train.lr=0.01"])
    state = {"net.a": torch.arange(6, dtype=torch.float32).view(2, 3), "regularizer.b": torch.tensor([1, 2]),
             "net.c": torch.randn(4)[::2]}  # a non-contiguous view is saved too
    path = save_weights(tmp_path / "w.safetensors", state, config, META, 17, {"semseg": {"mIoU": 42.5}})
    weights = load_weights(path)
    assert weights.state.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(weights.state[key], value)
    assert weights.config == config
    assert weights.meta == META
    assert (weights.step, weights.metrics) == (17, {"semseg": {"mIoU": 42.5}})
    assert weights.has_regularizer
    no_reg = save_weights(tmp_path / "n.safetensors", {"net.a": state["net.a"]}, config, META, 0)
    assert not load_weights(no_reg).has_regularizer


def test_load_weights_errors(tmp_path):
    with pytest.raises(Mtl3dError, match="weights file not found: .*missing.safetensors"):
        load_weights(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\xff" * 64)
    with pytest.raises(Mtl3dError, match="corrupt.safetensors is not a readable safetensors weights file"):
        load_weights(corrupt)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(Mtl3dError, match="foreign.safetensors is not an mtl3d weights file"):
        load_weights(foreign)
    damaged = tmp_path / "damaged.safetensors"
    save_file({"w": torch.zeros(2)}, str(damaged), metadata={"format": "mtl3d-weights", "config": "{not json"})
    with pytest.raises(Mtl3dError, match="damaged.safetensors: unsupported or damaged mtl3d metadata"):
        load_weights(damaged)
    bad_config = tmp_path / "bad_config.safetensors"
    save_file({"w": torch.zeros(2)}, str(bad_config),
              metadata={"format": "mtl3d-weights", "config": json.dumps({"train": {"lrr": 1}}), "meta": "{}"})
    with pytest.raises(Mtl3dError, match="config in bad_config.safetensors: unknown key.*lrr"):
        load_weights(bad_config)


class _Pickled:
    """An arbitrary class: torch.load(weights_only=True) refuses to rebuild it."""


def test_state_round_trip_and_weights_only(tmp_path):
    state = {"step": 5, "model": {"w": torch.ones(2)}, "best": {"value": 1.5, "step": 4, "metric": "semseg/mIoU"},
             "ema": None}
    save_state(tmp_path / "s.pt", state)
    loaded = load_state(tmp_path / "s.pt")
    assert loaded["step"] == 5 and loaded["best"] == state["best"] and loaded["ema"] is None
    assert torch.equal(loaded["model"]["w"], torch.ones(2))
    torch.save({"step": 1, "payload": _Pickled()}, tmp_path / "evil.pt")
    with pytest.raises(Mtl3dError, match="cannot read training state .*evil.pt"):
        load_state(tmp_path / "evil.pt")
    with pytest.raises(Mtl3dError, match="training state not found"):
        load_state(tmp_path / "none.pt")


# --- a training run and what it writes --------------------------------------------------------------------------
def test_train_writes_run_outputs(reference_run, tiny_dataset):
    config = tiny_config(tiny_dataset, *RESUME_OVERRIDES)
    assert load_config(str(reference_run / "config.yaml")) == config
    records = _records(reference_run)
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 13))
    val = [r for r in records if r.get("split") == "val"]
    assert [r["step"] for r in val] == [12] and "semseg/mIoU" in val[0] and "edge/odsF" in val[0]
    first = records[0]
    assert {"lr", "loss", "semseg", "depth", "normals", "edge", "render/semseg", "render/depth"} <= set(first)
    terms = sum(v for k, v in first.items() if k not in ("step", "lr", "loss", "sec_per_step"))
    assert first["loss"] == pytest.approx(terms, rel=1e-5)  # the total is the sum of the logged terms
    lrs = [r["lr"] for r in records if "loss" in r]
    assert lrs[0] == pytest.approx(0.002 * (1 - 1 / 12) ** 0.9) and lrs[-1] == 0.0  # lr after each step
    csv_lines = (reference_run / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,semseg/mIoU") and csv_lines[1].startswith("12,") and len(csv_lines) == 2
    best = load_weights(reference_run / "weights" / "best.safetensors")
    last = load_weights(reference_run / "weights" / "last.safetensors")
    assert (best.step, last.step) == (12, 12)
    assert best.metrics["semseg"]["mIoU"] == pytest.approx(val[0]["semseg/mIoU"])
    assert best.config == config and best.has_regularizer
    assert load_state(reference_run / "weights" / "last.state.pt")["step"] == 12


def test_train_refuses_to_overwrite_and_resume_of_a_finished_run_is_a_no_op(reference_run, tiny_dataset):
    config = tiny_config(tiny_dataset, *RESUME_OVERRIDES)
    with pytest.raises(Mtl3dError, match="already holds a run; continue it with --resume"):
        train(config, reference_run)
    before = (reference_run / "metrics.jsonl").read_text()
    summary = train(config, reference_run, resume=True)
    assert summary["step"] == 12
    assert (reference_run / "metrics.jsonl").read_text() == before


def test_resume_without_a_checkpoint_is_an_error(tmp_path, tiny_dataset):
    with pytest.raises(Mtl3dError, match="training state not found"):
        train(tiny_config(tiny_dataset), tmp_path / "empty", resume=True)


def _objective_that(monkeypatch, at_call: int, action) -> None:
    """Make the training objective run `action(total)` on its forward number `at_call` (0-based)."""
    calls = [0]

    class Patched(train_module.Objective):
        def forward(self, batch):
            total, terms = super().forward(batch)
            if calls[0] == at_call:
                total = action(total)
            calls[0] += 1
            return total, terms

    monkeypatch.setattr(train_module, "Objective", Patched)


def test_non_finite_loss_stops_with_a_saved_checkpoint(tmp_path, tiny_dataset, monkeypatch):
    _objective_that(monkeypatch, 2, lambda total: total * float("nan"))
    run_dir = tmp_path / "nan"
    with pytest.raises(Mtl3dError, match="non-finite loss at step 2 .*lower train.lr"):
        train(tiny_config(tiny_dataset, "train.save_every=100"), run_dir)
    assert load_state(run_dir / "weights" / "last.state.pt")["step"] == 2  # the last good state: 2 steps done
    weights = load_weights(run_dir / "weights" / "last.safetensors")
    assert weights.step == 2
    assert all(torch.isfinite(v).all() for v in weights.state.values() if v.is_floating_point())
    # the bad batch's forward pass is not in the saved BatchNorm statistics: the state is that of the same run
    # stopped (Ctrl-C during its second step) after 2 steps
    monkeypatch.undo()
    _objective_that(monkeypatch, 1, lambda total: os.kill(os.getpid(), signal.SIGINT) or total)
    with pytest.raises(Mtl3dError, match="interrupted at step 2"):
        train(tiny_config(tiny_dataset, "train.save_every=100"), tmp_path / "two")
    two = load_weights(tmp_path / "two" / "weights" / "last.safetensors").state
    assert any("running_mean" in name for name in two)
    for name, value in two.items():
        assert torch.equal(weights.state[name], value), name


def test_training_environments_are_the_distinct_ones_of_every_start(tmp_path):
    cpu = {"device": "cpu", "cpu": "Some CPU", "cpu_capability": "AVX2", "threads": 2, "torch": "2.4.0",
           "numpy": "2.0.0", "python": "3.12.1"}
    other = {**cpu, "cpu_capability": "AVX512"}
    starts = [{"step": 0, **cpu}, {"step": 200, **other}, {"step": 400, **cpu}]
    (tmp_path / "environment.json").write_text(json.dumps({"starts": starts}))
    assert training_environments(tmp_path) == [cpu, other]
    assert training_environments(tmp_path / "none") == []
    (tmp_path / "environment.json").write_text('{"cpu": "no starts list"}')
    with pytest.raises(Mtl3dError, match="not an environment record"):
        training_environments(tmp_path)
    assert summarize(cpu) == "Some CPU (AVX2), 2 threads, torch 2.4.0"
    gpu = {**cpu, "device": "cuda", "gpu": "H200", "cuda": "13.0"}
    assert summarize(gpu) == "H200, CUDA 13.0, 2 threads, torch 2.4.0"
    assert describe(torch.device("cpu"))["torch"] == torch.__version__
    assert summarize({**cpu, "code": "0.1.0+a4abdd4"}) == "Some CPU (AVX2), 2 threads, torch 2.4.0, mtl3d 0.1.0+a4abdd4"


def test_code_version_names_the_checkouts_commit():
    """A run records the commit it trained at (the one its study table is a record of), when run from a checkout."""
    root = Path(mtl3dcli.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=7", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert re.fullmatch(rf"\d+\.\d+\.\d+\+{head}(\.dirty)?", code_version())


def test_huge_learning_rate_diverges_into_the_non_finite_stop(tmp_path, tiny_dataset):
    run_dir = tmp_path / "huge"
    with pytest.raises(Mtl3dError, match="non-finite loss"):
        train(tiny_config(tiny_dataset, "train.lr=1e30", "train.clip_grad=null", "train.steps=6"), run_dir)
    assert (run_dir / "weights" / "last.safetensors").is_file()
    assert (run_dir / "weights" / "last.state.pt").is_file()


def test_interrupt_saves_and_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_dataset, reference_run,
                                                                     monkeypatch, one_thread):
    """SIGINT during step 6 (0-based call 5): the step finishes, the loop stops before the next one and saves step
    6, and a resume continues with exactly the losses of the reference run and ends with its weights, BatchNorm
    statistics included (no forward pass of a step that was not applied is counted)."""

    def interrupt(total):
        os.kill(os.getpid(), signal.SIGINT)
        return total

    _objective_that(monkeypatch, 5, interrupt)
    run_dir = tmp_path / "interrupted"
    config = tiny_config(tiny_dataset, *RESUME_OVERRIDES)
    with pytest.raises(Mtl3dError, match=f"interrupted at step 6; .*--resume {run_dir}"):
        train(config, run_dir)
    assert load_state(run_dir / "weights" / "last.state.pt")["step"] == 6
    monkeypatch.undo()
    train(load_config(str(run_dir / "config.yaml")), run_dir, resume=True)
    _assert_same_losses(run_dir, reference_run, range(1, 13))
    final, reference = (load_state(run / "weights" / "last.state.pt")["model"] for run in (run_dir, reference_run))
    assert all(torch.equal(final[key], reference[key]) for key in reference)
    starts = json.loads((run_dir / "environment.json").read_text())["starts"]
    assert [s["step"] for s in starts] == [0, 6]  # the start and the resume, each with its environment
    assert training_environments(run_dir) == [describe(torch.device("cpu"))]


@pytest.mark.slow
def test_resume_after_kill_9_matches_the_uninterrupted_run(tmp_path, tiny_dataset, reference_run, one_thread):
    """`mtl3d train` in a subprocess is SIGKILLed once a checkpoint exists; resuming then reproduces the reference
    run's losses and learning rates for every later step (the last record of a step logged twice), and its final
    weights."""
    run_dir = tmp_path / "killed"
    sets = [f"--set={item}" for item in [*TINY_OVERRIDES, *RESUME_OVERRIDES]]
    command = [sys.executable, "-m", "mtl3dcli", "train", "--preset", "demo", "--data", str(tiny_dataset),
               "--out", str(run_dir), *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    state_file = run_dir / "weights" / "last.state.pt"
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, step = time.monotonic() + 90, 0
        while time.monotonic() < deadline and process.poll() is None:
            if state_file.is_file():
                try:
                    step = int(torch.load(state_file, weights_only=True)["step"])
                except Exception:  # replaced while reading: look again
                    step = 0
                if step >= 2:
                    break
            time.sleep(0.01)
        if process.poll() is not None:
            pytest.fail(f"the training subprocess exited ({process.returncode}) before it could be killed:\n"
                        f"{process.stderr.read().decode()[-3000:]}")
        if step < 2:
            pytest.fail("no checkpoint with step >= 2 appeared within 90 s")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    resumed_from = int(load_state(state_file)["step"])
    assert 2 <= resumed_from < 12, "killed after the run had finished: nothing left to resume"

    train(load_config(str(run_dir / "config.yaml")), run_dir, resume=True)
    _assert_same_losses(run_dir, reference_run, range(1, 13))  # before the kill (subprocess) and after it
    final, reference = (load_weights(r / "weights" / "last.safetensors") for r in (run_dir, reference_run))
    assert final.step == 12
    for key, value in reference.state.items():
        torch.testing.assert_close(final.state[key], value, rtol=1e-4, atol=1e-6)


# --- inference parity -------------------------------------------------------------------------------------------
def test_regularizer_adds_no_inference_parameters(tiny_dataset):
    config = tiny_config(tiny_dataset)
    meta = DatasetLayout(tiny_dataset).meta
    with_reg = build_model(config, meta)
    without = build_model(config, meta, with_regularizer=False)
    assert with_reg.regularizer is not None and without.regularizer is None
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(with_reg.net) == count(without.net)
    assert count(with_reg) > count(with_reg.net)  # the regularizer's parameters exist only while training
    noreg = build_model(tiny_config(tiny_dataset, preset="demo-noreg"), meta)
    assert noreg.regularizer is None and count(noreg) == count(without)


def test_inference_model_matches_the_training_model(tiny_weights):
    weights = load_weights(tiny_weights)
    assert weights.has_regularizer
    inference = model_from_weights(weights).eval()
    assert inference.regularizer is None
    assert not any(key.startswith("regularizer.") for key in inference.state_dict())
    training = build_model(weights.config, weights.meta, load_backbone_weights=False)
    training.load_state_dict(weights.state, strict=True)
    training.eval()
    image = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = inference(image).outputs, training.net(image).outputs
    assert set(got) == {"semseg", "depth", "normals", "edge"}
    for name in want:
        assert torch.equal(got[name], want[name]), name


def test_weights_that_do_not_fit_their_config_are_an_error(tiny_weights):
    weights = load_weights(tiny_weights)
    dropped = next(key for key in weights.state if key.startswith("net.heads."))
    del weights.state[dropped]
    with pytest.raises(Mtl3dError, match=f"weights do not fit the model they describe .*{dropped}"):
        model_from_weights(weights)


def test_render_views_model_needs_regularizer_weights(tmp_path, tiny_dataset):
    config = tiny_config(tiny_dataset, "regularizer.enabled=false")
    meta = DatasetLayout(tiny_dataset).meta
    path = save_weights(tmp_path / "noreg.safetensors", build_model(config, meta).state_dict(), config, meta, 0)
    weights = load_weights(path)
    assert not weights.has_regularizer
    assert model_from_weights(weights).regularizer is None
    with pytest.raises(Mtl3dError, match="these weights have no regularizer"):
        model_from_weights(weights, with_regularizer=True)
