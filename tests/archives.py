"""Builders of tiny archives in the upstream NYUD_MT / PASCAL_MT layouts, and of malicious tars, for tests.

Every label has values chosen so tests can check the conversion by hand (see the constants below).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

H, W = 24, 32
NYU_IDS = ("0001", "0002", "0003")
NYU_SPLITS = {"train": ["0001", "0002"], "val": ["0003"]}
PASCAL_IDS = ("2008_000002", "2008_000003", "2008_000007")
PASCAL_SPLITS = {"train": ["2008_000002", "2008_000003"], "val": ["2008_000007"]}
PLANE_NORMAL = np.array([0.2, -0.3, -1.0]) / np.linalg.norm([0.2, -0.3, -1.0])  # camera frame, faces the camera
PLANE_OFFSET = -2.0  # plane n . X = d


def nyu_K(height: int = H, width: int = W) -> np.ndarray:
    K = np.array([[518.8579, 0.0, 325.0824], [0.0, 519.4696, 253.2362], [0.0, 0.0, 1.0]])
    return np.diag([width / 640.0, height / 480.0, 1.0]) @ K


def plane_depth(height: int = H, width: int = W) -> np.ndarray:
    """z-depth of the plane n . X = d seen through nyu_K (pixel centres at +0.5)."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(nyu_K(height, width)).T
    return (PLANE_OFFSET / (rays @ PLANE_NORMAL)).astype(np.float32)


def nyu_segmentation(index: int) -> np.ndarray:
    """Upstream labels: left columns 0 (unlabelled), then 5, then 40; row 0 is 1 + index."""
    seg = np.zeros((H, W), np.uint8)
    seg[:, 8:20] = 5
    seg[:, 20:] = 40
    seg[0, :] = 1 + index
    return seg


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _mat(**variables) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables)
    return buffer.getvalue()


def _image(index: int) -> np.ndarray:
    rng = np.random.default_rng(index)
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def write_tgz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def nyud_files(root: str = "NYUD_MT") -> dict[str, bytes]:
    """Survey layout. Normals are stored in a frame with y up and z backward ((x, -y, -z) of ours)."""
    upstream_normal = PLANE_NORMAL * np.array([1.0, -1.0, -1.0])
    files = {}
    for index, sample_id in enumerate(NYU_IDS):
        files[f"{root}/images/{sample_id}.jpg"] = _jpg(_image(index))
        files[f"{root}/segmentation/{sample_id}.png"] = _png(nyu_segmentation(index))
        files[f"{root}/depth/{sample_id}.npy"] = _npy(plane_depth())
        files[f"{root}/normals/{sample_id}.npy"] = _npy(np.broadcast_to(upstream_normal, (H, W, 3)).astype(np.float32))
        edge = np.zeros((H, W), np.float32)
        edge[:, 7:9] = 1.0
        files[f"{root}/edge/{sample_id}.npy"] = _npy(edge)
    for split, ids in NYU_SPLITS.items():
        files[f"{root}/gt_sets/{split}.txt"] = "".join(f"{i}\n" for i in ids).encode()
    return files


def build_nyud_archive(path: Path) -> Path:
    return write_tgz(path, nyud_files())


def _struct(rows: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    """A 1xN MATLAB struct array for scipy.io.savemat."""
    array = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            array[0, i][f] = row[f]
    return array


def person_anno(with_person: bool) -> np.ndarray:
    """Pascal-Part 'anno': a person whose head fills rows 0..5 and left foot rows 18..23 (cols 4..11), plus a dog
    with no parts; or only the dog."""
    mask = np.zeros((H, W), np.uint8)
    mask[:, 4:12] = 1
    head = np.zeros((H, W), np.uint8)
    head[0:6, 4:12] = 1
    foot = np.zeros((H, W), np.uint8)
    foot[18:24, 4:12] = 1
    parts = _struct([{"part_name": "head", "mask": head}, {"part_name": "lfoot", "mask": foot}], ("part_name", "mask"))
    dog = {"class": "dog", "class_ind": 12, "mask": np.ones((H, W), np.uint8), "parts": np.zeros((0, 0))}
    person = {"class": "person", "class_ind": 15, "mask": mask, "parts": parts}
    objects = _struct([person, dog] if with_person else [dog], ("class", "class_ind", "mask", "parts"))
    anno = np.zeros((1, 1), dtype=[("imname", object), ("objects", object)])
    anno[0, 0]["imname"] = "x.jpg"
    anno[0, 0]["objects"] = objects
    return anno


def context_label_map() -> np.ndarray:
    """Left half 284 (person: normals kept), right half 360 (sky: normals dropped)."""
    labels = np.full((H, W), 284, np.uint16)
    labels[:, W // 2:] = 360
    return labels


def pascal_files(root: str = "PASCAL_MT") -> dict[str, bytes]:
    files = {}
    for index, sample_id in enumerate(PASCAL_IDS):
        files[f"{root}/JPEGImages/{sample_id}.jpg"] = _jpg(_image(10 + index))
        seg = np.zeros((H, W), np.uint8)
        seg[:, 4:12] = 15
        seg[0, 0] = 255
        files[f"{root}/semseg/pascal-context/{sample_id}.png"] = _png(seg)
        files[f"{root}/human_parts/{sample_id}.mat"] = _mat(anno=person_anno(with_person=index == 0))
        sal = np.full((H, W), 50, np.uint8)
        sal[:, :10] = 200
        files[f"{root}/sal_distill/{sample_id}.png"] = _png(sal)
        normals = np.zeros((H, W, 3), np.uint8)
        normals[...] = (128, 128, 0)  # (0.004, 0.004, -1): facing the camera
        files[f"{root}/normals_distill/{sample_id}.png"] = _png(normals)
        files[f"{root}/pascal-context/trainval/{sample_id}.mat"] = _mat(LabelMap=context_label_map())
    for split, ids in PASCAL_SPLITS.items():
        files[f"{root}/ImageSets/Context/{split}.txt"] = "".join(f"{i}\n" for i in ids).encode()
    return files


def build_pascal_archive(path: Path) -> Path:
    return write_tgz(path, pascal_files())


def build_malicious_archive(path: Path, kind: str) -> Path:
    """A tar with one harmless file and one unsafe member: kind 'dotdot', 'absolute' or 'symlink'."""
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("NYUD_MT/gt_sets/train.txt")
        ok.size = 5
        tar.addfile(ok, io.BytesIO(b"0001\n"))
        if kind == "symlink":
            bad = tarfile.TarInfo("NYUD_MT/link")
            bad.type = tarfile.SYMTYPE
            bad.linkname = "/etc/passwd"
            tar.addfile(bad)
        else:
            bad = tarfile.TarInfo("../evil" if kind == "dotdot" else "/tmp/mtl3d-absolute-evil")
            bad.size = 4
            tar.addfile(bad, io.BytesIO(b"evil"))
    return path
