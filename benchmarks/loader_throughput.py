"""Input-pipeline throughput: samples/s of the real training pipeline (decode, the preset's augmentation, collate).

    python benchmarks/loader_throughput.py [--pipelines nyuv2-hrnet18,nyuv2-invpt,pascal-mtinet] [--workers 1,2]
                                           [--samples 48] [--repeats 3] [--fixtures DIR]

Fixtures (benchmarks/bench_fixtures.py; built once into --fixtures, or a temporary folder): synthetic scenes at the
real datasets' stored sizes, stored as the converters store them: NYUv2 480x640 (JPEG images), PASCAL-Context
512x512 (with human parts and saliency).

Measured, per pipeline (a preset's training transform on its dataset):
  process   one process, one thread, no DataLoader: `dataset[(epoch, index)]` for `--samples` keys of the Trainer's
            EpochSampler, then `default_collate` into the preset's batches. samples_per_cpu_s (samples per CPU second)
            is the rate of one DataLoader worker with a core to itself, and steadier than the wall clock on a busy
            machine; cache off (every read decodes) and warm cache (decoded samples kept, `data.cache`).
  loader    the Trainer's DataLoader (EpochSampler, the preset's batch size, persistent workers) with each --workers
            count: samples/s by the wall clock over the batches after the first (worker start-up excluded); for the
            cache the decoded samples are loaded before the workers fork, so they start warm.
  digest    SHA-256 of every tensor of the process pass's samples: equal digests before and after a change (on one
            machine) show the samples are equal to the last bit.
Each figure is the median of --repeats passes. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import PIL
import torch
from torch.utils.data import DataLoader, default_collate

from bench_fixtures import STORED_SIZES, build_fixture
from mtl3dcli.config import Config, load_config
from mtl3dcli.data.dataset import MultiTaskDataset
from mtl3dcli.data.loader import EpochSampler, close_loader
from mtl3dcli.data.transforms import train_transform
from mtl3dcli.environment import describe
from mtl3dcli.models.build import resolve_tasks

# pipeline -> (preset, fixture): the NYUv2 presets share two augmentations (MTL-PyTorch's and InvPT's)
PIPELINES = {"nyuv2-hrnet18": ("hrnet18", "nyuv2"), "nyuv2-invpt": ("invpt-vitl-nyuv2", "nyuv2"),
             "pascal-mtinet": ("mtinet-hrnet18-pascal", "pascal")}


def train_set(config: Config, root: Path, cache: bool) -> MultiTaskDataset:
    """The training split with the preset's augmentation, built as the Trainer builds it."""
    data = config.data
    return MultiTaskDataset(root, "train", resolve_tasks(config),
                            train_transform(data.size, data.scale, data.flip, data.jitter, data.rotate,
                                            data.crop_max_class), seed=config.train.seed, cache=cache)


def sample_digest(batch: dict, digest: hashlib._Hash) -> None:
    """Fold every tensor of a (nested) batch into `digest`, in key order."""
    for key in sorted(batch):
        value = batch[key]
        if isinstance(value, dict):
            sample_digest(value, digest)
        elif isinstance(value, torch.Tensor):
            digest.update(key.encode())
            digest.update(value.contiguous().numpy().tobytes())


def process_pass(dataset: MultiTaskDataset, keys: list[tuple[int, int]], batch_size: int) -> dict:
    """Load and collate `keys` in this process: CPU and wall seconds (the digest's own time left out), and the
    samples' digest."""
    digest = hashlib.sha256()
    wall = cpu = 0.0
    for first in range(0, len(keys), batch_size):
        start, cpu_start = time.perf_counter(), time.process_time()
        batch = default_collate([dataset[key] for key in keys[first:first + batch_size]])
        wall, cpu = wall + time.perf_counter() - start, cpu + time.process_time() - cpu_start
        sample_digest(batch, digest)
    return {"wall_s": wall, "cpu_s": cpu, "digest": digest.hexdigest()}


def measure_process(config: Config, root: Path, samples: int, repeats: int) -> dict:
    """Samples per CPU and per wall second in one thread, cache off and warm; the digest of the samples."""
    torch.set_num_threads(1)
    batch_size = config.data.batch_size
    out = {}
    for cache in (False, True):
        dataset = train_set(config, root, cache)
        keys = list(itertools.islice(EpochSampler(len(dataset), batch_size, config.train.seed), samples))
        if cache:
            process_pass(dataset, keys, batch_size)  # fills the cache
        passes = [process_pass(dataset, keys, batch_size) for _ in range(repeats)]
        out["cache" if cache else "no_cache"] = {
            "samples_per_cpu_s": round(samples / statistics.median(p["cpu_s"] for p in passes), 2),
            "samples_per_s": round(samples / statistics.median(p["wall_s"] for p in passes), 2),
            "ms_per_sample_cpu": round(statistics.median(p["cpu_s"] for p in passes) / samples * 1000, 2)}
        out["digest"] = passes[0]["digest"]
    return out


def loader_pass(dataset: MultiTaskDataset, config: Config, workers: int, batches: int) -> float:
    """Samples/s of the Trainer's DataLoader over `batches` batches after the first."""
    batch_size = config.data.batch_size
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=True,
                        sampler=EpochSampler(len(dataset), batch_size, config.train.seed), drop_last=True)
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    close_loader(loader)
    return batches * batch_size / seconds


def measure_loader(config: Config, root: Path, worker_counts: list[int], samples: int, repeats: int) -> dict:
    """{cache|no_cache: {workers: samples/s}}: medians of `repeats` DataLoader passes."""
    batches = max(1, samples // config.data.batch_size)
    out = {}
    for cache in (False, True):
        dataset = train_set(config, root, cache)
        if cache:
            for sample_id in dataset.ids:
                dataset.load(sample_id)  # workers fork with the decoded samples
        out["cache" if cache else "no_cache"] = {
            str(workers): round(statistics.median(loader_pass(dataset, config, workers, batches)
                                                  for _ in range(repeats)), 2) for workers in worker_counts}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help=f"comma list of {', '.join(PIPELINES)}")
    parser.add_argument("--workers", default="1,2", help="DataLoader worker counts to time (comma list)")
    parser.add_argument("--samples", type=int, default=48, help="samples per timed pass")
    parser.add_argument("--repeats", type=int, default=3, help="passes per figure (the median is reported)")
    parser.add_argument("--scenes", type=int, default=4, help="training scenes of 6 views in each fixture")
    parser.add_argument("--fixtures", type=Path, default=None, help="keep the fixtures here (built if missing)")
    parser.add_argument("--skip-loader", action="store_true", help="only the one-process figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mtl3d-loader-") as tmp:
        fixtures = args.fixtures or Path(tmp)
        results = {}
        for name in args.pipelines.split(","):
            preset, kind = PIPELINES[name]
            config = load_config(preset, [])
            root = build_fixture(fixtures, kind, scenes=args.scenes)
            results[name] = {"preset": preset, "stored_size": list(STORED_SIZES[kind]), "crop": list(config.data.size),
                             "batch_size": config.data.batch_size,
                             "process": measure_process(config, root, args.samples, args.repeats)}
            if not args.skip_loader:
                workers = [int(w) for w in args.workers.split(",")]
                results[name]["loader"] = measure_loader(config, root, workers, args.samples, args.repeats)
    print(json.dumps({"benchmark": "loader_throughput", "samples": args.samples, "repeats": args.repeats,
                      "pipelines": results, "load_average": [round(x, 2) for x in os.getloadavg()],
                      "environment": {**describe(torch.device("cpu")), "opencv": cv2.__version__,
                                      "pillow": PIL.__version__}}))


if __name__ == "__main__":
    main()
