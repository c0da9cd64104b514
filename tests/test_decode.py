"""The fast input pipeline gives the samples of the straightforward one, to the last bit.

The references below are the code the pipeline ran before it was made fast (imageio decoding, normals decoded with
numpy and validated with `torch.linalg.vector_norm`, the mirror by multiplication): a sample drawn through the
MultiTaskDataset with them patched in must equal the sample drawn without.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from mtl3dcli import fileio
from mtl3dcli.data.dataset import MultiTaskDataset
from mtl3dcli.data.layout import LayoutWriter
from mtl3dcli.data.transforms import RandomScaleCrop, train_transform
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.tasks import TASKS, NormalsTask, Task, decode_normals, parse_tasks

SIZE = (60, 80)
CROP = (48, 64)


# --- the old code path ----------------------------------------------------------------------------------------------
def reference_decode_image(path: Path) -> np.ndarray:
    return np.asarray(iio.imread(path))


def reference_decode_normals(rgb: np.ndarray) -> np.ndarray:
    normals = rgb.astype(np.float32) / 255.0 * 2.0 - 1.0
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    valid = np.abs(norm - 1.0) < 0.5
    return np.where(valid, normals / np.maximum(norm, 1e-6), 0.0).astype(np.float32)


def reference_normals_read(self, path) -> np.ndarray:
    return reference_decode_normals(fileio.read_image(path, mode="RGB"))


def reference_normals_valid(self, label: torch.Tensor) -> torch.Tensor:
    return label.norm(dim=-3) > 0.5


def reference_hflip(self, label: torch.Tensor) -> torch.Tensor:
    out = label.flip(-1)
    if self.flip_signs is not None:
        out = out * torch.tensor(self.flip_signs, dtype=out.dtype).view(-1, 1, 1)
    return out


def reference_scale_crop(self, sample, tasks, generator):
    return self.crop(self.scale(sample, tasks, generator), tasks, generator)


@pytest.fixture
def old_code_path(monkeypatch):
    monkeypatch.setattr(RandomScaleCrop, "__call__", reference_scale_crop)
    monkeypatch.setattr(fileio, "_decode_image", reference_decode_image)
    monkeypatch.setattr(NormalsTask, "read", reference_normals_read)
    monkeypatch.setattr(NormalsTask, "valid", reference_normals_valid)
    monkeypatch.setattr(Task, "hflip", reference_hflip)


# --- decoding -------------------------------------------------------------------------------------------------------
def test_normals_decode_equals_the_reference_for_every_byte_triple():
    levels = np.arange(256, dtype=np.uint8)
    green, blue = np.meshgrid(levels, levels, indexing="ij")
    for red in range(0, 256, 32):  # all 2^24 triples, 32 red levels at a time
        rgb = np.stack(np.broadcast_arrays(levels[red:red + 32, None, None], green, blue), axis=-1)
        fast, reference = decode_normals(rgb), reference_decode_normals(rgb)
        assert fast.shape == reference.shape and fast.dtype == reference.dtype
        assert np.array_equal(fast.view(np.uint32), reference.view(np.uint32)), f"red {red}..{red + 31}"


def _texture(rng: np.random.Generator, size: tuple[int, int], channels: int) -> np.ndarray:
    """A smooth random picture with fine noise: JPEG has work to do at every frequency."""
    coarse = rng.uniform(0, 255, (size[0] // 8 + 1, size[1] // 8 + 1, channels))
    smooth = np.kron(coarse, np.ones((8, 8, 1)))[:size[0], :size[1]]
    return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)


def _save_variants(folder: Path, picture: np.ndarray) -> list[Path]:
    """The picture in the JPEG and PNG kinds datasets hold, and in kinds the fast reader must leave to imageio."""
    rgb, grey = Image.fromarray(picture), Image.fromarray(picture[..., 0])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated; neither reader applies it
    files = {"444.jpg": (rgb, {"quality": 95, "subsampling": 0}), "422.jpg": (rgb, {"quality": 90, "subsampling": 1}),
             "420.jpg": (rgb, {"quality": 75, "subsampling": 2}), "progressive.jpg": (rgb, {"progressive": True}),
             "grey.jpg": (grey, {}), "exif.jpg": (rgb, {"exif": exif}), "rgb.png": (rgb, {}), "grey.png": (grey, {}),
             "palette.png": (rgb.convert("P"), {}), "rgba.png": (rgb.convert("RGBA"), {}),
             "transparent.png": (rgb, {"transparency": (1, 2, 3)}), "grey16.png": (grey.convert("I;16"), {}),
             "grey4.png": (grey.point(lambda v: v // 16), {"bits": 4}), "bilevel.png": (grey.convert("1"), {}),
             "grey.tif": (grey, {})}
    for name, (image, options) in files.items():
        image.save(folder / name, **options)
    return [folder / name for name in files]


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_image_reading_equals_imageio(tmp_path, mode, monkeypatch):
    paths = _save_variants(tmp_path, _texture(np.random.default_rng(1), (37, 53), 3))
    fast = {path.name: fileio.read_image(path, mode) for path in paths}
    monkeypatch.setattr(fileio, "_decode_image", reference_decode_image)
    for path in paths:
        reference = fileio.read_image(path, mode)
        assert fast[path.name].dtype == reference.dtype and np.array_equal(fast[path.name], reference), path.name


def test_opencv_decodes_the_plain_kinds(tmp_path):
    """The fast path is taken where it should be (else the test above would pass with imageio alone)."""
    paths = {path.name: path for path in _save_variants(tmp_path, _texture(np.random.default_rng(2), (16, 16), 3))}
    assert all(fileio._plain_mode(paths[name]) == "RGB" for name in ("444.jpg", "420.jpg", "progressive.jpg",
                                                                    "rgb.png"))
    assert fileio._plain_mode(paths["grey.png"]) == "L" and fileio._plain_mode(paths["grey.jpg"]) == "L"
    assert not any(fileio._plain_mode(paths[name]) for name in ("palette.png", "rgba.png", "transparent.png",
                                                                "grey16.png", "grey4.png", "bilevel.png", "grey.tif"))


# --- whole samples --------------------------------------------------------------------------------------------------
def _write_dataset(root: Path, tasks: list[str]) -> Path:
    """Six views with every label kind and its invalid pixels: JPEG images, noisy normals with holes, ignore
    regions, depth holes; cameras with an off-centre principal point."""
    rng = np.random.default_rng(0)
    with LayoutWriter(root) as writer:
        ids = [f"s{k // 3}_v{k % 3}" for k in range(6)]
        for k, sample_id in enumerate(ids):
            writer.add_image(sample_id, _texture(rng, SIZE, 3), suffix=".jpg")
            classes = np.kron(rng.integers(0, 5, (6, 8)), np.ones((10, 10), np.int64)).astype(np.uint8)
            classes[:8, :12] = 255
            normals = rng.normal(0, 0.05, (*SIZE, 3)) + [0.2, -0.3, -1.0]
            normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
            normals[40:, :20] = 0.0
            depth = rng.uniform(0.5, 5.0, SIZE).astype(np.float32)
            depth[:5] = 0.0
            labels = {"semseg": classes, "parts": np.where(classes < 3, classes, 0).astype(np.uint8),
                      "depth": depth, "normals": normals.astype(np.float32),
                      "edge": (rng.uniform(size=SIZE) > 0.8).astype(np.float32),
                      "saliency": (classes == 2).astype(np.float32)}
            for name in tasks:
                writer.add_label(TASKS[name], sample_id, labels[name])
            K = np.array([[70.0, 0.0, 41.5], [0.0, 70.0, 28.0], [0.0, 0.0, 1.0]])
            writer.add_camera(sample_id, K, np.eye(4) + 0.1 * k * np.eye(4, k=3), scene=sample_id[:2])
        writer.add_split("train", ids)
        classes = {name: [f"c{i}" for i in range(5)] for name in ("semseg", "parts")}
        return writer.commit(DatasetMeta(name="decode", tasks=tasks, classes=classes))


def _digests(root: Path, tasks: str, cache: bool = False, **augmentation) -> list[str]:
    """SHA-256 of every tensor of the samples of three epochs (key order), one digest per sample."""
    dataset = MultiTaskDataset(root, "train", parse_tasks(tasks), train_transform(CROP, **augmentation), seed=3,
                               cache=cache)
    out = []
    for key in [(epoch, index) for epoch in range(3) for index in range(len(dataset))]:
        digest = hashlib.sha256()
        _fold(dataset[key], digest)
        out.append(digest.hexdigest())
    return out


def _fold(value, digest) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            digest.update(key.encode())
            _fold(value[key], digest)
    elif isinstance(value, torch.Tensor):
        digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.contiguous().numpy().tobytes())


def _sample_digest(sample: dict) -> str:
    digest = hashlib.sha256()
    _fold(sample, digest)
    return digest.hexdigest()


def test_fused_scale_and_crop_equal_the_two_steps():
    """Scales that shrink below the crop (padding), keep the size, and enlarge; balanced and plain crops."""
    tasks = {task.name: task for task in parse_tasks("semseg,depth,normals")}
    mostly_one_class = (torch.rand(30, 40) > 0.7).long() * torch.randint(1, 4, (30, 40))  # windows get redrawn
    labels = {"semseg": mostly_one_class, "depth": torch.rand(1, 30, 40),
              "normals": torch.nn.functional.normalize(torch.randn(3, 30, 40), dim=0)}
    sample = {"image": torch.rand(3, 30, 40), "labels": labels, "K": torch.rand(3, 3), "pose": torch.eye(4),
              "valid": {name: torch.rand(30, 40) > 0.2 for name in labels}, "id": "x"}
    for low, high, ratio in [(0.5, 2.0, 0.75), (1.0, 1.0, 1.0), (0.3, 0.6, 1.0), (1.0, 1.5, 0.6)]:
        transform = RandomScaleCrop(low, high, (24, 32), ratio)
        for seed in range(8):
            fused = transform(sample, tasks, torch.Generator().manual_seed(seed))
            steps = reference_scale_crop(transform, sample, tasks, torch.Generator().manual_seed(seed))
            assert fused.keys() == steps.keys() and fused["id"] == "x"
            assert _sample_digest(fused) == _sample_digest(steps), (low, high, seed)


RECIPES = {  # the augmentations of the NYUv2 presets (MTL-PyTorch's, InvPT's) and of the PASCAL ones
    "mtl-pytorch-nyuv2": ("semseg,depth,normals,edge", {"scale": (1.0, 1.5), "jitter": 0.0}),
    "invpt-nyuv2": ("semseg,depth,normals,edge", {"scale": (0.5, 2.0), "jitter": 0.2, "max_class_ratio": 0.75}),
    "mtl-pytorch-pascal": ("semseg,parts,saliency,normals,edge", {"scale": (0.75, 1.25), "rotate": 20.0}),
}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_samples_equal_the_old_code_path(tmp_path, recipe, request):
    tasks, augmentation = RECIPES[recipe]
    root = _write_dataset(tmp_path / "data", tasks.split(","))
    fast = _digests(root, tasks, **augmentation)
    assert _digests(root, tasks, cache=True, **augmentation) == fast
    request.getfixturevalue("old_code_path")
    assert _digests(root, tasks, **augmentation) == fast
