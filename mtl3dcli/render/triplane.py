"""Tri-plane feature lookup: points in the cube [-1, 1]^3 read three axis-aligned feature planes (EG3D-style).

Plane 0 is xy (x along the width axis, y along the height axis), plane 1 is xz (x -> width, z -> height), plane 2 is
yz (z -> width, y -> height). Lookups are bilinear with align_corners=False, so the plane's pixel (i, j) centre sits at
(-1 + (2j + 1) / Wp, -1 + (2i + 1) / Hp), the same pixel-centre convention as the cameras. Written by hand because
no maintained library exposes a tri-plane sampler; scattered points take one batched `F.grid_sample` over the
three planes.

Samples on a grid (`CubeGrid`: x per pixel column, y per pixel row, z per sample index, as orthographic rays and the
pixel-aligned camera's own rays are) take the factored path `sample_triplane_grid`: the xy plane is read once per
pixel, the xz plane once per (column, sample) and the yz plane once per (row, sample), and the three reads are
broadcast-combined. A bilinear lookup on a grid of coordinates is separable, so each read is two small matrix
products (`linear_read_matrix`: on CPU several times faster than grid_sample, in backward above all). It is the
same bilinear lookup at the same coordinates, so it equals `sample_triplane` on the grid's points (up to float
summation order), at (h w + w N + h N) / (3 h w N) of the lookups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.render.rays import CubeGrid, CubeSamples

# How the three per-plane features (xy, xz, yz, each (..., C), broadcastable) combine into one per point.
_AGGREGATE = {
    "sum": lambda a, b, c: a + b + c,
    "mean": lambda a, b, c: (a + b + c) / 3.0,
    "product": lambda a, b, c: a * b * c,
    "concat": lambda a, b, c: torch.cat(torch.broadcast_tensors(a, b, c), dim=-1),
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
    _check(planes, aggregation, padding_mode)
    b, _, c, hp, wp = planes.shape
    points = xyz.reshape(b, -1, 3)
    grids = torch.stack([points[..., list(axes)] for axes in _PLANE_AXES], dim=1)  # (B, 3, M, 2)
    sampled = F.grid_sample(planes.reshape(b * 3, c, hp, wp), _grid_dtype(grids, planes).reshape(b * 3, 1, -1, 2),
                            mode="bilinear", padding_mode=padding_mode, align_corners=False)  # (B * 3, C, 1, M)
    per_plane = sampled.reshape(b, 3, c, -1).permute(0, 1, 3, 2)  # (B, 3, M, C)
    out = _AGGREGATE[aggregation](per_plane[:, 0], per_plane[:, 1], per_plane[:, 2])
    return out.reshape(*xyz.shape[:-1], out.shape[-1])


def triplane_grid_factors(planes: torch.Tensor, grid: CubeGrid, *,
                          padding_mode: str = "zeros") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three plane reads of a grid's samples before the broadcast: planes (B, 3, C, Hp, Wp), grid x (B or 1, w),
    y (B or 1, h), z (B, N) -> f_xy (B, h, w, 1, C) read at (x_j, y_i), f_xz (B, 1, w, N, C) at (x_j, z_k),
    f_yz (B, h, 1, N, C) at (z_k, y_i); together they broadcast to (B, h, w, N, C)."""
    if padding_mode not in PADDING_MODES:
        raise Mtl3dError(f"unknown tri-plane padding mode {padding_mode!r}; choose one of {', '.join(PADDING_MODES)}")
    b = planes.shape[0]
    x, y, z = (coord.expand(b, -1) for coord in (grid.x, grid.y, grid.z))
    autocast = torch.is_autocast_enabled(planes.device.type)
    dtype = torch.float32 if autocast else planes.dtype  # grid_sample's own precision under autocast
    hp, wp = planes.shape[-2:]

    def read(plane: int, across: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        """Plane `plane` at width coordinates `across` (B, m) x height coordinates `down` (B, k): (B, C, k, m)."""
        rows = linear_read_matrix(down.to(dtype), hp, padding_mode)[:, None]  # (B, 1, k, Hp)
        cols = linear_read_matrix(across.to(dtype), wp, padding_mode)[:, None]  # (B, 1, m, Wp)
        with torch.autocast(planes.device.type, enabled=False):
            return rows @ planes[:, plane].to(dtype) @ cols.transpose(-1, -2)

    f_xy = read(0, x, y).permute(0, 2, 3, 1)[:, :, :, None, :]
    f_xz = read(1, x, z).permute(0, 3, 2, 1)[:, None, :, :, :]
    f_yz = read(2, z, y).permute(0, 2, 3, 1)[:, :, None, :, :]
    return f_xy, f_xz, f_yz


def linear_read_matrix(coords: torch.Tensor, size: int, padding_mode: str = "zeros") -> torch.Tensor:
    """The 1-D half of a bilinear lookup as a matrix: coordinates (B, m) in [-1, 1] (align_corners False: pixel
    centres at -1 + (2i + 1) / size) -> (B, m, size) weights max(0, 1 - |u - i|) of pixel i for the position
    u = ((c + 1) size - 1) / 2 (1 - f on floor(u) and f on floor(u) + 1, f = u - floor(u)); a neighbour outside the
    plane weighs 0 ("zeros") or u is clamped into it first ("border"), as `F.grid_sample` reads. Differentiable in
    the coordinates."""
    position = ((coords + 1) * size - 1) / 2
    if padding_mode == "border":
        position = position.clamp(0, size - 1)
    pixels = torch.arange(size, dtype=coords.dtype, device=coords.device)
    return (1 - (position[..., None] - pixels).abs()).clamp_min(0)


def sample_triplane_grid(planes: torch.Tensor, grid: CubeGrid, aggregation: str = "sum", *,
                         padding_mode: str = "zeros") -> torch.Tensor:
    """`sample_triplane` of the points of a grid, factored: planes (B, 3, C, Hp, Wp), grid x (B or 1, w),
    y (B or 1, h), z (B, N) -> features (B, h * w, N, C) (3C for "concat"), rays row-major.

    xy is read at (x_j, y_i) once per pixel, xz at (x_j, z_k) once per (column, sample), yz at (z_k, y_i) once per
    (row, sample) (`triplane_grid_factors`); the reads broadcast to (B, h, w, N, C) in the aggregation. Gradients
    reach the planes through the three small reads (autograd sums the broadcast).
    """
    _check(planes, aggregation, padding_mode)
    b, h, w, n = grid.shape()
    out = aggregate_reads(triplane_grid_factors(planes, grid, padding_mode=padding_mode), aggregation)
    return out.reshape(b, h * w, n, out.shape[-1])


def aggregate_reads(reads: tuple[torch.Tensor, torch.Tensor, torch.Tensor], aggregation: str) -> torch.Tensor:
    """Combine broadcastable xy, xz, yz reads (`triplane_grid_factors`) into features (B, h, w, N, D)."""
    _check_aggregation(aggregation)
    out = _AGGREGATE[aggregation](*reads)
    return out.expand(*torch.broadcast_shapes(*(r.shape[:-1] for r in reads)), out.shape[-1])


def triplane_features(planes: torch.Tensor, samples: CubeSamples, aggregation: str = "sum") -> torch.Tensor:
    """Features (B, r, N, D) of the samples of a chunk of rays: factored for a grid, per point otherwise."""
    if samples.grid is not None:
        return sample_triplane_grid(planes, samples.chunk_grid(), aggregation)
    return sample_triplane(planes, samples.xyz, aggregation)


def _check(planes: torch.Tensor, aggregation: str, padding_mode: str) -> None:
    _check_aggregation(aggregation)
    if padding_mode not in PADDING_MODES:
        raise Mtl3dError(f"unknown tri-plane padding mode {padding_mode!r}; choose one of {', '.join(PADDING_MODES)}")
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be (B, 3, C, Hp, Wp), got {tuple(planes.shape)}")


def _grid_dtype(grid: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
    """grid_sample wants one dtype: inside autocast it reads in float32 itself, so float32 coordinates stay exact;
    outside, coordinates follow the planes (half-precision planes without autocast)."""
    if torch.is_autocast_enabled(planes.device.type):
        return grid
    return grid.to(planes.dtype)


def inside_cube(xyz: torch.Tensor) -> torch.Tensor:
    """Boolean mask (...) of points (..., 3) inside the closed cube [-1, 1]^3."""
    return (xyz.abs() <= 1.0).all(dim=-1)
