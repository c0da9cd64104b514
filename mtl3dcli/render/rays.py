"""Camera rays, samples along them, and the maps between camera frames and the tri-plane cube.

Conventions (see DESIGN.md): camera frame x right, y down, z forward (OpenCV); pixel centres at (u + 0.5, v + 0.5);
the tri-plane lives in the cube [-1, 1]^3. Pinhole directions have z = 1, so the ray parameter t is the z-depth.
Poses are 4x4 camera-to-world matrices and may be improper (det = -1, a mirrored camera).
"""

from __future__ import annotations

import torch


def _pixel_grid(height: int, width: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-major pixel centres u + 0.5, v + 0.5, each (H * W,)."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                          torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return u.reshape(-1) + 0.5, v.reshape(-1) + 0.5


def orthographic_rays(height: int, width: int, *, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays along +z through the pixel centres of an H x W image spanning the cube face z = -1 (the paper's camera).

    Returns origins (H * W, 3) at x = -1 + 2 (u + 0.5) / W, y = -1 + 2 (v + 0.5) / H, z = -1 in row-major pixel
    order, and directions (H * W, 3) = (0, 0, 1). With near = 0 and far = 2 the rays cross the whole cube.
    """
    u, v = _pixel_grid(height, width, device, dtype)
    origins = torch.stack([2.0 * u / width - 1.0, 2.0 * v / height - 1.0, torch.full_like(u, -1.0)], dim=-1)
    directions = torch.zeros_like(origins)
    directions[:, 2] = 1.0
    return origins, directions


def pinhole_rays(K: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from the camera centre through the pixel centres: K (B, 3, 3) -> origins, directions (B, H * W, 3).

    directions = K^-1 [u + 0.5, v + 0.5, 1], not normalized: their z is exactly 1 (we divide by it to remove the
    inverse's rounding), so the point at ray parameter t has z-depth t. Origins are zeros.
    """
    u, v = _pixel_grid(height, width, K.device, K.dtype)
    pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (R, 3)
    directions = torch.einsum("bij,rj->bri", torch.linalg.inv(K), pixels)
    directions = directions / directions[..., 2:3]
    return torch.zeros_like(directions), directions


def transform_rays(origins: torch.Tensor, directions: torch.Tensor,
                   transform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a 4x4 transform (B, 4, 4) to rays: origins as points, directions rotated only.

    origins, directions: (B, ..., 3). The transform may be improper (a mirror). Directions are not renormalized, so
    t keeps meaning the source camera's z-depth after the move.
    """
    rotation = transform[:, :3, :3]
    translation = transform[:, :3, 3]
    b = transform.shape[0]
    o = origins.reshape(b, -1, 3) @ rotation.transpose(1, 2) + translation[:, None, :]
    d = directions.reshape(b, -1, 3) @ rotation.transpose(1, 2)
    return o.reshape(origins.shape), d.reshape(directions.shape)


def relative_pose(pose_src: torch.Tensor, pose_dst: torch.Tensor) -> torch.Tensor:
    """The transform (B, 4, 4) taking points in the dst-camera frame to the src-camera frame.

    pose_src, pose_dst: camera-to-world (B, 4, 4). Result = inv(pose_src) @ pose_dst, computed by a linear solve
    (a true inverse, valid for improper or scaled poses, not the R^T shortcut).
    """
    return torch.linalg.solve(pose_src, pose_dst)


def sample_along_rays(near: torch.Tensor | float, far: torch.Tensor | float, n_samples: int, *, stratified: bool,
                      shape: tuple[int, ...], generator: torch.Generator | None = None,
                      device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray parameters t and interval lengths, both (*shape, N), from N equal bins between near and far.

    near, far: floats or per-ray tensors broadcastable to (*shape, 1). Bin edges are linspace(near, far, N + 1).
    Evaluation (stratified=False) puts t at the bin midpoints; training (stratified=True) draws t uniformly inside
    each bin. deltas are the bin widths in both cases, so sum(deltas) = far - near and a constant density sigma
    renders opacity 1 - exp(-sigma (far - near)) exactly, whatever the jitter.
    """
    if isinstance(near, torch.Tensor):
        device, dtype = near.device, near.dtype
    elif isinstance(far, torch.Tensor):
        device, dtype = far.device, far.dtype
    fractions = torch.linspace(0.0, 1.0, n_samples + 1, device=device, dtype=dtype)
    near_t = torch.as_tensor(near, device=device, dtype=dtype)
    far_t = torch.as_tensor(far, device=device, dtype=dtype)
    edges = near_t + (far_t - near_t) * fractions  # (..., N + 1)
    edges = edges.expand(*shape, n_samples + 1)
    lower, upper = edges[..., :-1], edges[..., 1:]
    deltas = upper - lower
    if stratified:
        jitter = torch.rand(lower.shape, generator=generator, device=device, dtype=dtype)
    else:
        jitter = torch.full_like(lower, 0.5)
    return lower + deltas * jitter, deltas


def frustum_box(K: torch.Tensor, height: int, width: int, near: torch.Tensor | float,
                far: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """The axis-aligned box (box_min, box_max), each (B, 3), in camera coordinates enclosing the view frustum.

    K: (B, 3, 3); near, far: z-depths, floats or (B,) tensors. The frustum is bounded by the image corners (0, 0) and
    (W, H) (outer pixel edges, not centres) between the planes z = near and z = far; its 8 corners span the box.
    """
    corners = torch.tensor([[0.0, 0.0, 1.0], [width, 0.0, 1.0], [0.0, height, 1.0], [width, height, 1.0]],
                           device=K.device, dtype=K.dtype)
    rays = torch.einsum("bij,cj->bci", torch.linalg.inv(K), corners)
    rays = rays / rays[..., 2:3]  # z = 1
    b = K.shape[0]
    near_t = torch.as_tensor(near, device=K.device, dtype=K.dtype).expand(b)
    far_t = torch.as_tensor(far, device=K.device, dtype=K.dtype).expand(b)
    points = torch.cat([rays * near_t[:, None, None], rays * far_t[:, None, None]], dim=1)  # (B, 8, 3)
    return points.amin(dim=1), points.amax(dim=1)


def points_to_cube(xyz: torch.Tensor, box_min: torch.Tensor, box_max: torch.Tensor) -> torch.Tensor:
    """Affinely map points (B, ..., 3) so that the box [box_min, box_max] (each (B, 3)) becomes [-1, 1]^3."""
    view = (xyz.shape[0],) + (1,) * (xyz.dim() - 2) + (3,)
    lo, hi = box_min.reshape(view), box_max.reshape(view)
    return 2.0 * (xyz - lo) / (hi - lo) - 1.0
