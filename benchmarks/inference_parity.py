"""Inference cost of a regularized model vs its baseline: parameter count and latency of the inference graph.

    python benchmarks/inference_parity.py --preset demo [--device cpu|cuda] [--runs 30] [--set key=value ...]

Both models are built from the same preset (one with regularizer.enabled=true, one false) and exported the way
`mtl3d predict` loads them (model_from_weights keeps `net.*` only). `--set` overrides the preset, e.g. a reduced
input size for the big hosts on a CPU. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def inference_model(config, meta, enabled: bool, directory: Path):
    from mtl3dcli.weights import load_weights, save_weights
    from mtl3dcli.models.build import build_model, model_from_weights

    config.regularizer.enabled = enabled
    model = build_model(config, meta, load_backbone_weights=False)
    path = directory / f"{'reg' if enabled else 'noreg'}.safetensors"
    save_weights(path, model.state_dict(), config, meta, 0)
    return model, model_from_weights(load_weights(path))


def latencies_ms(nets: dict, image: torch.Tensor, runs: int) -> dict[str, float]:
    """Median latency per net; runs alternate between the nets so machine load affects both alike."""
    times: dict[str, list[float]] = {name: [] for name in nets}
    with torch.no_grad():
        for _ in range(3):
            for net in nets.values():
                net(image)
        for _ in range(runs):
            for name, net in nets.items():
                if image.is_cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                net(image)
                if image.is_cuda:
                    torch.cuda.synchronize()
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: sorted(values)[len(values) // 2] for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="config override, e.g. data.size=224x288")
    args = parser.parse_args()

    from bench_data import bench_meta

    from mtl3dcli.config import load_config
    from mtl3dcli.environment import describe
    from mtl3dcli.models.build import resolve_tasks

    config = load_config(args.preset, ["model.pretrained=null", *args.set])
    tasks = resolve_tasks(config)
    meta = bench_meta(tasks)
    device = torch.device(args.device)
    image = torch.rand(args.batch_size, 3, *(config.data.eval_size or config.data.size), device=device)
    with tempfile.TemporaryDirectory() as tmp:
        train_reg, infer_reg = inference_model(config, meta, True, Path(tmp))
        _, infer_base = inference_model(config, meta, False, Path(tmp))
    report = {"preset": args.preset, "overrides": args.set, "device": args.device, "environment": describe(device),
              "input": list(image.shape)}
    models = {"regularized": infer_reg, "baseline": infer_base}
    latency = latencies_ms({name: m.net.to(device).eval() for name, m in models.items()}, image, args.runs)
    for name, model in models.items():
        report[name] = {"params": sum(p.numel() for p in model.parameters()),
                        "has_regularizer": model.regularizer is not None,
                        "median_latency_ms": round(latency[name], 3)}
    report["regularizer_params_training_only"] = sum(p.numel() for p in train_reg.regularizer.parameters())
    report["same_params"] = report["regularized"]["params"] == report["baseline"]["params"]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
