"""The dataset registry: every dataset `mtl3d download` can prepare, where it comes from, and its class remaps.

The CLI (`download`, `preprocess`), the downloader and the converters read this table; nothing else lists datasets.
It imports nothing heavy (converters and the generator load on use), so the CLI can read it for `--help`.

    synthetic        procedural multi-view indoor scenes, generated locally (no network), cameras for every view
    nyuv2            NYUD_MT (795 / 654 images, 40 classes, depth, normals, boundaries), the MTI-Net / InvPT archive
    pascal-context   PASCAL_MT (4,998 / 5,105 images; semseg 21, human parts, saliency, normals, boundaries)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtl3dcli.datasets.download import Converter, Log, Source, download_dataset
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.meta import IGNORE_INDEX
from mtl3dcli.progress import ProgressFactory, stage

if TYPE_CHECKING:
    import numpy as np

    from mtl3dcli.datasets.synthetic import SyntheticOptions


@dataclass(frozen=True)
class ClassRemap:
    """A many-to-one map of a class task's train ids: old id i becomes lut[i]; ignore (255) stays ignore."""

    task: str
    classes: tuple[str, ...]  # the new class names, by new train id
    lut: tuple[int, ...]  # new train id per old train id
    suffix: str  # appended to the dataset's name and folder of a remapped copy

    def apply(self, label: np.ndarray) -> np.ndarray:
        """uint8 (H, W) old train ids -> new train ids; ids outside the table become ignore."""
        import numpy as np

        table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        table[:len(self.lut)] = self.lut
        return table[np.asarray(label, dtype=np.uint8)]


# NYU40 train id (0..39) -> NYU13 train id (0..12): the class13Mapping of the 13-class benchmark (Couprie et al.
# 2013; ankurhanda/nyuv2-meta-data), 1-based labels shifted to 0-based ids.
NYU13 = ClassRemap(
    task="semseg",
    classes=("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table", "tv",
             "wall", "window"),
    lut=(11, 4, 5, 0, 3, 8, 9, 11, 12, 5, 7, 5, 12, 9, 5, 12, 5, 6, 6, 4, 6, 2, 1, 5, 10, 6, 6, 6, 6, 6, 6, 5, 6, 6,
         6, 6, 6, 6, 5, 6),
    suffix="-13",
)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: `source` is its upstream archive and `convert` turns the extracted archive into the common
    layout; a dataset without a source is generated locally (the synthetic scenes)."""

    name: str
    description: str
    source: Source | None = None
    convert: Converter | None = None
    remaps: Mapping[str, ClassRemap] = field(default_factory=dict)


def _converter(name: str) -> Converter:
    """mtl3dcli.datasets.convert.<name>, imported when first called (it pulls in torch, OpenCV and SciPy)."""
    def convert(*args: Any, **kwargs: Any) -> Path:
        return getattr(importlib.import_module("mtl3dcli.datasets.convert"), name)(*args, **kwargs)

    return convert


DATASETS: dict[str, DatasetSpec] = {
    "synthetic": DatasetSpec("synthetic", "procedural multi-view indoor scenes, generated locally"),
    "nyuv2": DatasetSpec(
        "nyuv2", "NYUv2 as NYUD_MT (MTI-Net / ATRC / InvPT): 40 classes, depth, normals, boundaries",
        source=Source(
            name="nyuv2",
            filename="NYUD_MT.tgz",
            # The Google Drive file that Multi-Task-Learning-PyTorch (HEAD), ATRC and InvPT download as NYUD_MT.tgz;
            # the usercontent endpoint with confirm=t skips the virus-scan page for large files.
            urls=("https://drive.usercontent.google.com/download?id=14EAEMXmd3zs2hIMY63UhHPSFPDAkiTzw"
                  "&export=download&confirm=t",),
            env_var="MTL3D_NYUV2_URL",
            archive_root="NYUD_MT",
            marker="gt_sets",
            size=4_215_751_725,
            sha256="33338d895404a9144a2c6892a8b0d6d5c26b02021f945b12e36c431fb369fcb2",
            provenance="Google Drive id 14EAEMXmd3zs2hIMY63UhHPSFPDAkiTzw (SimonVandenhende/Multi-Task-Learning-PyTorch "
                       "data/nyud.py); size and sha256 as pinned by a third party (thanh1912-ut/Replite notebook)",
        ),
        convert=_converter("convert_nyud"), remaps={"nyu13": NYU13}),
    "pascal-context": DatasetSpec(
        "pascal-context", "PASCAL-Context as PASCAL_MT: semseg 21, human parts, saliency, normals, boundaries",
        source=Source(
            name="pascal-context",
            filename="PASCAL_MT.tgz",
            urls=("https://data.vision.ee.ethz.ch/kmaninis/share/MTL/PASCAL_MT.tgz",),
            env_var="MTL3D_PASCAL_URL",
            archive_root="PASCAL_MT",
            marker="ImageSets",
            provenance="URL from Multi-Task-Learning-PyTorch data/pascal_context.py and ATRC; no published digest",
        ),
        convert=_converter("convert_pascal")),
}


REMAPS: dict[str, ClassRemap] = {name: remap for spec in DATASETS.values() for name, remap in spec.remaps.items()}


def get_dataset(name: str) -> DatasetSpec:
    key = name.strip().lower()
    if key not in DATASETS:
        raise Mtl3dError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[key]


def prepare_dataset(name: str, out: str | os.PathLike, *, url: str | None = None, overwrite: bool = False,
                    keep_archive: bool = False, progress: ProgressFactory | None = None, log: Log | None = None,
                    synthetic: SyntheticOptions | None = None, workers: int = 1) -> Path:
    """Create dataset `name` in the common layout at `out`: download and convert its archive, or generate it
    (with `synthetic` options in `workers` processes). Returns the dataset root."""
    spec = get_dataset(name)
    if spec.source is None:
        from mtl3dcli.datasets.synthetic import SyntheticOptions, generate_synthetic

        with stage(progress, "generating") as advance:
            return generate_synthetic(out, synthetic or SyntheticOptions(), overwrite=overwrite, progress=advance,
                                      workers=workers)
    return download_dataset(spec.source, spec.convert, out, url=url, overwrite=overwrite, keep_archive=keep_archive,
                            progress=progress, log=log)
