"""Tri-plane feature lookup: points in the cube [-1, 1]^3 read three axis-aligned feature planes (EG3D-style).

Plane 0 is xy (x along the width axis, y along the height axis), plane 1 is xz (x -> width, z -> height), plane 2 is
yz (z -> width, y -> height). Lookups are bilinear with align_corners=False, so the plane's pixel (i, j) centre sits at
(-1 + (2j + 1) / Wp, -1 + (2i + 1) / Hp), the same pixel-centre convention as the cameras. Written by hand because
no maintained library exposes a tri-plane sampler; it is one batched `F.grid_sample` over the three planes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtl3dcli.errors import Mtl3dError

# How the three per-plane features (B, 3, M, C) combine into one per point.
_AGGREGATE = {
    "sum": lambda f: f.sum(dim=1),
    "mean": lambda f: f.mean(dim=1),
    "product": lambda f: f.prod(dim=1),
    "concat": lambda f: torch.cat(f.unbind(dim=1), dim=-1),
}
AGGREGATIONS = tuple(_AGGREGATE)
PADDING_MODES = ("zeros", "border")

# For each plane, which point coordinates become its (width, height) grid coordinates.
_PLANE_AXES = ((0, 1), (0, 2), (2, 1))


def _check_aggregation(aggregation: str) -> None:
    if aggregation not in AGGREGATIONS:
        raise Mtl3dError(f"unknown tri-plane aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")


def triplane_feature_dim(channels: int, aggregation: str) -> int:
    """Feature size per point for planes of `channels` channels: 3C for "concat", C otherwise."""
    _check_aggregation(aggregation)
    return 3 * channels if aggregation == "concat" else channels


def sample_triplane(planes: torch.Tensor, xyz: torch.Tensor, aggregation: str = "sum", *,
                    padding_mode: str = "zeros") -> torch.Tensor:
    """Bilinear tri-plane features of points.

    planes: (B, 3, C, Hp, Wp) in the order xy, xz, yz. xyz: (B, ..., 3) cube coordinates.
    Returns (B, ..., C) for "sum" (the paper), "mean" and "product" (over the three planes), or (B, ..., 3C) for
    "concat" (xy, xz, yz features in that order).
    padding_mode "zeros": a plane contributes zeros where the point's projection falls outside it (more than half a
    plane pixel beyond the cube), so a point outside the cube along one axis still reads the plane that ignores that
    axis; mask with `inside_cube` to silence such points. "border" repeats the edge pixels instead.
    """
    _check_aggregation(aggregation)
    if padding_mode not in PADDING_MODES:
        raise Mtl3dError(f"unknown tri-plane padding mode {padding_mode!r}; choose one of {', '.join(PADDING_MODES)}")
    b, n_planes, c, hp, wp = planes.shape
    if n_planes != 3:
        raise ValueError(f"planes must be (B, 3, C, Hp, Wp), got {tuple(planes.shape)}")
    points = xyz.reshape(b, -1, 3)
    grids = torch.stack([points[..., list(axes)] for axes in _PLANE_AXES], dim=1)  # (B, 3, M, 2)
    sampled = F.grid_sample(planes.reshape(b * 3, c, hp, wp), grids.reshape(b * 3, 1, -1, 2), mode="bilinear",
                            padding_mode=padding_mode, align_corners=False)  # (B * 3, C, 1, M)
    per_plane = sampled.reshape(b, 3, c, -1).permute(0, 1, 3, 2)  # (B, 3, M, C)
    out = _AGGREGATE[aggregation](per_plane)
    return out.reshape(*xyz.shape[:-1], out.shape[-1])


def inside_cube(xyz: torch.Tensor) -> torch.Tensor:
    """Boolean mask (...) of points (..., 3) inside the closed cube [-1, 1]^3."""
    return (xyz.abs() <= 1.0).all(dim=-1)
