"""Labels derived from other labels: boundaries from segmentation, normals from depth and intrinsics.

Used by the synthetic generator and by `mtl3d preprocess` to fill in tasks a dataset lacks.
"""

from __future__ import annotations

import numpy as np

from mtl3dcli.geometry import backproject
from mtl3dcli.meta import IGNORE_INDEX


def boundaries_from_segmentation(seg: np.ndarray, radius: int = 1) -> np.ndarray:
    """Mark pixels whose class differs from a 4-neighbour within `radius` pixels.

    seg: (H, W) integer class ids (255 = ignore; a change to or from ignore is not a boundary).
    Returns float32 (H, W) with 1 on boundaries and 0 elsewhere. Both sides of a class change are marked, so the
    boundary is 2*radius pixels thick, as in the standard NYUD/PASCAL boundary labels.
    """
    seg = np.asarray(seg)
    height, width = seg.shape
    edge = np.zeros((height, width), dtype=bool)
    known = seg != IGNORE_INDEX
    for step in range(1, radius + 1):
        for axis in (0, 1):
            a = [slice(None), slice(None)]
            b = [slice(None), slice(None)]
            a[axis], b[axis] = slice(step, None), slice(None, -step)
            a, b = tuple(a), tuple(b)
            change = (seg[a] != seg[b]) & known[a] & known[b]
            edge[a] |= change
            edge[b] |= change
    return edge.astype(np.float32)


def normals_from_depth(depth: np.ndarray, K: np.ndarray, max_relative_jump: float = 0.05) -> np.ndarray:
    """Camera-frame unit normals (H, W, 3) from z-depth (H, W) and intrinsics K (3, 3).

    The normal is the cross product of the central-difference tangents of the back-projected surface, oriented
    towards the camera (n . p < 0). Pixels with an invalid neighbour or a relative depth jump above
    `max_relative_jump` between neighbours (an occlusion edge, where no surface normal exists) get the zero vector,
    which the normals task treats as invalid.
    """
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    points = backproject(np.where(valid, depth, 0.0), K)
    normals = np.zeros_like(points)
    du = points[1:-1, 2:] - points[1:-1, :-2]
    dv = points[2:, 1:-1] - points[:-2, 1:-1]
    n = np.cross(du, dv)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    centre = points[1:-1, 1:-1]
    n = np.where(np.sum(n * centre, axis=-1, keepdims=True) > 0, -n, n) / np.maximum(length, 1e-12)
    d = depth
    ok = valid[1:-1, 1:-1] & valid[1:-1, 2:] & valid[1:-1, :-2] & valid[2:, 1:-1] & valid[:-2, 1:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        centre_depth = np.where(ok, d[1:-1, 1:-1], 1.0)
        jump = np.maximum.reduce([np.abs(d[1:-1, 2:] - d[1:-1, :-2]), np.abs(d[2:, 1:-1] - d[:-2, 1:-1])])
        ok &= np.nan_to_num(jump / centre_depth, nan=np.inf) <= 2 * max_relative_jump
    ok &= length[..., 0] > 0
    normals[1:-1, 1:-1] = np.where(ok[..., None], n, 0.0)
    return normals.astype(np.float32)
