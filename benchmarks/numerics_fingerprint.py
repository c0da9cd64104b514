"""Fingerprints of the training numerics: a few steps of several regularizer settings through the real
`mtl3d train` path (data pipeline, Trainer, objective, optimizer) on a small generated synthetic set, and the
SHA-256 of each run's final model weights and of its logged training losses.

    python benchmarks/numerics_fingerprint.py [--steps 12] [--data DIR] [--settings demo,demo-point,...]

Run it before and after a change that should change no number (a refactor, an exact speed rewrite) on the same
machine: equal fingerprints mean the committed studies would reproduce at the new commit; a different one means the
change alters training numerics (even in the last bit, which 800 steps grow into seed-sized differences): the core
study (README's table) is rerun and the other study pages keep the commit they were made at
(docs/studies/README.md). The digests depend on the CPU's kernels, so compare them only within one machine
(`environment` says which). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from mtl3dcli.environment import describe
from mtl3dcli.models.regularizer import current_field_name

# name -> (preset, overrides): the regularizer's code paths that the committed studies train
SETTINGS = {
    "demo": ("demo", []),
    "demo-point": ("demo", ["regularizer.decode=point"]),
    "demo-noreg": ("demo-noreg", []),
    "demo-2d-control": ("demo", ["regularizer.kind=2d-control"]),
    "demo-crossview": ("demo-crossview", []),
    "demo-crossview-point": ("demo-crossview", ["regularizer.decode=point"]),
}


def mtl3d(*args: str) -> None:
    """Run an `mtl3d` command in a fresh process; its own error line on failure."""
    done = subprocess.run([sys.executable, "-m", "mtl3dcli", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"mtl3d {args[0]} failed: {done.stderr.strip().splitlines()[-1]}")


def fingerprint(run: Path) -> dict[str, str]:
    """SHA-256 of the model weights in weights/last.state.pt (names and bytes, sorted) and of the logged losses.
    The names are hashed as they are today (`current_field_name`: the regularizer field's layers had positional
    names before), so a digest compares across that rename."""
    state = torch.load(run / "weights" / "last.state.pt", map_location="cpu", weights_only=True)["model"]
    field = "regularizer.field."
    model = {field + current_field_name(k[len(field):]) if k.startswith(field) else k: v for k, v in state.items()}
    weights = hashlib.sha256()
    for name in sorted(model):
        weights.update(name.encode())
        weights.update(model[name].contiguous().numpy().tobytes())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [{k: v for k, v in r.items() if k != "sec_per_step"} for r in records if "split" not in r]
    return {"weights_sha256": weights.hexdigest(),
            "losses_sha256": hashlib.sha256(json.dumps(losses, sort_keys=True).encode()).hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--data", type=Path, default=None,
                        help="the small synthetic set: generated here if missing, reused if present (default: temp)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma list of: " + ", ".join(SETTINGS))
    args = parser.parse_args()
    names = [name for name in args.settings.split(",") if name]
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        sys.exit(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = args.data or root / "data"
        if not (data / "meta.json").is_file():
            mtl3d("download", "synthetic", "--train-scenes", "8", "--val-scenes", "2", "--out", str(data))
        digests = {}
        for name in names:
            preset, overrides = SETTINGS[name]
            run = root / "runs" / name
            sets = [arg for o in [f"train.save_every={args.steps}", "train.log_every=1", *overrides]
                    for arg in ("--set", o)]
            mtl3d("train", "--preset", preset, "--data", str(data), "--steps", str(args.steps), "--out", str(run),
                  *sets)
            digests[name] = fingerprint(run)
    print(json.dumps({"steps": args.steps, "environment": describe(torch.device("cpu")), "fingerprints": digests}))


if __name__ == "__main__":
    main()
