"""Render throughput of the regularizer's real field: its tri-plane lookup, density and task MLPs and volume rendering
(`Regularizer.render`, the path training takes), forward + backward, as one JSON line.

Example: python benchmarks/render_throughput.py --batch 2 --height 56 --width 72 --samples 32 --device cuda
(56 x 72 is the paper's NYUv2 render size; the defaults are the hrnet18 preset's regularizer at batch 2.)
--camera orthographic (the paper's) | perspective (the pixel-aligned camera of a pinhole K) | partner (that camera
seen from a moved pinhole: the general, unfactored path); --decode ray | point; --plain times the plain per-sample
path (`regularizer.fused=false`). Planes are random (B, 3, C, Hp, Wp); the loss is a sum over every rendered map.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mtl3dcli.config import RegularizerConfig
from mtl3dcli.environment import describe
from mtl3dcli.models.build import build_regularizer
from mtl3dcli.tasks import parse_tasks


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--height", type=int, default=56)
    parser.add_argument("--width", type=int, default=72)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--channels", type=int, default=32, help="plane channels C")
    parser.add_argument("--plane-size", type=int, nargs=2, default=[56, 72], help="plane height and width")
    parser.add_argument("--density-hidden", type=int, default=64)
    parser.add_argument("--task-hidden", type=int, default=32)
    parser.add_argument("--decode", default="ray", choices=["ray", "point"])
    parser.add_argument("--aggregation", default="sum")
    parser.add_argument("--chunk", type=int, default=2048, help="rays per chunk, all images (regularizer.chunk)")
    parser.add_argument("--camera", default="orthographic", choices=["orthographic", "perspective", "partner"])
    parser.add_argument("--plain", action="store_true", help="the plain per-sample path (regularizer.fused=false)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    return parser.parse_args()


def build(args: argparse.Namespace, device: torch.device):
    """The regularizer (semseg with 13 classes, depth, normals, edge) and the camera it renders from."""
    config = RegularizerConfig(camera="orthographic" if args.camera == "orthographic" else "perspective",
                               plane_channels=args.channels, render_size=(args.height, args.width),
                               samples=args.samples, density_hidden=args.density_hidden, task_hidden=args.task_hidden,
                               aggregation=args.aggregation, decode=args.decode, chunk=args.chunk,
                               fused=not args.plain, near=0.5, far=10.0)
    tasks = parse_tasks(["semseg", "depth", "normals", "edge"])
    channels = {"semseg": 13, "depth": 1, "normals": 3, "edge": 1}
    reg = build_regularizer(config, 16, tasks, channels, (0.5, 10.0)).to(device).train()
    size = (args.height, args.width)
    K = torch.tensor([[0.8 * args.width, 0.0, args.width / 2], [0.0, 0.8 * args.width, args.height / 2],
                      [0.0, 0.0, 1.0]], device=device).expand(args.batch, 3, 3)
    if args.camera != "partner":
        return reg, reg.view_camera(K, size)
    moved = torch.eye(4, device=device).repeat(args.batch, 1, 1)
    moved[:, 0, 3] = 0.3  # 30 cm to the right
    return reg, reg.partner_camera(K, size, K, size, moved)


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    reg, camera = build(args, device)
    planes = torch.randn(args.batch, 3, args.channels, *args.plane_size, device=device, requires_grad=True)

    def step() -> None:
        rendered = reg.render(planes, camera, stratified=True)
        loss = sum(value.float().square().mean() for value in rendered.tasks.values())
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
        "channels": args.channels, "plane_size": list(args.plane_size), "density_hidden": args.density_hidden,
        "task_hidden": args.task_hidden, "decode": args.decode, "aggregation": args.aggregation,
        "chunk": args.chunk, "camera": args.camera, "path": "plain" if args.plain else "fused",
        "field": type(reg).__name__, "device": str(device), "environment": describe(device),
    }
    if device.type == "cuda":
        report["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
