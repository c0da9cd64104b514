"""Render throughput: forward + backward of tri-plane lookup + tiny MLP + volume rendering, as one JSON line.

Example: python benchmarks/render_throughput.py --batch 4 --height 56 --width 72 --samples 32 --device cuda
(56 x 72 is the paper's NYUv2 render size.)
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from mtl3dcli.render.rays import orthographic_rays
from mtl3dcli.render.triplane import sample_triplane, triplane_feature_dim
from mtl3dcli.render.volume import render_field


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--height", type=int, default=56)
    parser.add_argument("--width", type=int, default=72)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--plane-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--aggregation", default="sum")
    parser.add_argument("--chunk", type=int, default=None, help="rays per chunk (default: all at once)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    planes = torch.randn(args.batch, 3, args.channels, args.plane_size, args.plane_size, device=device,
                         requires_grad=True)
    out_channels = 3
    mlp = nn.Sequential(nn.Linear(triplane_feature_dim(args.channels, args.aggregation), args.hidden), nn.ReLU(),
                        nn.Linear(args.hidden, 1 + out_channels)).to(device)
    origins, directions = orthographic_rays(args.height, args.width, device=device)
    origins = origins.expand(args.batch, -1, -1)
    directions = directions.expand(args.batch, -1, -1)

    def field(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = mlp(sample_triplane(planes, points, args.aggregation))
        return nn.functional.softplus(out[..., 0]), out[..., 1:]

    def step() -> None:
        result = render_field(field, origins, directions, 0.0, 2.0, args.samples, stratified=True, chunk=args.chunk)
        loss = result["values"].square().mean() + result["depth"].mean()
        loss.backward()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.iters):
        step()
    sync()
    seconds = (time.perf_counter() - start) / args.iters
    rays = args.batch * args.height * args.width
    report = {
        "rays_per_s": round(rays / seconds, 1),
        "samples_per_s": round(rays * args.samples / seconds, 1),
        "ms_per_batch": round(seconds * 1000, 3),
        "rays": rays,
        "batch": args.batch, "height": args.height, "width": args.width, "samples": args.samples,
        "channels": args.channels, "plane_size": args.plane_size, "aggregation": args.aggregation,
        "chunk": args.chunk, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        report["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
