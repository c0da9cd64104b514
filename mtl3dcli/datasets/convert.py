"""Convert the upstream NYUD_MT / PASCAL_MT folders into the common layout (DESIGN.md "The real datasets").

The label conventions follow the loaders of Multi-Task-Learning-PyTorch / ATRC / InvPT, so numbers computed on the
converted data are comparable with theirs:
  NYUD    segmentation 0 = unlabelled, 1..40 -> train id label-1, 0 -> 255; depth metres; edge 0/1.
  PASCAL  semseg 0..20 (0 = background) kept; human parts from Pascal-Part objects of class 15 (person) mapped to
          6 parts + background, all-255 for images without annotated person parts; saliency thresholded at 0.5;
          distilled normals kept only on the context classes that also exist in NYU; boundaries from the context
          label map.
Both the survey layout (.npy/.png) and the older ASTMT layout of NYUD_MT (.mat depth/segmentation, .jpg normals,
.png edges) are read.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.io
from PIL import Image

from mtl3dcli import fileio
from mtl3dcli import derive
from mtl3dcli.geometry import scale_intrinsics
from mtl3dcli.progress import ProgressFactory, stage
from mtl3dcli.data.layout import LayoutWriter
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.meta import IGNORE_INDEX
from mtl3dcli.tasks import TASKS

NYU40_CLASSES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture", "counter",
    "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes", "ceiling", "books",
    "refrigerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard", "person", "night stand",
    "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
]
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
PART_CLASSES = ["background", "head", "torso", "uarm", "larm", "uleg", "lleg"]
PERSON_CLASS = 15  # Pascal-Part class_ind of "person"
# Pascal-Part person part names -> the 6-part grouping used by ASTMT / MTL-PyTorch / InvPT (0 = background).
PERSON_PARTS = {
    **dict.fromkeys(("hair", "head", "lear", "rear", "lebrow", "rebrow", "leye", "reye", "mouth", "nose"), 1),
    **dict.fromkeys(("neck", "torso"), 2),
    **dict.fromkeys(("luarm", "ruarm"), 3),
    **dict.fromkeys(("lhand", "rhand", "llarm", "rlarm"), 4),
    **dict.fromkeys(("luleg", "ruleg"), 5),
    **dict.fromkeys(("lfoot", "rfoot", "llleg", "rlleg"), 6),
}
# PASCAL-Context label-map ids whose distilled normals are kept: the context classes whose names also appear among
# NYU's classes (minus "unknown"), plus tvmonitor, as computed by MTL-PyTorch from db_info/{nyu,context}_classes.json.
NORMALS_VALID_CONTEXT_IDS = frozenset((
    3, 4, 6, 9, 10, 11, 13, 15, 17, 18, 22, 23, 29, 30, 33, 34, 36, 37, 38, 39, 41, 43, 46, 49, 50, 51, 53, 55, 56,
    59, 61, 62, 65, 66, 68, 69, 72, 73, 78, 83, 84, 85, 87, 88, 95, 96, 101, 104, 105, 107, 111, 113, 115, 122, 124,
    135, 141, 142, 143, 146, 150, 154, 157, 158, 159, 165, 172, 174, 181, 183, 184, 191, 193, 195, 197, 199, 202,
    213, 215, 216, 219, 220, 223, 225, 228, 230, 232, 233, 238, 239, 242, 243, 246, 250, 251, 252, 255, 260, 261,
    263, 269, 272, 273, 275, 281, 283, 284, 285, 286, 287, 288, 290, 291, 292, 293, 295, 304, 307, 309, 310, 314,
    315, 319, 323, 329, 330, 331, 336, 342, 345, 349, 350, 351, 352, 355, 357, 368, 370, 371, 374, 379, 380, 383,
    384, 397, 401, 403, 405, 407, 408, 411, 412, 413, 414, 417, 419, 421, 423, 427, 429, 430, 432, 440, 441, 442,
    443, 444, 446, 454, 457,
))
# NYU Depth v2 RGB intrinsics (toolbox camera_params.m, 640x480), shifted by -0.5 px from Matlab's 1-based pixel
# coordinates to ours (pixel centres at u + 0.5).
NYU_K_640x480 = np.array([[518.8579, 0.0, 325.5824 - 0.5], [0.0, 519.4696, 253.7362 - 0.5], [0.0, 0.0, 1.0]])
NORMALS_PROBE_SAMPLES = 16  # samples used to find the axis convention of upstream NYUD normals


# --- readers that name the file on failure ---------------------------------------------------------------------
def _first_existing(folder: Path, sample_id: str, suffixes: tuple[str, ...]) -> Path | None:
    for suffix in suffixes:
        path = folder / f"{sample_id}{suffix}"
        if path.is_file():
            return path
    return None


def _require(folder: Path, sample_id: str, suffixes: tuple[str, ...]) -> Path:
    path = _first_existing(folder, sample_id, suffixes)
    if path is None:
        raise Mtl3dError(f"missing file: {folder / sample_id}{'|'.join(suffixes)}")
    return path


def read_label_png(path: Path) -> np.ndarray:
    """Integer label image with stored values untouched (palette indices, 16-bit values)."""
    try:
        with Image.open(path) as image:
            array = np.array(image)
    except Exception as exc:  # PIL raises many types for undecodable data
        raise Mtl3dError(f"cannot read label image {path}: {exc}".splitlines()[0]) from None
    return array[..., 0] if array.ndim == 3 else array


def read_mat(path: Path, key: str) -> Any:
    try:
        data = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError... on bad files
        raise Mtl3dError(f"cannot read MATLAB file {path}: {exc}".splitlines()[0]) from None
    if key not in data:
        raise Mtl3dError(f"{path} has no variable {key!r} (has: {', '.join(k for k in data if k[0] != '_')})")
    return data[key]


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise Mtl3dError(f"missing split file: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _image_shape(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as exc:
        raise Mtl3dError(f"cannot read image {path}: {exc}".splitlines()[0]) from None
    return height, width


def _fit(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label to the image size (upstream does the same when sizes differ)."""
    if array.shape[:2] == shape:
        return array
    return cv2.resize(array, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def _unit(normals: np.ndarray) -> np.ndarray:
    """Normalize (H, W, 3) vectors; near-zero vectors (invalid) become exactly zero."""
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    return np.where(norm > 0.5, normals / np.maximum(norm, 1e-6), 0.0).astype(np.float32)


def _splits(folder: Path, names: tuple[str, ...]) -> dict[str, list[str]]:
    splits = {name: _read_ids(folder / f"{name}.txt") for name in names if (folder / f"{name}.txt").is_file()}
    if not splits:
        raise Mtl3dError(f"no split files ({', '.join(n + '.txt' for n in names)}) in {folder}")
    return splits


def _ordered_ids(splits: dict[str, list[str]]) -> list[str]:
    return list(dict.fromkeys(itertools.chain.from_iterable(splits.values())))


# --- NYUD ------------------------------------------------------------------------------------------------------
def nyu_intrinsics(height: int, width: int) -> np.ndarray:
    """NYUv2 RGB intrinsics for an image of (height, width), scaled from 640x480 (pixel-centre convention)."""
    return scale_intrinsics(NYU_K_640x480, (480, 640), (height, width))


def nyud_segmentation(raw: np.ndarray, path: Path | str = "segmentation") -> np.ndarray:
    """Upstream 0..40 (0 = unlabelled) -> train ids 0..39 with 255 = ignore."""
    raw = np.asarray(raw).astype(np.int64)
    if raw.size and (raw.min() < 0 or raw.max() > 40):
        raise Mtl3dError(f"{path}: NYU40 labels must lie in 0..40, found {raw.min()}..{raw.max()}")
    return np.where(raw == 0, IGNORE_INDEX, raw - 1).astype(np.uint8)


def _nyud_normals_raw(root: Path, sample_id: str) -> np.ndarray | None:
    path = _first_existing(root / "normals", sample_id, (".npy", ".png", ".jpg"))
    if path is None:
        return None
    if path.suffix == ".npy":
        normals = fileio.read_npy(path).astype(np.float32)
        if normals.ndim == 3 and normals.shape[0] == 3 and normals.shape[-1] != 3:
            normals = normals.transpose(1, 2, 0)
    else:
        normals = fileio.read_image(path, mode="RGB").astype(np.float32) / 255.0 * 2.0 - 1.0
    if normals.ndim != 3 or normals.shape[-1] != 3:
        raise Mtl3dError(f"{path}: normals must be HxWx3, got shape {normals.shape}")
    return _unit(np.nan_to_num(normals))


def _nyud_depth(root: Path, sample_id: str) -> np.ndarray | None:
    path = _first_existing(root / "depth", sample_id, (".npy", ".mat"))
    if path is None:
        return None
    depth = fileio.read_npy(path) if path.suffix == ".npy" else np.asarray(read_mat(path, "depth"))
    return _clean_depth(depth, path)


def _clean_depth(depth: np.ndarray, path: Path) -> np.ndarray:
    depth = np.squeeze(np.asarray(depth, dtype=np.float32))
    if depth.ndim != 2:
        raise Mtl3dError(f"{path}: depth must be HxW, got shape {depth.shape}")
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)


def normals_axis_map(upstream: list[np.ndarray], derived: list[np.ndarray]) -> np.ndarray:
    """The signed axis permutation R (3, 3) with derived ~= upstream @ R.T, chosen by agreement over valid pixels.

    upstream/derived: lists of (H, W, 3) unit normals (zero = invalid). Upstream archives do not document their
    normal frame, so it is measured against normals computed from depth and K in our camera frame (x right,
    y down, z forward). Returns the identity when there is no overlap to measure.
    """
    cross = np.zeros((3, 3))  # sum of derived_i * upstream_j
    for up, down in zip(upstream, derived):
        valid = (np.linalg.norm(up, axis=-1) > 0.5) & (np.linalg.norm(down, axis=-1) > 0.5)
        cross += down[valid].T.astype(np.float64) @ up[valid].astype(np.float64)
    best, best_score = np.eye(3), -np.inf
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            R = np.zeros((3, 3))
            R[range(3), perm] = signs
            score = float(np.sum(R * cross))
            if score > best_score + 1e-9:
                best, best_score = R, score
    return best if best_score > 0 else np.eye(3)


def convert_nyud(src_root: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False,
                 progress: ProgressFactory | None = None, extra: dict[str, Any] | None = None) -> Path:
    """NYUD_MT folder -> common layout at `out` (atomic), with NYUv2 intrinsics and identity poses per image."""
    root = Path(src_root)
    splits = _splits(root / "gt_sets", ("train", "val", "test"))
    ids = _ordered_ids(splits)
    has = {folder: (root / folder).is_dir() for folder in ("segmentation", "depth", "normals", "edge")}

    # Find the frame of the upstream normals once, from the first samples that have both depth and normals.
    R = np.eye(3)
    if has["normals"] and has["depth"]:
        ups, downs = [], []
        for sample_id in ids[:NORMALS_PROBE_SAMPLES]:
            up, depth = _nyud_normals_raw(root, sample_id), _nyud_depth(root, sample_id)
            if up is None or depth is None or up.shape[:2] != depth.shape:
                continue
            ups.append(up)
            downs.append(derive.normals_from_depth(depth, nyu_intrinsics(*depth.shape)))
        R = normals_axis_map(ups, downs)

    with LayoutWriter(out, overwrite=overwrite) as writer, stage(progress, "convert nyuv2") as advance:
        for done, sample_id in enumerate(ids, 1):
            image = _require(root / "images", sample_id, (".jpg", ".png"))
            shape = _image_shape(image)
            writer.add_image_file(sample_id, image)
            if has["segmentation"]:
                path = _require(root / "segmentation", sample_id, (".png", ".mat"))
                raw = read_label_png(path) if path.suffix == ".png" else read_mat(path, "segmentation")
                writer.add_label(TASKS["semseg"], sample_id, _fit(nyud_segmentation(raw, path), shape))
            if has["depth"]:
                depth = _nyud_depth(root, sample_id)
                if depth is None:
                    raise Mtl3dError(f"missing file: {root / 'depth' / sample_id}.npy")
                writer.add_label(TASKS["depth"], sample_id, _fit(depth, shape))
            if has["normals"]:
                normals = _nyud_normals_raw(root, sample_id)
                if normals is None:
                    raise Mtl3dError(f"missing file: {root / 'normals' / sample_id}.npy")
                writer.add_label(TASKS["normals"], sample_id, _fit(normals @ R.T, shape))
            if has["edge"]:
                path = _require(root / "edge", sample_id, (".npy", ".png"))
                edge = fileio.read_npy(path) if path.suffix == ".npy" else read_label_png(path) / 255.0
                edge = np.squeeze(np.asarray(edge, dtype=np.float32))
                writer.add_label(TASKS["edge"], sample_id, _fit((edge > 0.5).astype(np.float32), shape))
            writer.add_camera(sample_id, nyu_intrinsics(*shape), np.eye(4), scene=sample_id)
            advance(done, len(ids))
        for name, split_ids in splits.items():
            writer.add_split(name, split_ids)
        tasks = [task for task, folder in (("semseg", "segmentation"), ("depth", "depth"), ("normals", "normals"),
                                           ("edge", "edge")) if has[folder]]
        meta = DatasetMeta(name="nyuv2", tasks=tasks, classes={"semseg": list(NYU40_CLASSES)},
                           depth_range=(0.0, 10.0), edge_max_dist=0.011,
                           extra={**(extra or {}), "normals_axis_map": R.astype(int).tolist(),
                                  "intrinsics": "NYUv2 RGB camera_params.m, scaled to image size"})
        return writer.commit(meta)


# --- PASCAL-Context --------------------------------------------------------------------------------------------
def context_boundaries(label_map: np.ndarray) -> np.ndarray:
    """One-pixel boundaries (float32 0/1, (H, W)) where the context label changes to the right or below.

    MTL-PyTorch marks |Laplacian| > 0 of the label map (both sides of a change) and thins it to one pixel; marking
    the pixel before each change along rows and columns gives the same one-pixel-wide line without a thinning pass.
    """
    labels = np.asarray(label_map)
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge.astype(np.float32)


def _mat_str(value: Any) -> str:
    array = np.asarray(value)
    return str(array.reshape(-1)[0]) if array.size else ""


def person_parts(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Pascal-Part annotation (.mat with 'anno') -> uint8 (H, W) part ids 0..6, or all 255 without person parts."""
    anno = read_mat(path, "anno")
    try:
        objects = anno[0, 0]["objects"]
    except (IndexError, ValueError, KeyError) as exc:
        raise Mtl3dError(f"{path}: unexpected 'anno' structure ({exc})") from None
    target = None
    for obj in objects.reshape(-1) if objects.size else []:
        parts = obj["parts"]
        if int(np.asarray(obj["class_ind"]).reshape(-1)[0]) != PERSON_CLASS or parts.size == 0:
            continue
        if target is None:
            target = np.zeros(np.asarray(obj["mask"]).shape, dtype=np.uint8)
        for part in parts.reshape(-1):
            name = _mat_str(part["part_name"])
            if name not in PERSON_PARTS:
                raise Mtl3dError(f"{path}: unknown person part {name!r}")
            target[np.asarray(part["mask"]).astype(bool)] = PERSON_PARTS[name]
    if target is None or not target.any():
        return np.full(shape, IGNORE_INDEX, dtype=np.uint8)
    return _fit(target, shape)


def pascal_semseg_path(root: Path, sample_id: str) -> Path:
    """semseg/VOC12 first, then semseg/pascal-context, as the upstream loaders look them up."""
    for folder in ("VOC12", "pascal-context"):
        path = root / "semseg" / folder / f"{sample_id}.png"
        if path.is_file():
            return path
    raise Mtl3dError(f"missing file: {root / 'semseg' / 'pascal-context' / sample_id}.png")


def convert_pascal(src_root: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False,
                   progress: ProgressFactory | None = None, extra: dict[str, Any] | None = None) -> Path:
    """PASCAL_MT folder -> common layout at `out` (atomic): semseg, parts, saliency, normals, edge; no cameras."""
    root = Path(src_root)
    splits = _splits(root / "ImageSets" / "Context", ("train", "val"))
    ids = _ordered_ids(splits)
    has = {folder: (root / folder).is_dir()
           for folder in ("semseg", "human_parts", "sal_distill", "normals_distill", "pascal-context")}
    valid_ids = np.array(sorted(NORMALS_VALID_CONTEXT_IDS))

    with LayoutWriter(out, overwrite=overwrite) as writer, stage(progress, "convert pascal-context") as advance:
        for done, sample_id in enumerate(ids, 1):
            image = _require(root / "JPEGImages", sample_id, (".jpg", ".png"))
            shape = _image_shape(image)
            writer.add_image_file(sample_id, image)
            label_map = None
            if has["pascal-context"]:
                mat = _require(root / "pascal-context" / "trainval", sample_id, (".mat",))
                label_map = _fit(np.asarray(read_mat(mat, "LabelMap")), shape)
                writer.add_label(TASKS["edge"], sample_id, context_boundaries(label_map))
            if has["semseg"]:
                path = pascal_semseg_path(root, sample_id)
                seg = read_label_png(path)
                bad = (seg > 20) & (seg != IGNORE_INDEX)
                if bad.any():
                    raise Mtl3dError(f"{path}: semseg labels must be 0..20 or 255, found {int(seg[bad][0])}")
                writer.add_label(TASKS["semseg"], sample_id, _fit(seg.astype(np.uint8), shape))
            if has["human_parts"]:
                mat = _require(root / "human_parts", sample_id, (".mat",))
                writer.add_label(TASKS["parts"], sample_id, person_parts(mat, shape))
            if has["sal_distill"]:
                path = _require(root / "sal_distill", sample_id, (".png",))
                sal = read_label_png(path).astype(np.float32) / 255.0
                writer.add_label(TASKS["saliency"], sample_id, _fit((sal > 0.5).astype(np.float32), shape))
            if has["normals_distill"]:
                if label_map is None:
                    raise Mtl3dError(f"{root / 'pascal-context'} is missing: it is needed to mask distilled normals")
                path = _require(root / "normals_distill", sample_id, (".png",))
                normals = _fit(fileio.read_image(path, mode="RGB"), shape).astype(np.float32) / 255.0 * 2.0 - 1.0
                keep = np.isin(label_map, valid_ids)[..., None]
                writer.add_label(TASKS["normals"], sample_id, _unit(np.where(keep, normals, 0.0)))
            advance(done, len(ids))
        for name, split_ids in splits.items():
            writer.add_split(name, split_ids)
        tasks = [task for task, folder in (("semseg", "semseg"), ("parts", "human_parts"), ("saliency", "sal_distill"),
                                           ("normals", "normals_distill"), ("edge", "pascal-context")) if has[folder]]
        meta = DatasetMeta(name="pascal-context", tasks=tasks,
                           classes={"semseg": list(VOC_CLASSES), "parts": list(PART_CLASSES)},
                           edge_max_dist=0.0075,
                           extra={**(extra or {}), "saliency": "sal_distill thresholded at 0.5",
                                  "normals": "normals_distill as stored (frame assumed x right, y down, z forward), "
                                             "masked to NYU-compatible context classes"})
        return writer.commit(meta)

