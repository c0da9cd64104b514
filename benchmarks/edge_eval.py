"""Boundary evaluation throughput (the hosts' protocol: NMS, 101 HED thresholds, thinning, maxDist 0.011), as one
JSON line: images/s and s/image through EdgeMeter with the default worker count, for three kinds of prediction:
trained-looking (ground truth blurred, sigma 2 px, plus uniform noise in [0, 0.1]), uniform noise (an untrained
model) and all-zero; cpu_s_per_image is the in-process CPU time of one image. It also scores demo-like 96x128
predictions with and without NMS, so the difference between the two protocols is known.

Example: python benchmarks/edge_eval.py --images 16 --size 480x640
(the machine's load average is printed too: on a shared machine, wall times follow it.)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from scipy import ndimage

from mtl3dcli.config import EvalConfig
from mtl3dcli.derive import boundaries_from_segmentation
from mtl3dcli.environment import describe
from mtl3dcli.metrics import EdgeMeter, image_boundary_counts


def scene(height: int, width: int, regions: int, seed: int) -> np.ndarray:
    """Ground-truth boundaries (bool) of a random Voronoi partition, 2 px thick like NYUD's."""
    rng = np.random.default_rng(seed)
    centres = rng.random((regions, 2)) * (height, width)
    rows, cols = np.mgrid[:height, :width]
    labels = ((rows[..., None] - centres[:, 0]) ** 2 + (cols[..., None] - centres[:, 1]) ** 2).argmin(-1)
    return boundaries_from_segmentation(labels) > 0


def prediction(kind: str, boundary: np.ndarray, seed: int, sigma: float = 2.0, noise: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000)
    if kind == "noise":
        return rng.random(boundary.shape)
    if kind == "zero":
        return np.zeros(boundary.shape)
    blurred = ndimage.gaussian_filter(boundary.astype(np.float64), sigma)
    return np.clip(blurred / blurred.max() + noise * rng.random(boundary.shape), 0.0, 1.0)


def batches(kind: str, count: int, height: int, width: int, batch: int):
    """(prediction, label, valid) tensors of `batch` images at a time; scene i uses seed i."""
    for start in range(0, count, batch):
        seeds = range(start, min(start + batch, count))
        labels = [scene(height, width, 40, s) for s in seeds]
        preds = [prediction(kind, b, s) for s, b in zip(seeds, labels)]
        yield (torch.from_numpy(np.stack(preds)).float()[:, None], torch.from_numpy(np.stack(labels)).float()[:, None],
               torch.ones(len(labels), height, width, dtype=torch.bool))


def throughput(kind: str, args: argparse.Namespace, workers: int) -> dict[str, float]:
    data = list(batches(kind, args.images, args.height, args.width, args.batch))  # made before the clock starts
    meter = EdgeMeter(max_dist=0.011, workers=workers)
    start = time.perf_counter()
    for batch in data:
        meter.update(*batch)
    scores = meter.compute()
    elapsed = time.perf_counter() - start
    pred, label, valid = data[0]
    cpu = time.process_time()
    image_boundary_counts(pred[0, 0].numpy(), label[0, 0].numpy() > 0.5, valid[0].numpy(), meter.thresholds, 0.011)
    return {"images_per_s": round(args.images / elapsed, 3), "s_per_image": round(elapsed / args.images, 3),
            "cpu_s_per_image": round(time.process_time() - cpu, 3), "odsF": round(scores["odsF"], 2)}


def demo_variants(count: int) -> dict[str, dict[str, float]]:
    """odsF / P / R of demo-like predictions (96x128, 10 regions, blur sigma 1.5, noise 0.3) with and without NMS."""
    results = {}
    for name, nms in (("nms", True), ("no_nms", False)):
        meter = EdgeMeter(max_dist=0.011, nms=nms)
        for s in range(count):
            boundary = scene(96, 128, 10, s)
            pred = prediction("trained", boundary, s, sigma=1.5, noise=0.3)
            meter.update(torch.from_numpy(pred).float()[None, None], torch.from_numpy(boundary).float()[None, None],
                         torch.ones(1, 96, 128, dtype=torch.bool))
        scores = meter.compute()
        results[name] = {key: round(scores[key], 2) for key in ("odsF", "odsP", "odsR", "ods_threshold")}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="images per kind")
    parser.add_argument("--size", default="480x640", help="HxW of the predictions")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: the evaluate default)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--kinds", default="trained,noise,zero")
    parser.add_argument("--demo-images", type=int, default=8, help="demo-like images for the NMS comparison (0: skip)")
    args = parser.parse_args()
    args.height, args.width = (int(v) for v in args.size.lower().split("x"))
    workers = EvalConfig().metric_options()["edge_workers"] if args.workers is None else args.workers

    for warm_workers in sorted({0, workers}):  # imports, and the forkserver that preloads them, before any clock
        warm = EdgeMeter(max_dist=0.011, workers=warm_workers)
        warm.update(*next(batches("noise", 1, 32, 32, 1)))
        warm.compute()
    result = {"benchmark": "edge_eval", "size": args.size, "images": args.images, "workers": workers,
              "protocol": EdgeMeter(max_dist=0.011).protocol,
              "kinds": {kind: throughput(kind, args, workers) for kind in args.kinds.split(",")}}
    if args.demo_images:
        result["demo_96x128"] = demo_variants(args.demo_images)
    result.update(cpus=os.cpu_count(), load_average=round(os.getloadavg()[0], 2),
                  environment=describe(torch.device("cpu")))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
