"""Ray bundles, samples along rays, and where the samples sit in the tri-plane cube (as points or a factored grid).

Conventions (DESIGN.md): rays of an h x w render are in row-major pixel order (ray r = i * w + j for row i, column
j); the tri-plane lives in the cube [-1, 1]^3. Pixel/ray math itself lives in `mtl3dcli.geometry`; the cameras
that produce bundles live in `mtl3dcli.render.cameras`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.geometry import normalized_pixel_centres, transform_points, transform_vectors

SPACINGS = ("depth", "disparity")


@dataclass
class RayBundle:
    """The rays of an h x w render, in the frame the field lives in (the cube, or the source camera's frame).

    origins: (B, R, 3) with R = h * w, row-major; directions: (B, R, 3), not normalized (a pinhole ray's direction
    has z = 1 in its own camera, so t is that camera's z-depth); near, far: floats, the range of t sampled on every
    ray; size: (h, w).
    """

    origins: torch.Tensor
    directions: torch.Tensor
    near: float
    far: float
    size: tuple[int, int]

    def points(self, t: torch.Tensor, rays: slice = slice(None)) -> torch.Tensor:
        """Points origins + t directions (B, r, N, 3) of the rays `rays` at parameters t (B, 1 or R, N)."""
        t = t if t.shape[1] == 1 else t[:, rays]
        return self.origins[:, rays, None, :] + t[..., None] * self.directions[:, rays, None, :]


def orthographic_rays(height: int, width: int, *, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays along +z through the pixel centres of an H x W image spanning the cube face z = -1 (the paper's camera).

    Returns origins (H * W, 3) at x = -1 + 2 (u + 0.5) / W, y = -1 + 2 (v + 0.5) / H, z = -1 in row-major pixel
    order, and directions (H * W, 3) = (0, 0, 1). With t in [0, 2] the rays cross the whole cube.
    """
    x = normalized_pixel_centres(width, device=device, dtype=dtype)
    y = normalized_pixel_centres(height, device=device, dtype=dtype)
    origins = torch.stack([x.expand(height, width), y[:, None].expand(height, width),
                           torch.full((height, width), -1.0, device=device, dtype=dtype)], dim=-1).reshape(-1, 3)
    directions = torch.zeros_like(origins)
    directions[:, 2] = 1.0
    return origins, directions


def transform_rays(origins: torch.Tensor, directions: torch.Tensor,
                   transform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a 4x4 transform (B, 4, 4) to rays (B, ..., 3): origins as points, directions by the linear part only.

    The transform may be improper (a mirror). Directions are not renormalized, so t keeps meaning the rays' own
    parameter (a pinhole camera's z-depth) after the move.
    """
    return transform_points(transform, origins), transform_vectors(transform, directions)


def _check_spacing(spacing: str) -> None:
    if spacing not in SPACINGS:
        raise Mtl3dError(f"unknown sample spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")


def sample_along_rays(near: torch.Tensor | float, far: torch.Tensor | float, n_samples: int, *, stratified: bool,
                      shape: tuple[int, ...], spacing: str = "depth", generator: torch.Generator | None = None,
                      device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray parameters t and interval lengths, both (*shape, N) (broadcast with near/far), from N bins between near
    and far.

    near, far: floats or tensors broadcastable to (*shape, 1). Bin edges are equally spaced in t ("depth") or in 1/t
    ("disparity", finer near the camera; needs near > 0). Evaluation (stratified=False) puts t at the bin midpoints
    (in the spacing's variable); training (stratified=True) draws one uniform position inside the bins per entry of
    `shape`, so rays sharing an entry share their jitter: pass shape (B, 1) to give every ray of an image the same
    sample depths, which keeps the samples a grid (`CubeGrid`) and the tri-plane lookup factored. deltas are the
    bin widths in t in both cases, so sum(deltas) = far - near and a constant density sigma renders opacity
    1 - exp(-sigma (far - near)) exactly, whatever the jitter.
    Example: near 1, far 3, N = 4, depth spacing, midpoints -> t = [1.25, 1.75, 2.25, 2.75], deltas all 0.5.
    """
    _check_spacing(spacing)
    for value in (near, far):
        if isinstance(value, torch.Tensor):
            device, dtype = value.device, value.dtype
    fractions = torch.linspace(0.0, 1.0, n_samples + 1, device=device, dtype=dtype)
    near_t = torch.as_tensor(near, device=device, dtype=dtype)
    far_t = torch.as_tensor(far, device=device, dtype=dtype)
    if spacing == "depth":
        lo, hi = near_t, far_t
    else:
        lo, hi = 1.0 / near_t, 1.0 / far_t
    edges = lo + (hi - lo) * fractions  # (..., N + 1) in the spacing's variable
    if stratified:
        jitter = torch.rand(*shape, n_samples, generator=generator, device=device, dtype=dtype)
    else:
        jitter = torch.full((*shape, n_samples), 0.5, device=device, dtype=dtype)
    s = edges[..., :-1] + (edges[..., 1:] - edges[..., :-1]) * jitter
    if spacing == "depth":
        t, t_edges = s, edges
    else:
        t, t_edges = 1.0 / s, 1.0 / edges
    deltas = (t_edges[..., 1:] - t_edges[..., :-1]).expand_as(t)
    return t, deltas


@dataclass
class CubeGrid:
    """Cube coordinates of grid-structured samples: sample k of the ray of pixel row i, column j sits at
    (x[b, j], y[b, i], z[b, k]), so the xy-plane lookup depends on the pixel only and the xz / yz lookups on
    (column, sample) / (row, sample). Orthographic rays and the pixel-aligned camera's own rays have this structure.

    x: (B or 1, w); y: (B or 1, h); z: (B, N).
    """

    x: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor

    def rows(self, rows: slice) -> CubeGrid:
        return CubeGrid(self.x, self.y[:, rows], self.z)

    def shape(self) -> tuple[int, int, int, int]:
        """(B, h, w, N) of the samples."""
        return (max(self.x.shape[0], self.y.shape[0], self.z.shape[0]), self.y.shape[1], self.x.shape[1],
                self.z.shape[1])

    def points(self) -> torch.Tensor:
        """The samples as points (B, h * w, N, 3), row-major rays: the direct (unfactored) form."""
        b, h, w, n = self.shape()
        x = self.x.to(self.z.dtype)[:, None, :, None].expand(b, h, w, n)
        y = self.y.to(self.z.dtype)[:, :, None, None].expand(b, h, w, n)
        z = self.z[:, None, None, :].expand(b, h, w, n)
        return torch.stack([x, y, z], dim=-1).reshape(b, h * w, n, 3)

    def inside(self) -> torch.Tensor | None:
        """(B, h * w, N) mask of samples inside the closed cube, or None when all of them are."""
        axes = [(c.abs() <= 1.0) for c in (self.x, self.y, self.z)]
        if all(bool(a.all()) for a in axes):
            return None
        x, y, z = axes
        mask = y[:, :, None, None] & x[:, None, :, None] & z[:, None, None, :]
        return mask.reshape(mask.shape[0], -1, mask.shape[-1])


@dataclass
class CubeSamples:
    """Where the samples of a chunk of rays sit in the tri-plane cube: points xyz (B, r, N, 3), or the render's
    `CubeGrid` with the chunk's pixel rows `rows` (factored; r = rows * w). `points()` gives the points in both cases
    (for fields that need them); `chunk_grid()` the chunk's own grid. A field may reuse work across the chunks of one
    render through `grid`, which is the same object for all of them."""

    xyz: torch.Tensor | None = None
    grid: CubeGrid | None = None
    rows: slice = field(default_factory=lambda: slice(None))

    def chunk_grid(self) -> CubeGrid | None:
        return None if self.grid is None else self.grid.rows(self.rows)

    def points(self) -> torch.Tensor:
        return self.xyz if self.xyz is not None else self.chunk_grid().points()

    def inside(self) -> torch.Tensor | None:
        """(B, r, N) mask of samples inside the closed cube [-1, 1]^3, or None when all are inside."""
        if self.grid is not None:
            return self.chunk_grid().inside()
        return (self.xyz.abs() <= 1.0).all(dim=-1)
