"""Inference on the CPU through PyTorch and through ONNX Runtime: latency and peak memory per image, with the parity of
the export (`mtl3d export`'s own check, at the benchmark size).

    python benchmarks/inference_backends.py [--presets demo,hrnet18,mtinet-hrnet18-nyuv2] [--size 448x576]
                                            [--repeats 5] [--threads N] [--set key=value ...] [--parity-only]

Each preset's model is built with random weights, its BatchNorm statistics calibrated on random images (so the
outputs have a trained network's scale, not the thousands an uncalibrated deep stack gives: the 1e-4 parity is on
absolute differences), saved as weights and exported to ONNX at `--size` (fixed shape, batch 1). Each backend then
runs in its own process (`--measure`), the ONNX one without importing torch, as a deployment would, both with
denormals flushed to zero (`mtl3d predict`'s CPU settings, `cpu.tune_cpu_process`): the network alone on one
image, after one warm-up, `--repeats` times; the median latency, the process's resident memory once the model is
loaded and its peak while running (VmHWM, reset after loading) are reported. Both backends use `--threads` threads
(default: all; on a machine shared with other work, 1 thread gives steadier numbers: threads that wait for a
descheduled sibling make the median meaningless). The load average before and after is recorded with the numbers.
`--parity-only` exports and checks without timing (the big hosts).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    """Current resident memory of this process (Linux /proc), MB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> bool:
    """Restart the kernel's peak-resident-memory count (VmHWM) of this process, so the peak is the inference's and
    not the loading's; False where the kernel does not allow it (the peak then includes loading)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory since `reset_peak` (or since the start), MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(run, repeats: int) -> list[float]:
    run()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return times


def measure(backend: str, path: str, size: tuple[int, int], repeats: int, threads: int) -> dict:
    """Load the model with one backend in this process and time it on one random image."""
    import numpy as np

    image = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
    if backend == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.set_denormal_as_zero", "1")  # as tune_cpu_process for torch
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        loaded, reset = rss_mb(), reset_peak()
        times = timed(lambda: session.run(None, {"image": image}), repeats)
    else:
        import torch

        from mtl3dcli.cpu import tune_cpu_process
        from mtl3dcli.models.build import model_from_weights
        from mtl3dcli.weights import load_weights

        torch.set_num_threads(threads)
        tune_cpu_process()  # as `mtl3d predict` on the CPU: denormals flush to zero, freed memory kept
        net = model_from_weights(load_weights(path)).net.eval()
        tensor = torch.from_numpy(image)
        loaded, reset = rss_mb(), reset_peak()
        with torch.no_grad():
            times = timed(lambda: net(tensor), repeats)
    return {"median_ms": round(sorted(times)[len(times) // 2], 1), "min_ms": round(min(times), 1),
            "loaded_rss_mb": round(loaded, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
            "peak_is_inference_only": reset}


def calibrated_weights(preset: str, overrides: list[str], path: Path, size: tuple[int, int]) -> int:
    """Random weights of `preset` with BatchNorm statistics averaged over 4 random images; returns the parameter
    count of the inference network."""
    import torch

    from bench_data import bench_meta
    from mtl3dcli.config import load_config
    from mtl3dcli.models.build import build_model, resolve_tasks
    from mtl3dcli.weights import save_weights

    config = load_config(preset, ["model.pretrained=null", *overrides])
    meta = bench_meta(resolve_tasks(config), classes=40)
    torch.manual_seed(0)
    model = build_model(config, meta, load_backbone_weights=False)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the calibration passes
    model.net.train()
    with torch.no_grad():
        for seed in range(2):
            model.net(torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(seed)))
    save_weights(path, model.state_dict(), config, meta, 0)
    return sum(p.numel() for p in model.net.parameters())


def run_backend(backend: str, path: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--measure", backend, str(path), "--size", args.size, "--repeats",
               str(args.repeats), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}"))
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_preset(preset: str, args: argparse.Namespace, folder: Path) -> dict:
    from mtl3dcli.commands.export import run_export

    size = parse_size(args.size)
    weights = folder / f"{preset}.safetensors"
    params = calibrated_weights(preset, args.set, weights, size)
    start = time.perf_counter()
    summary = run_export(weights, folder / f"{preset}.onnx", size=size)
    export_s = time.perf_counter() - start
    result = {"params": params, "export_s": round(export_s, 1), "onnx_mb": round(summary["bytes"] / 2**20, 1),
              "max_abs_diff": {k: float(f"{v:.3g}") for k, v in summary["max_abs_diff"].items()}}
    if not args.parity_only:
        result["pytorch"] = run_backend("pytorch", weights, args)
        result["onnxruntime"] = run_backend("onnxruntime", folder / f"{preset}.onnx", args)
        result["speedup"] = round(result["pytorch"]["median_ms"] / result["onnxruntime"]["median_ms"], 2)
    return result


def parse_size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="demo,hrnet18,mtinet-hrnet18-nyuv2")
    parser.add_argument("--size", default="448x576")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--set", action="append", default=[], help="config override for every preset")
    parser.add_argument("--parity-only", action="store_true", help="export and check, no timing (big hosts)")
    parser.add_argument("--measure", nargs=2, metavar=("BACKEND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, parse_size(args.size), args.repeats, args.threads)))
        return

    import onnxruntime
    import torch

    from mtl3dcli.environment import describe

    report = {"benchmark": "inference_backends", "size": list(parse_size(args.size)), "batch": 1,
              "repeats": args.repeats, "threads": args.threads, "overrides": args.set,
              "load_average_before": [round(v, 2) for v in os.getloadavg()],
              "environment": {**describe(torch.device("cpu")), "onnxruntime": onnxruntime.__version__}}
    with tempfile.TemporaryDirectory() as tmp:
        report["models"] = {preset: bench_preset(preset, args, Path(tmp)) for preset in args.presets.split(",")}
    report["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
