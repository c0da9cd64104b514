"""The regularizer's own training work for one preset: projector, rendering, upsampling and rendered losses,
forward and backward, on fixed encoder features (the host's cost is left out, so this is far steadier than the
step-time ratio of train_step.py on a shared machine).

    python benchmarks/regularizer_step.py --preset hrnet18 --batch-size 2 [--set regularizer.decode=point]
                                          [--device cpu|cuda] [--steps 15]

Random images of the preset's training size go through the host once (no gradient) for the features; labels are
random (bench_data). The step is the training objective's own `rendered_losses` on the planes. Prints one JSON
object: median and minimum milliseconds per regularizer step, and `parts_ms`, the median forward + backward time of
each stage alone on fixed (detached) inputs: projector (features -> planes), render (planes -> maps), upsample
(maps -> label size) and losses. Each stage's backward takes fixed random gradients of its outputs' shapes, dense as
in a step: the gradient of a `.sum()` is one value broadcast (stride 0), on which the small resizes' matrix-product
backward runs over 10x slower (it made the demo's projector, which upsamples three coarse projections, read 9 ms
alone for 3.5 in a step). Timed directly, interleaved with the whole step: torch.profiler distorts these stages (on
CPU it reported the projector convolution's backward 10-20x slower than it runs unprofiled).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def leaf(maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached copies of the maps that take gradients: a stage's fixed inputs."""
    return {name: value.detach().requires_grad_() for name, value in maps.items()}


def total(maps: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(value.sum() for value in maps.values())


def dense_grads(maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fixed random output gradients for `backward`: dense like a step's, where a sum's is one value broadcast."""
    return {name: torch.randn_like(value) for name, value in maps.items()}


def backward(maps: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> None:
    torch.autograd.backward([maps[name] for name in grads], list(grads.values()))


def stages(args) -> tuple[dict, dict]:
    """The whole regularizer step and its four stages, as closures over one model and batch; and what was built."""
    from bench_data import bench_meta, fake_batch
    from mtl3dcli.config import load_config
    from mtl3dcli.cpu import tune_cpu_process
    from mtl3dcli.models.build import build_model, resolve_tasks
    from mtl3dcli.models.layers import upsample_maps
    from mtl3dcli.models.regularizer import rendered_losses

    overrides = ["regularizer.enabled=true", *args.set]
    if args.batch_size:
        overrides.append(f"data.batch_size={args.batch_size}")
    config = load_config(args.preset, overrides)
    tasks = resolve_tasks(config)
    device = torch.device(args.device)
    if device.type == "cpu":
        tune_cpu_process()
    torch.manual_seed(0)
    meta = bench_meta(tasks)
    model = build_model(config, meta, load_backbone_weights=False).to(device).train()
    size = tuple(config.data.size)
    batch = fake_batch(tasks, meta, config.data.batch_size, size, device)
    with torch.no_grad():
        host = model.net(batch["image"])
    features = host.features.requires_grad_()
    scales = None if host.scales is None else [x.requires_grad_() for x in host.scales]  # as the objective projects
    reg = model.regularizer
    camera = reg.view_camera(batch["K"], size)
    labels, valid = batch["labels"], batch["valid"]

    planes = reg.planes(features, scales).detach().requires_grad_()
    rendered = leaf(reg.render(planes, camera, stratified=True).tasks)
    upsampled = leaf(upsample_maps(rendered, size))
    grads = {"planes": dense_grads({"planes": planes}), "render": dense_grads(rendered),
             "upsample": dense_grads(upsampled)}
    runs = {
        "step": lambda: total(rendered_losses(reg, reg.planes(features, scales), camera, size, labels, valid,
                                              True)).backward(),
        "projector": lambda: backward({"planes": reg.planes(features, scales)}, grads["planes"]),
        "render": lambda: backward(reg.render(planes, camera, stratified=True).tasks, grads["render"]),
        "upsample": lambda: backward(upsample_maps(rendered, size), grads["upsample"]),
        "losses": lambda: total({t.name: t.loss(upsampled[t.name], labels[t.name], valid[t.name])
                                 for t in reg.tasks}).backward(),
    }
    built = {"batch_size": config.data.batch_size, "decode": config.regularizer.decode,
             "samples": config.regularizer.samples, "render_size": list(config.regularizer.render_size),
             "features": list(features.shape[1:])}
    return runs, built


def time_runs(runs: dict, warmup: int, steps: int, device: str) -> dict[str, list[float]]:
    """Milliseconds of every run, round-robin (each run sees the caches the others leave, as in a training step)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(warmup + steps):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    args = parser.parse_args()
    from mtl3dcli.environment import describe

    runs, built = stages(args)
    times = time_runs(runs, args.warmup, args.steps, args.device)
    print(json.dumps({"preset": args.preset, "device": args.device, "environment": describe(torch.device(args.device)),
                      "overrides": args.set, **built,
                      "ms_per_step_median": round(statistics.median(times["step"]), 1),
                      "ms_per_step_min": round(min(times["step"]), 1),
                      "parts_ms": {name: round(statistics.median(t), 1) for name, t in times.items()
                                   if name != "step"}}))


if __name__ == "__main__":
    main()
