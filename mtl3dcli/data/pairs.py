"""Partner views for cross-view training: which other views of the same scene see (mostly) the same surfaces.

Overlap is measured without depth maps: a grid of pixels of view A is back-projected to a fronto-parallel plane at a
typical scene depth and projected into view B. It is a cheap proxy for co-visibility, good enough to pick partners.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from mtl3dcli.data.layout import SampleCamera
from mtl3dcli.geometry import camera_rays, project, relative_pose, scale_intrinsics, transform_points


def view_overlap(K_a: np.ndarray, pose_a: np.ndarray, K_b: np.ndarray, pose_b: np.ndarray,
                 size_a: tuple[int, int], size_b: tuple[int, int], depth: float, grid: int = 16) -> float:
    """Fraction of a `grid` x `grid` lattice of view-A pixels, back-projected to z-depth `depth` in camera A, that
    land in front of camera B and inside its (H_b, W_b) image.

    K_*: (3, 3) intrinsics; pose_*: (4, 4) camera-to-world; size_*: (H, W) the sizes the intrinsics belong to.
    The lattice is the pixel centres of A's intrinsics scaled to a grid x grid image. Example: identical cameras give
    1.0; B shifted sideways by half the view width at `depth` gives 0.5.
    """
    K_a, K_b = (torch.as_tensor(np.asarray(k, np.float64)) for k in (K_a, K_b))
    lattice = scale_intrinsics(K_a, size_a, (grid, grid))
    points_a = camera_rays(lattice, grid, grid) * depth  # (grid, grid, 3) in camera A, z = depth
    a_to_b = relative_pose(torch.as_tensor(np.asarray(pose_b, np.float64)),
                           torch.as_tensor(np.asarray(pose_a, np.float64)))
    uv, z = project(transform_points(a_to_b, points_a), K_b)
    height_b, width_b = size_b
    inside = (z > 1e-6) & (uv[..., 0] >= 0) & (uv[..., 0] < width_b) & (uv[..., 1] >= 0) & (uv[..., 1] < height_b)
    return float(inside.double().mean())


def find_partners(cameras: dict[str, SampleCamera], ids: list[str], image_sizes: dict[str, tuple[int, int]],
                  min_overlap: float = 0.3, depth: float = 3.0) -> dict[str, list[str]]:
    """For each id, the other ids of the same scene (`SampleCamera.scene`) whose overlap with it is >= `min_overlap`,
    best first (ties by id).

    The overlap of a pair is symmetric: min(A->B, B->A) from `view_overlap`, so a partner sees a good part of the
    anchor's view *and* the anchor sees a good part of the partner's (a close-up inside a wide view is not enough).
    image_sizes: (H, W) per id, the sizes `cameras[id].K` refers to.
    """
    by_scene: dict[str, list[str]] = defaultdict(list)
    for sample_id in ids:
        by_scene[cameras[sample_id].scene].append(sample_id)
    partners: dict[str, list[str]] = {sample_id: [] for sample_id in ids}
    for members in by_scene.values():
        scores: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                ca, cb = cameras[a], cameras[b]
                overlap = min(view_overlap(ca.K, ca.pose, cb.K, cb.pose, image_sizes[a], image_sizes[b], depth),
                              view_overlap(cb.K, cb.pose, ca.K, ca.pose, image_sizes[b], image_sizes[a], depth))
                if overlap >= min_overlap:
                    scores[a].append((overlap, b))
                    scores[b].append((overlap, a))
        for sample_id, found in scores.items():
            partners[sample_id] = [other for _, other in sorted(found, key=lambda item: (-item[0], item[1]))]
    return partners
