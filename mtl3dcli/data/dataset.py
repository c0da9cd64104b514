"""One `torch.utils.data.Dataset` for every dataset in the common on-disk layout (see mtl3dcli.data.layout).

Files are read lazily, per sample, with errors that name the offending file; `check_files` lists every missing file
of the split up front. With `cache=True` each sample is decoded once and kept in memory (image as uint8, labels and
masks as tensors), in every process that loads it: decoding costs more than the whole augmentation on small images
(about 10 of 15 ms per 96x128 synthetic view), and the cached sample is bit-identical to a fresh read.
Augmentation randomness comes from a generator seeded by (seed, epoch, index), so a sample's crop/flip/jitter is
the same in any worker and any run. The epoch travels with the key: `dataset[(epoch, index)]`
(what `mtl3dcli.data.loader.EpochSampler` yields, so persistent DataLoader workers need no epoch update) or
`dataset[index]` for epoch 0.

A sample is the dict described in mtl3dcli.data.transforms plus "id", "scene", "index", "has_camera", "size"
(original (H, W)); with pairs=True also "pair" ({"labels", "valid", "K", "pose"} of a partner view of the same scene,
transformed with its own random draw) and "has_pair". `torch.utils.data.default_collate` batches these dicts when
the transform gives a fixed image size.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image

from mtl3dcli import fileio
from mtl3dcli.cpu import retain_freed_memory
from mtl3dcli.data.layout import DatasetLayout, SampleCamera
from mtl3dcli.data.pairs import find_partners
from mtl3dcli.data.transforms import Sample, Transform
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.geometry import fov_focal, pinhole_intrinsics
from mtl3dcli.tasks import Task

PAIR_KEYS = ("labels", "valid", "K", "pose")


def default_intrinsics(size: tuple[int, int], fov_deg: float) -> torch.Tensor:
    """Centred pinhole K (3, 3) float32 for an (H, W) image with the given horizontal field of view in degrees."""
    height, width = size
    focal = fov_focal(width, fov_deg)
    return torch.from_numpy(pinhole_intrinsics(focal, focal, width / 2, height / 2)).float()


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator whose stream depends only on (seed, epoch, index), well mixed so neighbours are unrelated."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


class MultiTaskDataset(torch.utils.data.Dataset):
    """Samples of one split with the labels of the requested tasks, optionally with a partner view per sample."""

    def __init__(self, root: str | os.PathLike, split: str, tasks: list[Task], transform: Transform | None = None,
                 *, pairs: bool = False, min_overlap: float = 0.3, seed: int = 0, default_fov_deg: float = 60.0,
                 fraction: float = 1.0, cache: bool = False):
        self.layout = DatasetLayout(root)
        self.meta = self.layout.meta
        self.tasks = list(tasks)
        self.layout.require_tasks(self.tasks)
        self._cameras = self.layout.cameras
        self.ids = self._subset(self.layout.ids(split), fraction)
        self.split = split
        self.transform = transform
        self.seed = seed
        self.default_fov_deg = default_fov_deg
        self.pairs = pairs
        self._task_map = {task.name: task for task in self.tasks}
        self._cache: dict[str, Sample] | None = {} if cache else None
        self.partners: dict[str, list[str]] = {}
        if pairs:
            if not self._cameras:
                raise Mtl3dError(f"cross-view pairs need cameras, but {self.layout.root / 'cameras.json'} is missing "
                                 f"or empty")
            for sample_id in self.ids:
                self._camera(sample_id)  # every id of the split needs one
            sizes = {sample_id: _stored_size(self.layout.image_path(sample_id)) for sample_id in self.ids}
            depth = sum(self.meta.depth_range) / 2
            self.partners = find_partners(self._cameras, self.ids, sizes, min_overlap, depth)

    def __len__(self) -> int:
        return len(self.ids)

    def _subset(self, ids: list[str], fraction: float) -> list[str]:
        """The first `fraction` of the split's scenes in a fixed shuffled order (whole scenes, so partner views stay
        together; independent of the run seed, so every seed of a study sees the same subset)."""
        if not 0.0 < fraction <= 1.0:
            raise Mtl3dError(f"data.train_fraction must be in (0, 1], got {fraction}")
        if fraction == 1.0:
            return ids
        scenes = list(dict.fromkeys(self.scene(i) for i in ids))
        order = np.random.default_rng(0).permutation(len(scenes))
        kept = {scenes[k] for k in order[:max(1, math.ceil(fraction * len(scenes)))]}
        return [i for i in ids if self.scene(i) in kept]

    def check_files(self, count: int | None = None) -> None:
        """Raise one error naming every missing image or label file of the split (or of its first `count` samples):
        a fast pass of stat calls before any work starts."""
        missing = []
        images = {p.stem for p in (self.layout.root / "images").glob("*")} if (self.layout.root / "images").is_dir() \
            else set()
        for sample_id in self.ids[:count]:
            if sample_id not in images:
                missing.append(f"images/{sample_id}.*")
            missing += [str(self.layout.label_path(t, sample_id).relative_to(self.layout.root)) for t in self.tasks
                        if not self.layout.label_path(t, sample_id).is_file()]
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise Mtl3dError(f"{len(missing)} file(s) of split {self.split!r} missing in {self.layout.root}: {shown}")

    def scene(self, sample_id: str) -> str:
        return self._cameras[sample_id].scene if sample_id in self._cameras else sample_id

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if not 0 <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} samples")
        sample_id = self.ids[index]
        generator = sample_generator(self.seed, epoch, index)
        raw = self.load(sample_id)
        size = list(raw["image"].shape[-2:])
        sample = self._transform(raw, generator)
        sample.update(id=sample_id, scene=self.scene(sample_id), index=index,
                      has_camera=torch.tensor(bool(self._cameras)), size=torch.tensor(size, dtype=torch.int64))
        if self.pairs:
            candidates = self.partners.get(sample_id, [])
            if candidates:
                partner_id = candidates[int(torch.randint(len(candidates), (), generator=generator))]
                partner = self._transform(self.load(partner_id), generator)
            else:
                partner = sample
            sample["pair"] = {key: partner[key] for key in PAIR_KEYS}
            sample["has_pair"] = torch.tensor(bool(candidates))
        return sample

    def load(self, sample_id: str) -> Sample:
        """The untransformed sample: image, labels, valid, K, pose (see mtl3dcli.data.transforms)."""
        retain_freed_memory()  # in every loader process: decoding frees and re-allocates the same large buffers
        if self._cache is None:
            decoded = self._decode(sample_id)
        elif sample_id in self._cache:
            decoded = self._cache[sample_id]
        else:
            decoded = self._cache[sample_id] = self._decode(sample_id)
        # fresh dicts around shared tensors: transforms build new tensors and never write into their input
        return {"image": decoded["image"].float().div_(255.0), "labels": dict(decoded["labels"]),
                "valid": dict(decoded["valid"]), "K": decoded["K"], "pose": decoded["pose"]}

    def _decode(self, sample_id: str) -> Sample:
        """Read the sample's files: image as uint8 (3, H, W), labels and masks as the tasks give them, K, pose."""
        image_path = self.layout.image_path(sample_id)
        image = fileio.read_image(image_path)
        height, width = image.shape[:2]
        labels, valid = {}, {}
        for task in self.tasks:
            path = self.layout.label_path(task, sample_id)
            if not path.is_file():
                raise Mtl3dError(f"missing {task.name} label for sample {sample_id!r}: {path}")
            array = task.read(path)
            if array.shape[:2] != (height, width):
                raise Mtl3dError(f"label {path} has shape {tuple(array.shape[:2])} but image {image_path} is "
                                 f"{(height, width)}")
            labels[task.name] = task.to_tensor(array)
            valid[task.name] = task.valid(labels[task.name])
        if self._cameras:
            camera = self._camera(sample_id)
            K = torch.from_numpy(camera.K).float()
            pose = torch.from_numpy(camera.pose).float()
        else:
            K = default_intrinsics((height, width), self.default_fov_deg)
            pose = torch.eye(4)
        return {"image": torch.from_numpy(image).permute(2, 0, 1), "labels": labels, "valid": valid, "K": K,
                "pose": pose}

    def _camera(self, sample_id: str) -> SampleCamera:
        if sample_id not in self._cameras:
            raise Mtl3dError(f"{self.layout.root / 'cameras.json'} has no camera for sample {sample_id!r}")
        return self._cameras[sample_id]

    def _transform(self, sample: Sample, generator: torch.Generator) -> Sample:
        return self.transform(sample, self._task_map, generator) if self.transform is not None else sample


def _stored_size(path: os.PathLike) -> tuple[int, int]:
    """(H, W) of an image file from its header only (no decoding)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError) as exc:
        raise Mtl3dError(f"cannot read image {path}: {exc}".splitlines()[0]) from None
    return height, width
