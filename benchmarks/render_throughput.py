"""Render throughput: forward + backward of tri-plane lookup + tiny MLP + volume rendering, as one JSON line.

Example: python benchmarks/render_throughput.py --batch 4 --height 56 --width 72 --samples 32 --device cuda
(56 x 72 is the paper's NYUv2 render size.) --camera orthographic | ndc (the pixel-aligned perspective camera) |
partner (the NDC camera seen from a moved pinhole: the general, unfactored path); --direct forces the per-sample
tri-plane lookup on grid-structured cameras.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from mtl3dcli.environment import describe
from mtl3dcli.render.cameras import NDCCamera, OrthographicCamera, PinholeCamera
from mtl3dcli.render.triplane import triplane_feature_dim, triplane_features
from mtl3dcli.render.volume import FieldOutput, render_field


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--height", type=int, default=56)
    parser.add_argument("--width", type=int, default=72)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--plane-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--aggregation", default="sum")
    parser.add_argument("--chunk", type=int, default=2048, help="rays per chunk, all images (regularizer.chunk)")
    parser.add_argument("--camera", default="orthographic", choices=["orthographic", "ndc", "partner"])
    parser.add_argument("--direct", action="store_true", help="per-sample tri-plane lookup (no factoring)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    return parser.parse_args()


def make_camera(args: argparse.Namespace, device: torch.device):
    """The benchmarked camera: orthographic, the NDC camera of a pinhole, or that NDC camera seen from a partner."""
    size = (args.height, args.width)
    if args.camera == "orthographic":
        return OrthographicCamera(0.5, 10.0)
    K = torch.tensor([[0.8 * args.width, 0.0, args.width / 2], [0.0, 0.8 * args.width, args.height / 2],
                      [0.0, 0.0, 1.0]], device=device).expand(args.batch, 3, 3)
    source = PinholeCamera(K, size, 0.5, 10.0)
    view = None
    if args.camera == "partner":
        moved = torch.eye(4, device=device).repeat(args.batch, 1, 1)
        moved[:, 0, 3] = 0.3  # 30 cm to the right
        view = PinholeCamera(K, size, 0.5, 10.0, moved)
    return NDCCamera(source, view)


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    planes = torch.randn(args.batch, 3, args.channels, args.plane_size, args.plane_size, device=device,
                         requires_grad=True)
    out_channels = 3
    mlp = nn.Sequential(nn.Linear(triplane_feature_dim(args.channels, args.aggregation), args.hidden), nn.ReLU(),
                        nn.Linear(args.hidden, 1 + out_channels)).to(device)
    size = (args.height, args.width)
    camera = make_camera(args, device)

    def field(samples) -> FieldOutput:
        out = mlp(triplane_features(planes, samples, args.aggregation))
        return FieldOutput(nn.functional.softplus(out[..., 0]), out[..., 1:])

    def step() -> None:
        result = render_field(field, camera, size, args.batch, args.samples, device=device, stratified=True,
                              chunk=args.chunk, factored=not args.direct)
        loss = result.values.square().mean() + result.depth.mean()
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
        "chunk": args.chunk, "camera": args.camera, "factored": not args.direct, "device": str(device),
        "environment": describe(device),
    }
    if device.type == "cuda":
        report["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
