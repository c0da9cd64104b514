"""Kill -9 fault injection for tests/test_faults.py: a training run killed at random moments, resumed each time.

Usage: python tests/fault_driver.py DATA_ROOT OUT SEED KILLS [section.key=value ...]

Imports torch and the package once, then forks every `mtl3d train` it runs (so a start costs no import): the
uninterrupted reference run into OUT/reference, then KILLS rounds on OUT/killed, each resuming (`--resume`, or the
first command while no config.yaml exists) and SIGKILLed at a moment drawn from SEED: from outside after a random
delay, or from inside in the middle of an optimizer step, halfway through writing the training state or a weights
file, or inside a validation. A last resume finishes the run. Prints one JSON object: the rounds (mode, how the
child ended, the checkpoint step before it) and the tensor names whose final weights differ from the reference.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from mtl3dcli import cli
from mtl3dcli.commands import evaluate  # noqa: F401  (imported once here, not in every forked run)
from mtl3dcli.engine import checkpoint as checkpoint_module
from mtl3dcli.engine import trainer as trainer_module
from mtl3dcli.engine.checkpoint import load_state

# Modules a training run imports on first use, imported once here instead of in every forked run
WARM = ["torch._dynamo", "scipy.ndimage", "pyEdgeEval.preprocess", "PIL.PngImagePlugin", "torch.utils.tensorboard"]
MODES = ["timer"] * 4 + ["state-save"] * 2 + ["weights-save"] * 2 + ["step", "validation"]


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _half_then_die(write_all, handle_or_path) -> None:
    """Write the first half of what `write_all` would write, then die (a kill in the middle of a save)."""
    buffer = io.BytesIO()
    write_all(buffer)
    data = buffer.getvalue()
    if hasattr(handle_or_path, "write"):
        handle_or_path.write(data[: len(data) // 2])
        handle_or_path.flush()
    else:
        Path(handle_or_path).write_bytes(data[: len(data) // 2])
    _die()


def _arm(mode: str, nth: int) -> None:
    """In the child: SIGKILL itself at the `nth` occurrence of the event of `mode`."""
    calls = [0]

    def due() -> bool:
        calls[0] += 1
        return calls[0] == nth

    if mode == "state-save":
        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            if due():
                _half_then_die(lambda b: real_save(obj, b, *args, **kwargs), f)
            return real_save(obj, f, *args, **kwargs)

        checkpoint_module.torch.save = save
    elif mode == "weights-save":
        import safetensors.torch as st

        real_file, real_bytes = st.save_file, st.save

        def save_file(tensors, filename, metadata=None):
            if due():
                _half_then_die(lambda b: b.write(real_bytes(tensors, metadata=metadata)), filename)
            return real_file(tensors, filename, metadata=metadata)

        st.save_file = save_file
    else:
        _arm_call(mode, due)


def _arm_call(mode: str, due) -> None:
    """Kill inside the objective's forward pass (mid-step) or inside the Trainer's validation."""
    if mode == "step":
        real_forward = trainer_module.Objective.forward

        def forward(self, batch):
            result = real_forward(self, batch)
            if due():
                _die()
            return result

        trainer_module.Objective.forward = forward
    elif mode == "validation":
        real_validate = trainer_module.Trainer.validate

        def validate(self, final=False):
            if due():
                _die()
            return real_validate(self, final)

        trainer_module.Trainer.validate = validate


def run_child(argv: list[str], log: Path, mode: str | None = None, nth: int = 1) -> int:
    """Fork `mtl3d <argv>` (armed to kill itself for `mode`); returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        if mode is not None:
            _arm(mode, nth)
        sys.argv = ["mtl3d", *argv]
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os._exit(code)


def wait(pid: int, kill_after: float | None = None) -> str:
    """Wait for a child: "exit N" or "killed" (SIGKILLed, by itself or after `kill_after` seconds)."""
    if kill_after is not None:
        deadline = time.monotonic() + kill_after
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return _status(status)
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
    return _status(os.waitpid(pid, 0)[1])


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return "killed" if os.WTERMSIG(status) == signal.SIGKILL else f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


def checkpoint_step(run: Path) -> int:
    state = run / "weights" / "last.state.pt"
    return int(load_state(state)["step"]) if state.is_file() else 0


def one_round(rng: random.Random, mode: str, argv: list[str], log: Path, remaining: int, steps: int,
              seconds: float) -> str:
    """Run `argv` once, killed as `mode` says. A timer kill comes within the time the reference run (`seconds` for
    `steps`) took for min(6, `remaining`) steps' share of it, which is before the resumed run can finish."""
    if mode == "timer":
        return wait(run_child(argv, log), kill_after=rng.uniform(0.0, 0.8 * seconds * min(6, remaining) / steps))
    nth = 1 if mode == "validation" else rng.randint(1, min(2, remaining))
    return wait(run_child(argv, log, mode, nth))


def main(data: str, out: str, seed: int, kills: int, *overrides: str) -> dict:
    torch.set_num_threads(1)
    for name in WARM:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    os.umask(0o022)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = ["train", "--preset", "demo", "--data", data, *(f"--set={item}" for item in overrides)]
    start = time.monotonic()
    reference = wait(run_child([*first, "--out", str(out_dir / "reference")], out_dir / "reference.log"))
    seconds = time.monotonic() - start
    steps = int(load_state(out_dir / "reference" / "weights" / "last.state.pt")["step"])
    run, rng, rounds = out_dir / "killed", random.Random(seed), []
    modes = (MODES * (kills // len(MODES) + 1))[:kills]
    rng.shuffle(modes)
    for mode in modes:
        argv = ["train", "--resume", str(run)] if (run / "config.yaml").is_file() else [*first, "--out", str(run)]
        before = checkpoint_step(run)
        ended = one_round(rng, mode, argv, out_dir / f"round{len(rounds)}.log", steps - before, steps, seconds)
        rounds.append({"mode": mode, "ended": ended, "checkpoint_before": before})
    final = wait(run_child(["train", "--resume", str(run)], out_dir / "final.log"))
    want, got = (load_file(r / "weights" / "last.safetensors") for r in (out_dir / "reference", run))
    differ = sorted(k for k in want.keys() | got.keys() if k not in want or k not in got
                    or not torch.equal(want[k], got[k]))
    return {"seed": seed, "reference": reference, "reference_seconds": seconds, "rounds": rounds, "final": final,
            "differ": differ, "seconds": time.monotonic() - start}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:])))
