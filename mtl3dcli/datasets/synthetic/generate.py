"""Writing the dataset: the options, per-scene random streams (scene and cameras apart, so intrinsics never
change a scene), rendering in worker processes, and the layout's files."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl3dcli.data.layout import LayoutWriter
from mtl3dcli.datasets.synthetic.cameras import DEFAULT_ARC_DEGREES, camera_poses, draw_intrinsics
from mtl3dcli.datasets.synthetic.raycast import render_view
from mtl3dcli.datasets.synthetic.rooms import make_scene
from mtl3dcli.datasets.synthetic.scene import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE
from mtl3dcli.derive import boundaries_from_segmentation
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.tasks import TASKS


GENERATOR_VERSION = 2  # 1: box rooms, +-25 degree arcs (before --fov-range); 2: this file


_SPLITS = ("train", "val")


FOV_LIMITS = (20.0, 120.0)  # allowed horizontal fields of view (degrees) for --fov-range


MAX_PRINCIPAL_JITTER = 0.2


@dataclass
class SyntheticOptions:
    train_scenes: int = 80
    val_scenes: int = 180  # 1,080 views: with 30 scenes, which scenes are scored widened every study interval
    views: int = 6
    height: int = 96
    width: int = 128
    seed: int = 0
    arc_degrees: float = DEFAULT_ARC_DEGREES  # yaw span of a scene's cameras around their look-at region
    fov_range: tuple[float, float] | None = None  # horizontal FoV drawn per view (degrees); None: NYUv2 intrinsics
    principal_jitter: float = 0.0  # principal point offset drawn per view, up to this fraction of width / height


def _scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Scene k of a split depends on (seed, split, k) only, so changing scene counts never changes other scenes."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLITS.index(split), index]))


def _camera_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The intrinsics of scene k's views: a stream of its own, so --fov-range changes only K (and the pixels)."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLITS.index(split), index, 1]))


def _render_scene(writer: LayoutWriter, options: SyntheticOptions, split: str, index: int,
                  scene_id: str) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """Generate one scene, write all its views through `writer`; return (id, K, pose, max depth) per view."""
    rng = _scene_rng(options.seed, split, index)
    scene, poses = camera_poses(make_scene(rng), options.views, rng, options.arc_degrees)
    Ks = draw_intrinsics(_camera_rng(options.seed, split, index), options.views, options.height, options.width,
                         options.fov_range, options.principal_jitter)
    written = []
    for view, (K, pose) in enumerate(zip(Ks, poses)):
        sample_id = f"{scene_id}_v{view:02d}"
        out = render_view(scene, K, pose, options.height, options.width, rng)
        writer.add_image(sample_id, out["image"])
        writer.add_label(TASKS["semseg"], sample_id, out["semseg"])
        writer.add_label(TASKS["depth"], sample_id, out["depth"])
        writer.add_label(TASKS["normals"], sample_id, out["normals"])
        writer.add_label(TASKS["edge"], sample_id, boundaries_from_segmentation(out["semseg"]))
        written.append((sample_id, K, pose, float(out["depth"].max())))
    return written


def parse_fov_range(text: str | None) -> tuple[float, float] | None:
    """'A-B' (or 'A' for a fixed field of view), horizontal degrees, -> (A, B); None or '' -> None."""
    if text is None or not text.strip():
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(?:-\s*(\d+(?:\.\d*)?)\s*)?", text)
    if match is None:
        raise Mtl3dError(f"--fov-range must be A-B (horizontal field of view in degrees, e.g. 50-80) or one "
                         f"number, got {text!r}")
    low = float(match.group(1))
    return low, float(match.group(2)) if match.group(2) is not None else low


def _check(options: SyntheticOptions) -> None:
    def fail(name: str, requirement: str) -> None:
        raise Mtl3dError(f"synthetic option {name} (--{name.replace('_', '-')}) must be {requirement}, got "
                         f"{getattr(options, name)!r}")

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    for name, low in (("train_scenes", 1), ("val_scenes", 0), ("views", 1), ("height", 16), ("width", 16),
                      ("seed", 0)):
        value = getattr(options, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            fail(name, f"an integer >= {low}")
    if options.views > 100:
        fail("views", "<= 100 (ids have two view digits)")
    if not number(options.arc_degrees) or not 0.0 <= options.arc_degrees <= 180.0:
        fail("arc_degrees", "a number of degrees in [0, 180]")
    fov = options.fov_range
    if fov is not None:
        low, high = FOV_LIMITS
        if not isinstance(fov, (tuple, list)) or len(fov) != 2 or not all(number(x) for x in fov):
            fail("fov_range", "two numbers A-B (horizontal field of view in degrees)")
        if not low <= fov[0] <= fov[1] <= high:
            fail("fov_range", f"A-B degrees with {low:g} <= A <= B <= {high:g}")
    if not number(options.principal_jitter) or not 0.0 <= options.principal_jitter <= MAX_PRINCIPAL_JITTER:
        fail("principal_jitter", f"a fraction of the image size in [0, {MAX_PRINCIPAL_JITTER:g}]")


def _record_views(writer: LayoutWriter, jobs: list[tuple[str, int]], results: Iterable[list[tuple]],
                  ids: dict[str, list[str]], total: int, progress: Callable[[int, int], None] | None) -> float:
    """Write the camera of every rendered view, in job order, and list its id under its split (in place); report
    progress per view. Returns the largest depth seen (0 when there are no views)."""
    max_depth = 0.0
    for (split, _), views in zip(jobs, results):
        for sample_id, K, pose, view_max in views:
            writer.add_camera(sample_id, K, pose, sample_id.split("_")[0])
            ids[split].append(sample_id)
            max_depth = max(max_depth, view_max)
            if progress is not None:
                progress(len(ids["train"]) + len(ids["val"]), total)
    return max_depth


def generate_synthetic(out: str | os.PathLike, options: SyntheticOptions = SyntheticOptions(), overwrite: bool = False,
                       progress: Callable[[int, int], None] | None = None, workers: int = 1) -> Path:
    """Generate the synthetic dataset into `out` (common layout, built atomically) and return its path.

    Scenes 0..train_scenes-1 form gt_sets/train.txt and the following val_scenes unseen scenes val.txt; ids are
    `s<scene:04d>_v<view:02d>`. Output files are byte-identical for equal options, whatever `workers` (processes
    rendering scenes in parallel). `progress(done, total)` is called after every written view.
    """
    _check(options)
    jobs = [(split, k) for split, count in zip(_SPLITS, (options.train_scenes, options.val_scenes))
            for k in range(count)]
    total = len(jobs) * options.views
    ids: dict[str, list[str]] = {split: [] for split in _SPLITS}
    with LayoutWriter(out, overwrite=overwrite) as writer:
        args = [(writer, options, split, k, f"s{n:04d}") for n, (split, k) in enumerate(jobs)]
        pool = ProcessPoolExecutor(workers) if workers > 1 and len(jobs) > 1 else None
        try:
            results = pool.map(_render_scene, *zip(*args)) if pool else (_render_scene(*a) for a in args)
            max_depth = _record_views(writer, jobs, results, ids, total, progress)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        for split in _SPLITS:
            if ids[split]:
                writer.add_split(split, ids[split])
        meta = DatasetMeta(name="synthetic", tasks=["semseg", "depth", "normals", "edge"],
                           classes={"semseg": list(SYNTHETIC_CLASSES)}, palettes={"semseg": SYNTHETIC_PALETTE},
                           depth_range=(0.0, float(math.ceil(max_depth))), edge_max_dist=0.011,
                           extra={"generator": dataclasses.asdict(options), "seed": options.seed,
                                  "generator_version": GENERATOR_VERSION, "intrinsics": _describe_intrinsics(options)})
        return writer.commit(meta)


def _describe_intrinsics(options: SyntheticOptions) -> str:
    if options.fov_range is None:
        text = "NYUv2 focal lengths scaled to the image size"
    else:
        text = (f"per view: horizontal field of view uniform in [{options.fov_range[0]:g}, {options.fov_range[1]:g}] "
                f"degrees, square pixels")
    if options.principal_jitter:
        text += f"; principal point within +-{options.principal_jitter:g} of the image size from the centre"
    return text + " (K per view in cameras.json)"
