"""Datasets for the benchmarks that read files: synthetic scenes (mtl3dcli.datasets.synthetic) stored as the real
datasets are, in the common layout the converters write for them.

    nyuv2   the image a quality-95 JPEG (as `mtl3d download nyuv2` copies the upstream JPEGs), normals with
            per-pixel noise (real normals come from noisy depth and compress no better than that)
    pascal  the same plus human parts and saliency shaped like the segmentation (three classes are the "people")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtl3dcli import fileio
from mtl3dcli.data.layout import DatasetLayout
from mtl3dcli.datasets.synthetic import SyntheticOptions, generate_synthetic
from mtl3dcli.tasks import TASKS

STORED_SIZES = {"nyuv2": (480, 640), "pascal": (512, 512)}  # the real datasets' stored image sizes
PARTS_CLASSES = 7  # PASCAL human parts: background + 6 parts
NORMAL_NOISE = 0.03  # standard deviation of the per-pixel perturbation of each normal component


def build_fixture(root: Path, kind: str, size: tuple[int, int] | None = None, scenes: int = 4, views: int = 6,
                  workers: int = 1) -> Path:
    """`scenes` training scenes and one validation scene of `views` views each, stored like `kind` at `size`
    (default: the real dataset's), in root/kind; kept and reused when it is already there."""
    out = root / kind
    if (out / "meta.json").is_file():
        return out
    height, width = size or STORED_SIZES[kind]
    generate_synthetic(out, SyntheticOptions(train_scenes=scenes, val_scenes=1, views=views, height=height,
                                             width=width), overwrite=True, workers=workers)
    layout = DatasetLayout(out)
    rng = np.random.default_rng(0)
    for sample_id in layout.ids("train") + layout.ids("val"):
        png = layout.image_path(sample_id)
        fileio.write_image(png.with_suffix(".jpg"), fileio.read_image(png))
        png.unlink()
        normals = TASKS["normals"]
        unit = normals.read(normals.path(out, sample_id))
        noisy = unit + rng.normal(0.0, NORMAL_NOISE, unit.shape).astype(np.float32) * (unit != 0)
        length = np.maximum(np.linalg.norm(noisy, axis=-1, keepdims=True), 1e-6)
        normals.write(normals.path(out, sample_id), noisy / length)
        if kind == "pascal":
            _add_pascal_labels(out, sample_id)
    if kind == "pascal":
        meta = fileio.read_json(out / "meta.json")
        meta["tasks"] += ["parts", "saliency"]
        meta["classes"]["parts"] = ["background", *(f"part{i}" for i in range(1, PARTS_CLASSES))]
        fileio.write_json(out / "meta.json", meta)
    return out


def _add_pascal_labels(root: Path, sample_id: str) -> None:
    seg = TASKS["semseg"].read(TASKS["semseg"].path(root, sample_id))
    people = np.isin(seg, (3, 6, 8))
    parts = np.where(people, 1 + seg % (PARTS_CLASSES - 1), 0).astype(np.uint8)
    TASKS["parts"].write(TASKS["parts"].path(root, sample_id), parts)
    TASKS["saliency"].write(TASKS["saliency"].path(root, sample_id), people.astype(np.float32))
