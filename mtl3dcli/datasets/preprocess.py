"""`mtl3d preprocess`: fill in derivable labels in place, and optionally write a class-remapped or resized copy.

Idempotent: a task folder that exists is never recomputed, and a copy at `out` made earlier with the same options
is left alone, so a second run reports nothing to do.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mtl3dcli import fileio
from mtl3dcli.data.layout import DatasetLayout, LayoutWriter
from mtl3dcli.datasets.registry import ClassRemap
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.geometry import scale_intrinsics
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.progress import Advance
from mtl3dcli.tasks import TASKS, Task

def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB resize to (H, W): area averaging when shrinking (no aliasing), bilinear when enlarging."""
    shrink = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour (pixel-centre exact) resize of any label array (H, W) or (H, W, C) to (H', W')."""
    return cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def _all_ids(layout: DatasetLayout) -> list[str]:
    return list(dict.fromkeys(i for split in layout.splits() for i in layout.ids(split)))


def _derive_in_place(layout: DatasetLayout, task: Task, make, ids: list[str], progress: Advance | None) -> int:
    """Write task labels for all ids into a hidden folder, then move it into place and record it in meta.json."""
    root = layout.root
    tmp = fileio.make_temp_dir(root, f".{task.folder}.partial-")
    try:
        for done, sample_id in enumerate(ids, 1):
            task.write(task.path(tmp, sample_id), make(sample_id))
            if progress:
                progress(done, len(ids))
        os.replace(tmp / task.folder, root / task.folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if task.name not in layout.meta.tasks:
        layout.meta.tasks.append(task.name)
        fileio.write_json(root / "meta.json", layout.meta.to_json())
    return len(ids)


def derive_missing(layout: DatasetLayout, progress: Advance | None = None) -> tuple[dict[str, int], dict]:
    """Every task the dataset lacks whose registry entry has a `Derivation` with all its sources present
    (boundaries from segmentation, normals from depth and the intrinsics in cameras.json).

    Returns ({task: samples written}, {task: reason it was not derived}).
    """
    have = {task.name for task in layout.available_tasks()}
    ids = _all_ids(layout)
    done: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for task in TASKS.values():
        rule = task.derivation
        if task.name in have or rule is None or not set(rule.sources) <= have:
            continue
        missing = [i for i in ids if i not in layout.cameras] if rule.needs_intrinsics else []
        if missing:
            skipped[task.name] = f"no intrinsics in cameras.json for {len(missing)} sample(s), e.g. {missing[0]!r}"
            continue

        def make(sample_id: str, rule=rule) -> np.ndarray:
            labels = {name: TASKS[name].read(layout.label_path(TASKS[name], sample_id)) for name in rule.sources}
            return rule.compute(labels, layout.cameras[sample_id].K if rule.needs_intrinsics else None)

        done[task.name] = _derive_in_place(layout, task, make, ids, progress)
    return done, skipped


def default_output(root: Path, remap: ClassRemap | None, resize: tuple[int, int] | None) -> Path:
    suffix = "".join([(remap.suffix if remap else ""), (f"-{resize[0]}x{resize[1]}" if resize else "")])
    return root.with_name(root.name + suffix)


def write_copy(layout: DatasetLayout, out: Path, *, remap: ClassRemap | None, resize: tuple[int, int] | None,
               overwrite: bool,
               options: dict[str, Any], progress: Advance | None = None) -> Path:
    """A new dataset at `out` (atomic via LayoutWriter) with NYU40 -> 13 classes and/or every sample resized."""
    meta = layout.meta
    classes = dict(meta.classes)
    palettes = dict(meta.palettes)
    if remap is not None:
        have = len(classes.get(remap.task, []))
        if have != len(remap.lut):
            raise Mtl3dError(f"this class remap needs {len(remap.lut)} {remap.task} classes, {layout.root} has {have}")
        classes[remap.task] = list(remap.classes)
        palettes.pop(remap.task, None)
    tasks = layout.available_tasks()
    ids = _all_ids(layout)
    with LayoutWriter(out, overwrite=overwrite) as writer:
        for done, sample_id in enumerate(ids, 1):
            image_path = layout.image_path(sample_id)
            if resize is None:
                writer.add_image_file(sample_id, image_path)
            else:
                image = fileio.read_image(image_path)
                from_hw = image.shape[:2]
                writer.add_image(sample_id, resize_image(image, resize), suffix=image_path.suffix.lower())
            for task in tasks:
                source = layout.label_path(task, sample_id)
                if not Path(source).is_file():
                    continue
                remapped = remap is not None and task.name == remap.task
                if resize is None and not remapped:
                    target = Path(task.path(writer.tmp, sample_id))
                    fileio.copy_file(source, target)
                    continue
                label = task.read(source)
                if remapped:
                    label = remap.apply(label)
                if resize is not None:
                    label = resize_label(label, resize)  # nearest keeps class ids and unit vectors exact
                writer.add_label(task, sample_id, label)
            camera = layout.cameras.get(sample_id)
            if camera is not None:
                K = camera.K
                if resize is not None:
                    K = scale_intrinsics(K, from_hw, resize)
                writer.add_camera(sample_id, K, camera.pose, camera.scene)
            if progress:
                progress(done, len(ids))
        for split in layout.splits():
            writer.add_split(split, layout.ids(split))
        new_meta = DatasetMeta(name=meta.name + (remap.suffix if remap else ""), tasks=[t.name for t in tasks],
                               classes=classes, palettes=palettes, depth_range=meta.depth_range,
                               edge_max_dist=meta.edge_max_dist,
                               extra={**meta.extra, "preprocess": options})
        return writer.commit(new_meta)


def preprocess(root: str | os.PathLike, *, remap: ClassRemap | None = None, resize: tuple[int, int] | None = None,
               out: str | os.PathLike | None = None, overwrite: bool = False,
               progress: Advance | None = None) -> dict[str, Any]:
    """Derive missing labels in place, then (with a class `remap` or `resize`) write a converted copy to `out`.

    Returns a summary: {"root", "derived": {task: n}, "skipped": {task: reason}, "output": path or None,
    "nothing_to_do": bool}.
    """
    layout = DatasetLayout(root)
    if resize is not None and (len(resize) != 2 or min(resize) < 1):
        raise Mtl3dError(f"--resize must be HxW with positive sizes, got {resize}")
    derived, skipped = derive_missing(layout, progress)
    output = None
    wrote_copy = False
    if remap is not None or resize is not None:
        output = Path(out) if out is not None else default_output(layout.root, remap, resize)
        if output.resolve() == layout.root.resolve():
            raise Mtl3dError(f"--out must differ from the dataset itself ({output})")
        options = {"source": str(layout.root.resolve()), "remap": list(remap.classes) if remap else None,
                   "resize": list(resize) if resize is not None else None}
        existing = output / "meta.json"
        ours = existing.is_file() and fileio.read_json(existing).get("extra", {}).get("preprocess") == options
        if overwrite or not ours or derived:  # our own earlier copy is refreshed when its source gained labels
            write_copy(layout, output, remap=remap, resize=resize, overwrite=overwrite or ours, options=options,
                       progress=progress)
            wrote_copy = True
    return {"root": str(layout.root), "derived": derived, "skipped": skipped,
            "output": str(output) if output is not None else None,
            "nothing_to_do": not derived and not wrote_copy}
