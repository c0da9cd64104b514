"""Training step time and peak memory with and without the 3D-aware regularizer, for one preset and device.

    python benchmarks/train_step.py --preset demo [--device cpu|cuda] [--steps 20] [--batch-size N] [--threads N]

Uses random images and labels of the preset's training size (no dataset needed). Each variant runs in its own
process so peak memory is not shared; the variants alternate `--repeats` times and medians are reported. Prints one
JSON object: per-variant wall ms/step, CPU ms/step (process time of all threads: far steadier than wall time on a
shared machine) and peak MB, and the overheads (with / without - 1). On a busy machine, `--threads 1` measures the
work itself: with two threads a thread waiting for a descheduled partner spins and inflates both clocks.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def run_variant(args) -> dict:
    from bench_data import bench_meta, fake_batch
    from mtl3dcli.config import load_config
    from mtl3dcli.cpu import tune_cpu_process
    from mtl3dcli.engine.objective import Objective
    from mtl3dcli.engine.trainer import build_optimizer
    from mtl3dcli.models.build import build_model, resolve_tasks

    overrides = [f"regularizer.enabled={'true' if args.variant == 'reg' else 'false'}", *args.set]
    if args.batch_size:
        overrides.append(f"data.batch_size={args.batch_size}")
    config = load_config(args.preset, overrides)
    tasks = resolve_tasks(config)
    meta = bench_meta(tasks, args.classes)
    device = torch.device(args.device)
    if device.type == "cpu":
        tune_cpu_process()  # as the Trainer does
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(config, meta, load_backbone_weights=False).to(device)
    objective = Objective(model, config).to(device).train()
    optimizer = build_optimizer(model, config.train)
    batch = fake_batch(tasks, meta, config.data.batch_size, tuple(config.data.size), device)
    amp = device.type == "cuda" and config.train.amp
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    def step():
        with torch.autocast(device_type=device.type, enabled=amp):
            total, _ = objective(batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    ms = (time.perf_counter() - start) / args.steps * 1000
    cpu_ms = (time.process_time() - cpu_start) / args.steps * 1000
    return {"ms_per_step": round(ms, 2), "cpu_ms_per_step": round(cpu_ms, 2), "peak_mb": round(peak, 1),
            "params_total": sum(p.numel() for p in model.parameters()),
            "params_inference": sum(p.numel() for p in model.net.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--classes", type=int, default=13)
    parser.add_argument("--repeats", type=int, default=3, help="processes per variant (medians are reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    parser.add_argument("--variant", choices=["reg", "noreg"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    runs: dict[str, list[dict]] = {"noreg": [], "reg": []}
    for _ in range(args.repeats):  # alternate the variants so machine load affects both alike; report medians
        for variant in ("noreg", "reg"):
            cmd = [sys.executable, __file__, "--variant", variant, *sys.argv[1:]]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[variant].append(json.loads(out.strip().splitlines()[-1]))
    results = {variant: {**values[0], **{key: sorted(v[key] for v in values)[len(values) // 2]
                                          for key in ("ms_per_step", "cpu_ms_per_step", "peak_mb")}}
               for variant, values in runs.items()}

    def overhead(key: str) -> float:
        return round(results["reg"][key] / results["noreg"][key] - 1.0, 4)

    from mtl3dcli.environment import describe

    print(json.dumps({"preset": args.preset, "device": args.device, "threads": args.threads or torch.get_num_threads(),
                      "environment": describe(torch.device(args.device)), "repeats": args.repeats,
                      "without_regularizer": results["noreg"], "with_regularizer": results["reg"],
                      "step_time_overhead": overhead("ms_per_step"),
                      "cpu_time_overhead": overhead("cpu_ms_per_step"), "peak_memory_growth": overhead("peak_mb"),
                      "runs": {variant: {key: [v[key] for v in values] for key in ("ms_per_step", "cpu_ms_per_step")}
                               for variant, values in runs.items()}}))


if __name__ == "__main__":
    main()
