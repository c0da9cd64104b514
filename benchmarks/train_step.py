"""Training step time and peak memory with and without the 3D-aware regularizer, for one preset and device.

    python benchmarks/train_step.py --preset demo [--device cpu|cuda] [--steps 30] [--batch-size N] [--threads N]

Uses random images and labels of the preset's training size (no dataset needed). The step-time ratio is measured in
one process: the preset's model with and without the regularizer (each built as its config builds it, with its own
optimizer) take alternate training steps, so both see the same machine state (a second process of the same code on
a VM differs by 10% or more, which is more than the effects measured here); medians over `--steps` steps each.
Peak memory comes from separate processes, one per variant and run, so the two are not shared. On CUDA it is
`torch.cuda.max_memory_allocated`: the bytes of live tensors. On CPU two figures: `peak_mb`, the peak resident size,
which varies by 5-10% between processes of the same code (allocator caching and thread timing), so it is the median of
`--memory-runs` processes (each process's figure kept under `memory_runs`), and `peak_tensor_mb`, the most bytes of
live tensors at once (what CUDA's figure counts), from the profiler's allocation records (`tensor_peak_mb`): the same
in every process of the same code, and free of the runtime's fixed few hundred MB, so its growth is the larger.
Prints one JSON object: per-variant wall ms/step, CPU ms/step (process time of all threads: steadier than wall time
on a shared machine) and peak MB, and the overheads (with / without - 1). On a busy machine, `--threads 1`
measures the work itself: with two threads a thread waiting for a descheduled partner spins and inflates both
clocks.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch


VARIANTS = ("noreg", "reg")


def build_step(args, variant: str):
    """A training step of the preset (the Trainer's objective, optimizer and AMP) with or without the regularizer on
    a fixed random batch; and its model."""
    from bench_data import bench_meta, fake_batch
    from mtl3dcli.config import load_config
    from mtl3dcli.engine.objective import Objective
    from mtl3dcli.engine.trainer import build_optimizer
    from mtl3dcli.models.build import build_model, resolve_tasks

    overrides = [f"regularizer.enabled={'true' if variant == 'reg' else 'false'}", *args.set]
    if args.batch_size:
        overrides.append(f"data.batch_size={args.batch_size}")
    config = load_config(args.preset, overrides)
    tasks = resolve_tasks(config)
    meta = bench_meta(tasks, args.classes)
    device = torch.device(args.device)
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
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step, model


def setup_process(args) -> None:
    from mtl3dcli.cpu import tune_cpu_process

    if args.device == "cpu":
        tune_cpu_process()  # as the Trainer does
    if args.threads:
        torch.set_num_threads(args.threads)


def peak_memory(args) -> dict:
    """This process (one variant): peak MB after warm-up steps, and the parameter counts."""
    setup_process(args)
    step, model = build_step(args, args.variant)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup + 2):
        step()
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return {"peak_mb": round(peak, 1), "params_total": sum(p.numel() for p in model.parameters()),
            "params_inference": sum(p.numel() for p in model.net.parameters())}


def tensor_peak_mb(run: Callable[[], object]) -> float:
    """The most MB of CPU tensors alive at once while `run` executes, from the profiler's allocation records: each
    carries the CPU allocator's running total of the bytes it handed out under the profiler and has not had back. With
    the model, the optimizer and the steps all made under the profiler, that total is every tensor's bytes.
    (torch's internal record API: the profiler's public tables give each operation's allocations, not the total.)"""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    peak, events = 0, list(prof.profiler.kineto_results.experimental_event_tree())
    while events:
        event = events.pop()
        events.extend(event.children)
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            peak = max(peak, event.extra_fields.total_allocated)
    return peak / 2**20


def tensor_memory(args) -> dict:
    """This process (one variant, CPU): `tensor_peak_mb` of building the step and taking the warm-up steps."""
    setup_process(args)

    def run() -> None:
        step, _ = build_step(args, args.variant)
        for _ in range(args.warmup + 2):
            step()

    return {"peak_tensor_mb": round(tensor_peak_mb(run), 1)}


def step_times(args) -> dict[str, dict[str, list[float]]]:
    """Both variants in this process, alternating step by step: wall and CPU milliseconds of every timed step."""
    setup_process(args)
    steps = {variant: build_step(args, variant)[0] for variant in VARIANTS}
    times = {variant: {"ms": [], "cpu_ms": []} for variant in VARIANTS}
    for i in range(args.warmup + args.steps):
        for variant, step in steps.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            if i >= args.warmup:
                times[variant]["ms"].append((time.perf_counter() - start) * 1000)
                times[variant]["cpu_ms"].append((time.process_time() - cpu_start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--classes", type=int, default=13)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--memory-runs", type=int, default=3, help="processes per variant for peak memory (median)")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--tensors", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(tensor_memory(args) if args.tensors else peak_memory(args)))
        return

    def measured(variant: str, *flags: str) -> dict:
        cmd = [sys.executable, __file__, "--variant", variant, *flags, *sys.argv[1:]]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    memory = {variant: [] for variant in VARIANTS}
    for _ in range(max(1, args.memory_runs)):
        for variant in VARIANTS:
            memory[variant].append(measured(variant))
    tensors = {variant: measured(variant, "--tensors") if args.device == "cpu" else {} for variant in VARIANTS}
    times = step_times(args)
    results = {variant: {"ms_per_step": round(statistics.median(times[variant]["ms"]), 2),
                         "cpu_ms_per_step": round(statistics.median(times[variant]["cpu_ms"]), 2),
                         **memory[variant][0],
                         "peak_mb": statistics.median(run["peak_mb"] for run in memory[variant]),
                         "memory_runs": [run["peak_mb"] for run in memory[variant]],
                         **tensors[variant]} for variant in VARIANTS}

    def overhead(key: str) -> float | None:
        if key not in results["noreg"]:
            return None
        return round(results["reg"][key] / results["noreg"][key] - 1.0, 4)

    from mtl3dcli.environment import describe

    print(json.dumps({"preset": args.preset, "device": args.device, "threads": args.threads or torch.get_num_threads(),
                      "environment": describe(torch.device(args.device)), "steps": args.steps,
                      "without_regularizer": results["noreg"], "with_regularizer": results["reg"],
                      "step_time_overhead": overhead("ms_per_step"),
                      "cpu_time_overhead": overhead("cpu_ms_per_step"), "peak_memory_growth": overhead("peak_mb"),
                      "peak_tensor_growth": overhead("peak_tensor_mb"),
                      "runs": {variant: {key: [round(t, 2) for t in values] for key, values in times[variant].items()}
                               for variant in VARIANTS}}))


if __name__ == "__main__":
    main()
