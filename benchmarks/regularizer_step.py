"""The regularizer's own training work for one preset: projector, rendering, upsampling and rendered losses,
forward and backward, on fixed encoder features (the host's cost is left out, so this is far steadier than the
step-time ratio of train_step.py on a shared machine).

    python benchmarks/regularizer_step.py --preset hrnet18 --batch-size 2 [--set regularizer.decode=point]
                                          [--device cpu|cuda] [--steps 15]

Random images of the preset's training size go through the host once (no gradient) for the features; labels are
random (bench_data). Prints one JSON object: median and minimum milliseconds per regularizer step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    from bench_data import bench_meta, fake_batch
    from mtl3dcli.config import load_config
    from mtl3dcli.cpu import tune_cpu_process
    from mtl3dcli.models.build import build_model, resolve_tasks
    from mtl3dcli.models.layers import upsample_maps

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    args = parser.parse_args()

    overrides = ["regularizer.enabled=true", *args.set]
    if args.batch_size:
        overrides.append(f"data.batch_size={args.batch_size}")
    config = load_config(args.preset, overrides)
    tasks = resolve_tasks(config)
    meta = bench_meta(tasks)
    device = torch.device(args.device)
    if device.type == "cpu":
        tune_cpu_process()
    torch.manual_seed(0)
    model = build_model(config, meta, load_backbone_weights=False).to(device).train()
    size = tuple(config.data.size)
    batch = fake_batch(tasks, meta, config.data.batch_size, size, device)
    with torch.no_grad():
        features = model.net(batch["image"]).features
    features.requires_grad_()
    reg = model.regularizer

    def step() -> None:
        rendered = reg.render(reg.planes(features), reg.view_camera(batch["K"], size), stratified=True)
        up = upsample_maps(rendered.tasks, size)
        loss = sum(t.loss(up[t.name], batch["labels"][t.name], batch["valid"][t.name]) for t in reg.tasks)
        loss.backward()

    times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append((time.perf_counter() - start) * 1000)
    print(json.dumps({"preset": args.preset, "device": args.device, "threads": torch.get_num_threads(),
                      "batch_size": config.data.batch_size, "overrides": args.set,
                      "decode": config.regularizer.decode, "samples": config.regularizer.samples,
                      "render_size": list(config.regularizer.render_size),
                      "features": list(features.shape[1:]),
                      "ms_per_step_median": round(statistics.median(times), 1),
                      "ms_per_step_min": round(min(times), 1)}))


if __name__ == "__main__":
    main()
