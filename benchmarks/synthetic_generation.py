"""Benchmark: synthetic dataset generation throughput (scene building + ray casting + labels + file writing).

Prints one JSON line: {"views": N, "height": H, "width": W, "workers": P, "seconds": s, "views_per_s": r,
"cpu_seconds": c, "runs": [...], "environment": {...}}; with --repeats > 1, seconds and cpu_seconds are medians
over the runs.
cpu_seconds (this process and its workers) is the figure to compare on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mtl3dcli.datasets.synthetic import SyntheticOptions, generate_synthetic, parse_fov_range
from mtl3dcli.environment import describe


def _generate(out: Path, options: SyntheticOptions, workers: int) -> tuple[float, float]:
    """Wall and CPU seconds of one generation into `out`."""
    start, cpu_start = time.perf_counter(), os.times()
    generate_synthetic(out, options, overwrite=True, workers=workers)
    seconds, cpu_end = time.perf_counter() - start, os.times()
    cpu = sum(getattr(cpu_end, k) - getattr(cpu_start, k) for k in ("user", "system", "children_user",
                                                                     "children_system"))
    return seconds, cpu


def main() -> None:
    defaults = SyntheticOptions()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views-total", type=int, default=1000, help="views to generate (train scenes * views)")
    parser.add_argument("--views", type=int, default=defaults.views, help="views per scene")
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--arc-degrees", type=float, default=defaults.arc_degrees)
    parser.add_argument("--fov-range", default=None, help="A-B degrees: random intrinsics per view")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes")
    parser.add_argument("--repeats", type=int, default=1, help="runs; the medians are reported")
    parser.add_argument("--out", default=None, help="output folder (default: a temporary folder, removed after)")
    args = parser.parse_args()

    options = SyntheticOptions(train_scenes=math.ceil(args.views_total / args.views), val_scenes=0,
                               views=args.views, height=args.height, width=args.width, arc_degrees=args.arc_degrees,
                               fov_range=parse_fov_range(args.fov_range))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "synthetic"
        for _ in range(max(1, args.repeats)):
            runs.append(_generate(out, options, args.workers))
    seconds = statistics.median(run[0] for run in runs)
    cpu = statistics.median(run[1] for run in runs)
    views = options.train_scenes * options.views
    print(json.dumps({"views": views, "height": args.height, "width": args.width, "workers": args.workers,
                      "seconds": round(seconds, 3), "views_per_s": round(views / seconds, 1),
                      "cpu_seconds": round(cpu, 3),
                      "runs": [{"seconds": round(s, 3), "cpu_seconds": round(c, 3)} for s, c in runs],
                      "environment": describe(torch.device("cpu"))}))


if __name__ == "__main__":
    main()
