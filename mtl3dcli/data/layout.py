"""The common on-disk dataset layout (DESIGN.md) that every dataset is prepared into, and one reader/writer.

    <root>/images/<id>.png|jpg        RGB
    <root>/<task.folder>/<id><suffix>  labels, format per task (see mtl3dcli.tasks)
    <root>/gt_sets/<split>.txt         one id per line
    <root>/cameras.json                optional: {id: {"K": 3x3, "pose": 4x4 camera-to-world, "scene": str}}
    <root>/meta.json                   DatasetMeta
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtl3dcli import fileio
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.tasks import TASKS, Task, get_task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class SampleCamera:
    """One sample's entry of cameras.json: intrinsics, pose and the scene it was taken in."""

    K: np.ndarray  # (3, 3) float64 intrinsics for the stored image size
    pose: np.ndarray  # (4, 4) float64 camera-to-world
    scene: str


class DatasetLayout:
    """Read access to one dataset root. Cheap to construct: files are only checked when used."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise Mtl3dError(f"dataset not found: {self.root} (run `mtl3d download synthetic` or `mtl3d download "
                             f"nyuv2`, or pass --data)")
        self.meta = DatasetMeta.from_json(fileio.read_json(self.root / "meta.json"), str(self.root / "meta.json"))
        self.meta.tasks = [get_task(t).name for t in self.meta.tasks]
        self._cameras: dict[str, SampleCamera] | None = None
        self._image_suffix: dict[str, str] | None = None

    # --- splits and tasks ----------------------------------------------------------------------------------------
    def splits(self) -> list[str]:
        folder = self.root / "gt_sets"
        return sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []

    def ids(self, split: str) -> list[str]:
        path = self.root / "gt_sets" / f"{split}.txt"
        if not path.is_file():
            raise Mtl3dError(f"split {split!r} not found: {path} is missing (available: "
                             f"{', '.join(self.splits()) or 'none'})")
        ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not ids:
            raise Mtl3dError(f"split file {path} lists no samples")
        return ids

    def available_tasks(self) -> list[Task]:
        return [TASKS[name] for name in TASKS if (self.root / TASKS[name].folder).is_dir()]

    def require_tasks(self, tasks: list[Task]) -> None:
        have = {task.name for task in self.available_tasks()}
        missing = [task.name for task in tasks if task.name not in have]
        if missing:
            raise Mtl3dError(f"dataset {self.root} has no labels for task(s) {', '.join(missing)} "
                             f"(it has: {', '.join(sorted(have)) or 'none'})")

    # --- files ---------------------------------------------------------------------------------------------------
    def image_path(self, sample_id: str) -> Path:
        if self._image_suffix is None:
            folder = self.root / "images"
            if not folder.is_dir():
                raise Mtl3dError(f"dataset {self.root} has no images/ folder")
            self._image_suffix = {p.stem: p.suffix for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        if sample_id not in self._image_suffix:
            raise Mtl3dError(f"missing image for sample {sample_id!r} in {self.root / 'images'}")
        return self.root / "images" / (sample_id + self._image_suffix[sample_id])

    def label_path(self, task: Task, sample_id: str) -> Path:
        return Path(task.path(self.root, sample_id))

    # --- cameras -------------------------------------------------------------------------------------------------
    @property
    def cameras(self) -> dict[str, SampleCamera]:
        if self._cameras is None:
            path = self.root / "cameras.json"
            raw = fileio.read_json(path) if path.is_file() else {}
            cameras = {}
            for sample_id, entry in raw.items():
                try:
                    K = np.asarray(entry["K"], dtype=np.float64).reshape(3, 3)
                    pose = np.asarray(entry["pose"], dtype=np.float64).reshape(4, 4)
                    cameras[sample_id] = SampleCamera(K, pose, str(entry.get("scene", sample_id)))
                except (KeyError, TypeError, ValueError) as exc:
                    raise Mtl3dError(f"{path}: bad camera entry for {sample_id!r} ({exc})") from None
            self._cameras = cameras
        return self._cameras

    @property
    def has_cameras(self) -> bool:
        return bool(self.cameras)


class LayoutWriter:
    """Build a dataset in a hidden sibling folder and move it into place only when complete.

    Use as a context manager; an exception (or Ctrl-C) removes the partial folder, so a failed conversion never
    leaves a half-made dataset at `root`.
    """

    def __init__(self, root: str | os.PathLike, overwrite: bool = False):
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise Mtl3dError(f"{self.root} already exists (pass --overwrite to replace it)")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = fileio.make_temp_dir(self.root.parent, f".{self.root.name}.partial-")
        self.overwrite = overwrite
        self._cameras: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> LayoutWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def add_image(self, sample_id: str, image: np.ndarray, suffix: str = ".png") -> None:
        fileio.write_image(self.tmp / "images" / f"{sample_id}{suffix}", image)

    def add_image_file(self, sample_id: str, source: str | os.PathLike) -> None:
        """Copy an already-encoded image (e.g. an upstream JPEG) without re-encoding it."""
        source = Path(source)
        target = self.tmp / "images" / f"{sample_id}{source.suffix.lower()}"
        fileio.copy_file(source, target)

    def add_label(self, task: Task, sample_id: str, array: np.ndarray) -> None:
        task.write(task.path(self.tmp, sample_id), array)

    def add_camera(self, sample_id: str, K: np.ndarray, pose: np.ndarray, scene: str) -> None:
        self._cameras[sample_id] = {
            "K": np.asarray(K, dtype=np.float64).reshape(3, 3).tolist(),
            "pose": np.asarray(pose, dtype=np.float64).reshape(4, 4).tolist(),
            "scene": scene,
        }

    def add_split(self, name: str, ids: list[str]) -> None:
        fileio.write_text(self.tmp / "gt_sets" / f"{name}.txt", "".join(f"{i}\n" for i in ids))

    def commit(self, meta: DatasetMeta) -> Path:
        """Write cameras.json and meta.json, then atomically move the finished dataset to `root`."""
        if self._cameras:
            fileio.write_json(self.tmp / "cameras.json", self._cameras)
        fileio.write_json(self.tmp / "meta.json", meta.to_json())
        old = None
        if self.root.exists():
            old = self.root.with_name(f".{self.root.name}.old-{os.getpid()}")
            os.replace(self.root, old)
        os.replace(self.tmp, self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.root
