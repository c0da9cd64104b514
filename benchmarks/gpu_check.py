"""GPU readiness in one command: every host preset trains, evaluates, predicts and renders on the device.

    python benchmarks/gpu_check.py [--steps 30] [--timed-steps 10] [--presets hrnet18,...] [--out FILE.json]
    python benchmarks/gpu_check.py --device cpu --tiny      # the same checks at tiny sizes (tests/test_gpu_check.py)

For each preset (the paper's hosts on NYUv2 and one PASCAL-Context preset), with and without the regularizer, AMP
on, random initialization (no download): the real Trainer (`Trainer.fit`: DataLoader workers, pinned memory,
non-blocking copies, GradScaler, validation, checkpoints) runs --steps steps at the preset's input size and batch on
synthetic views stored at the dataset's size (benchmarks/bench_fixtures.py: NYUv2 480x640, PASCAL 512x512); then
--timed-steps more optimizer steps on one batch held on the device, timed with synchronization. Reported per run:
median step time (ms) of the timed steps and of the Trainer's own steps (those include waiting for data), peak
device memory of the timed steps and of the whole run (torch.cuda.max_memory_allocated), whether every loss was
finite; per preset the regularizer's step-time ratio. Then on the first preset's regularized weights: `mtl3d
evaluate --rendered`, `mtl3d predict` and `mtl3d render-views` on the device, and `torchrun --nproc-per-node 1 -m
mtl3dcli train` (a one-process group: NCCL on CUDA, gloo on the CPU). One JSON object goes to stdout (and --out);
"ok" says every check passed (exit code 0, else 1). Asking for CUDA where there is none: one `error:` line, exit 2.

--tiny shrinks everything to run in about a minute on a CPU: 64x64 inputs, batch 2, 1 + 1 steps, a small regularizer,
the big backbones swapped for small ones of the same family (HRNet-48 -> HRNet-18, ViT-L -> ViT-S), one thread.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from bench_fixtures import build_fixture
from mtl3dcli.cli import app
from mtl3dcli.config import Config, load_config
from mtl3dcli.data.loader import move_batch
from mtl3dcli.engine.trainer import Trainer
from mtl3dcli.environment import describe
from mtl3dcli.fileio import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"hrnet18": "nyuv2", "mtinet-hrnet18-nyuv2": "nyuv2", "mtinet-hrnet48-nyuv2": "nyuv2",
           "invpt-vitl-nyuv2": "nyuv2", "mtinet-hrnet18-pascal": "pascal"}
CHECK = ["model.pretrained=null", "train.amp=true", "eval.edge_thresholds=5", "train.log_every=1",
         "train.warmup_steps=0"]
TINY = ["data.size=[64, 64]", "data.eval_size=[64, 64]", "data.batch_size=2", "data.workers=0",
        "regularizer.plane_channels=4", "regularizer.render_size=[8, 8]", "regularizer.samples=8",
        "regularizer.density_hidden=8", "regularizer.task_hidden=8", "eval.edge_workers=1"]
TINY_BACKBONES = {"hrnet48": "hrnet18", "vit-l": "vit-s"}
TINY_FIXTURE = {"size": (48, 64), "scenes": 1, "views": 3}


def run_config(preset: str, data: Path, args: argparse.Namespace, regularizer: bool, steps: int) -> Config:
    """The preset as this check trains it (see CHECK, TINY), on `data`."""
    overrides = [*CHECK, f"data.root={data}", f"train.device={args.device}", f"train.steps={steps}",
                 f"train.eval_every={steps}", f"train.save_every={steps}",
                 f"regularizer.enabled={str(regularizer).lower()}", *(TINY if args.tiny else [])]
    config = load_config(preset, overrides)
    if args.tiny:
        config.model.backbone = TINY_BACKBONES.get(config.model.backbone, config.model.backbone)
    return config


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def train_run(config: Config, run_dir: Path, timed_steps: int) -> dict:
    """Trainer.fit, then `timed_steps` steps on one batch already on the device: times, memory, losses."""
    device = torch.device(config.train.device)
    reset_peak(device)
    start = time.perf_counter()
    trainer = Trainer(config, run_dir, console=Console(file=io.StringIO()))
    trainer.fit()
    fit_seconds, run_peak = time.perf_counter() - start, peak_mb(device)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records if "loss" in record]
    batch = move_batch(torch.utils.data.default_collate(
        [trainer.train_set[(0, i)] for i in range(config.data.batch_size)]), trainer.device)
    reset_peak(device)
    times = []
    for _ in range(timed_steps):
        synchronize(device)
        tick = time.perf_counter()
        total, _ = trainer.step(batch)
        losses.append(total.item())
        times.append(time.perf_counter() - tick)
    # DDP (a torchrun or srun launch) requires every trainable parameter to receive a gradient in every step
    no_grad = [name for name, p in trainer.model.named_parameters() if p.requires_grad and p.grad is None]
    del trainer
    return {"ms_per_step": round(statistics.median(times) * 1000, 1),
            "trainer_ms_per_step": round(statistics.median(r["sec_per_step"] for r in records if "loss" in r)
                                         * 1000, 1),
            "step_peak_mb": peak_mb(device), "run_peak_mb": run_peak, "finite_losses": all(map(math.isfinite, losses)),
            "steps": len(losses), "fit_s": round(fit_seconds, 1), "params_without_grad": no_grad[:5],
            "ok": all(map(math.isfinite, losses)) and not no_grad}


def check_preset(preset: str, data: Path, work: Path, args: argparse.Namespace) -> dict:
    """Both variants of one preset; a failure is recorded, not raised, so the other presets still run."""
    out = {}
    for variant, regularizer in (("reg", True), ("noreg", False)):
        config = run_config(preset, data, args, regularizer, args.steps)
        try:
            out[variant] = train_run(config, work / f"{preset}-{variant}", args.timed_steps)
        except Exception as exc:  # a check reports every failure and goes on
            out[variant] = {"ok": False, "error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"}
        gc.collect()
        if torch.device(args.device).type == "cuda":
            torch.cuda.empty_cache()
        print(f"{preset} {variant}: {out[variant]}", file=sys.stderr, flush=True)
    out["input"] = list(config.data.size)
    out["batch"] = config.data.batch_size
    out["backbone"] = config.model.backbone
    if out["reg"]["ok"] and out["noreg"]["ok"]:
        out["regularizer_overhead"] = round(out["reg"]["ms_per_step"] / out["noreg"]["ms_per_step"], 3)
    return out


def in_process(args: list[str], output: Path) -> dict:
    """A `mtl3d` command line run in this process (evaluate, predict, render-views): ok (it exited 0 and wrote
    `output`, a file or a non-empty folder), seconds, the error."""
    start = time.perf_counter()
    result = CliRunner().invoke(app, args)
    wrote = output.is_file() or (output.is_dir() and any(output.iterdir()))
    out = {"ok": result.exit_code == 0 and wrote, "seconds": round(time.perf_counter() - start, 1)}
    if result.exit_code == 0 and not wrote:
        out["error"] = f"exited 0 but wrote no {output.name}"
    elif result.exit_code != 0:
        exc = result.exception
        lines = [line.strip("│╭╮╰╯─ ") for line in result.output.splitlines()]  # a usage error comes in a box
        message = f"{type(exc).__name__}: {exc}" if exc is not None and not isinstance(exc, SystemExit) else \
            " ".join([line for line in lines if line][-2:]) or f"exit code {result.exit_code}"
        out["error"] = message[-500:]
    return out


def torchrun(config: Config, work: Path, threads: int | None) -> dict:
    """`torchrun --nproc-per-node 1 -m mtl3dcli train`: a one-process group (NCCL on CUDA, gloo on the CPU)."""
    config_file = work / "torchrun.yaml"
    write_text(config_file, yaml.safe_dump(config.to_dict(), sort_keys=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "500"}  # the Trainer's header on one line
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    line = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "mtl3dcli",
            "train", "--preset", str(config_file), "--out", str(work / "torchrun")]
    start = time.perf_counter()
    try:
        done = subprocess.run(line, env=env, cwd=work, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "timed out after 300 s"}
    group = re.search(r"device \S+ x1,", done.stdout + done.stderr) is not None  # the header: a group of one
    out = {"ok": done.returncode == 0 and group, "process_group": group,
           "seconds": round(time.perf_counter() - start, 1)}
    if done.returncode != 0:
        out["error"] = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1][-500:]
    return out


def check_commands(weights: Path, data: Path, work: Path, args: argparse.Namespace, preset: str) -> dict:
    """evaluate (with the rendered maps), predict and render-views on the device; torchrun with one process."""
    images = [str(path) for path in sorted((data / "images").iterdir())[:2]]
    config = run_config(preset, data, args, True, 2)
    device = ["--device", args.device]
    return {
        "evaluate": in_process(["evaluate", "--weights", str(weights), "--data", str(data), *device, "--rendered",
                                "--edge-thresholds", "5", "--limit", "4", "--workers", str(min(2, config.data.workers)),
                                "--out", str(work / "evaluate.json")], work / "evaluate.json"),
        "predict": in_process(["predict", *images, "--weights", str(weights), *device, "--out",
                               str(work / "predictions")], work / "predictions"),
        "render_views": in_process(["render-views", images[0], "--weights", str(weights), *device, "--frames", "4",
                                    "--out", str(work / "views")], work / "views"),
        "torchrun": torchrun(config, work, args.threads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (see the module doc): a CPU check in the tests")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma list of presets to train")
    parser.add_argument("--steps", type=int, default=None, help="Trainer steps per run (default 30, tiny 1)")
    parser.add_argument("--timed-steps", type=int, default=None, help="timed steps per run (default 10, tiny 1)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: torch's; tiny 1, "
                        "which a busy machine needs: threads waiting for descheduled partners spin)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    args.threads = args.threads or (1 if args.tiny else None)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.steps = args.steps or (1 if args.tiny else 30)
    args.timed_steps = args.timed_steps or (1 if args.tiny else 10)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {args.device}: CUDA is not available on this machine (torch {torch.__version__}, "
              f"built for CUDA {torch.version.cuda}); use --device cpu --tiny for the CPU check", file=sys.stderr)
        sys.exit(2)
    report = run_checks(args, device)
    print(json.dumps(report))
    if args.out is not None:
        write_json(args.out, report)
    sys.exit(0 if report["ok"] else 1)


def run_checks(args: argparse.Namespace, device: torch.device) -> dict:
    start = time.perf_counter()
    presets = args.presets.split(",")
    with tempfile.TemporaryDirectory(prefix="mtl3d-gpu-check-") as tmp:
        work = Path(tmp)
        fixture = TINY_FIXTURE if args.tiny else {"workers": min(8, os.cpu_count() or 1)}
        data = {kind: build_fixture(work / "data", kind, **fixture) for kind in {PRESETS[p] for p in presets}}
        results = {preset: check_preset(preset, data[PRESETS[preset]], work, args) for preset in presets}
        weights = work / f"{presets[0]}-reg" / "weights" / "last.safetensors"
        commands = check_commands(weights, data[PRESETS[presets[0]]], work, args, presets[0]) \
            if weights.is_file() else {"skipped": {"ok": False, "error": f"no weights from {presets[0]}"}}
    ok = all(run["ok"] for preset in results.values() for run in (preset["reg"], preset["noreg"])) and \
        all(check["ok"] for check in commands.values())
    return {"benchmark": "gpu_check", "ok": ok, "tiny": args.tiny, "steps": args.steps,
            "timed_steps": args.timed_steps, "presets": results, "commands": commands,
            "seconds": round(time.perf_counter() - start, 1), "environment": describe(device)}


if __name__ == "__main__":
    main()
