"""Pixel and ray geometry: the one place for pixel grids, back-projection, projection, intrinsics and poses.

Conventions (DESIGN.md, "Cameras and coordinates"): pixel (u, v) has its centre at (u + 0.5, v + 0.5); the camera
frame is OpenCV's (x right, y down, z forward); depth is z-depth in metres; intrinsics K are upper triangular
[[fx, s, cx], [0, fy, cy], [0, 0, 1]] for the image size they belong to; poses are 4x4 camera-to-world matrices and
may be improper (det R = -1 after a horizontal flip), so every inverse here is a true inverse, never the R^T shortcut.

Functions are pure and take torch tensors with the shapes in their docstrings; a leading batch dimension of K or a
pose broadcasts against the leading dimension of the points. Those marked "numpy in, numpy out" also take numpy arrays
(the offline dataset code works in numpy float64) and then return numpy arrays of the same dtype. Written by hand: it
is a few lines of arithmetic, and K is inverted in closed form so the math stays exact and works in any dtype.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

__all__ = ["pixel_centres", "pinhole_intrinsics", "fov_focal", "scale_intrinsics", "pixel_rays", "camera_rays", "backproject", "project",
           "transform_points", "transform_vectors", "invert_pose", "relative_pose", "reproject", "covisible",
           "covisible_uv"]


def _numpy_in_numpy_out(fn):
    """Let `fn` take numpy arrays: they become tensors (same dtype) and tensor results come back as numpy."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        numpy = any(isinstance(a, np.ndarray) for a in (*args, *kwargs.values()))
        if not numpy:
            return fn(*args, **kwargs)
        convert = lambda a: torch.from_numpy(np.asarray(a)) if isinstance(a, np.ndarray) else a  # noqa: E731
        out = fn(*map(convert, args), **{k: convert(v) for k, v in kwargs.items()})
        if isinstance(out, tuple):
            return tuple(o.numpy() if isinstance(o, torch.Tensor) else o for o in out)
        return out.numpy()

    return wrapper


def _entries(K: torch.Tensor, ndim: int) -> tuple[torch.Tensor, ...]:
    """fx, s, cx, fy, cy of K (..., 3, 3), each shaped (..., 1, ..., 1) to broadcast against a tensor of `ndim`
    dimensions whose leading dimensions are K's."""
    lead = K.shape[:-2]
    view = lead + (1,) * (ndim - len(lead))
    return tuple(K[..., i, j].reshape(view) for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2)))


def pixel_centres(height: int, width: int, *, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(H, W, 2) pixel centres (u + 0.5, v + 0.5), row-major: entry [v, u] = (u + 0.5, v + 0.5)."""
    v = torch.arange(height, device=device, dtype=dtype) + 0.5
    u = torch.arange(width, device=device, dtype=dtype) + 0.5
    return torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1)


def normalized_pixel_centres(count: int, *, device: torch.device | str | None = None,
                             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(count,) centres of `count` pixels along an image axis in [-1, 1] coordinates: -1 + 2 (i + 0.5) / count.

    This is F.grid_sample's align_corners=False convention, so a plane of `count` pixels is read at its centres.
    Example: count = 4 -> [-0.75, -0.25, 0.25, 0.75]."""
    return (torch.arange(count, device=device, dtype=dtype) + 0.5) * (2.0 / count) - 1.0


def pinhole_intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """K (3, 3) float64 of a pinhole camera without skew, in pixels with pixel centres at u + 0.5: an image W wide
    has its centre at cx = W / 2. Every K this package makes (synthetic views, images without cameras) is built
    here; NYUv2's is scaled from its 640x480 calibration by `scale_intrinsics`."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def fov_focal(width: int, hfov_deg: float) -> float:
    """The focal length (pixels) that spans a horizontal field of view of `hfov_deg` degrees over `width` pixels:
    (W / 2) / tan(hfov / 2). Example: 90 degrees over 128 pixels -> 64."""
    return width / 2.0 / math.tan(math.radians(hfov_deg) / 2.0)


@_numpy_in_numpy_out
def scale_intrinsics(K: torch.Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> torch.Tensor:
    """K (..., 3, 3) of an image of `from_size` (H, W) -> K of the same view resized to `to_size` (H', W').

    K' = diag(W'/W, H'/H, 1) K, exact with pixel centres at u + 0.5 because the continuous coordinate x maps to
    (W'/W) x, as `F.interpolate(align_corners=False)` resamples. Example: halving 4x6 -> 2x3 halves fx, s, cx, fy, cy.
    """
    scale = torch.tensor([to_size[1] / from_size[1], to_size[0] / from_size[0], 1.0], dtype=K.dtype,
                         device=K.device)
    return scale[:, None] * K


@_numpy_in_numpy_out
def pixel_rays(uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-frame directions (..., 3) through image points uv (..., 2), scaled to z = 1 (numpy in, numpy out).

    K^-1 [u, v, 1] in closed form: y = (v - cy) / fy, x = (u - cx - s y) / fx, z = 1. So the point at ray parameter
    t along a direction has z-depth t. Example: K = [[2, 0, 1], [0, 4, 2], [0, 0, 1]], uv = (3, 6) -> (1, 1, 1).
    """
    fx, s, cx, fy, cy = _entries(K, uv.dim() - 1)
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - s * y) / fx
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


@_numpy_in_numpy_out
def camera_rays(K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Directions (..., H, W, 3), z = 1, through the pixel centres of an H x W image with intrinsics K (..., 3, 3)
    (numpy in, numpy out)."""
    uv = pixel_centres(height, width, device=K.device, dtype=K.dtype)
    uv = uv.reshape((1,) * (K.dim() - 2) + uv.shape)
    return pixel_rays(uv, K)


@_numpy_in_numpy_out
def backproject(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-frame points (..., H, W, 3) of a z-depth map (..., H, W) with intrinsics K (..., 3, 3)
    (numpy in, numpy out). The point of pixel (u, v) is depth[v, u] * K^-1 [u + 0.5, v + 0.5, 1]."""
    height, width = depth.shape[-2:]
    return camera_rays(K.to(depth.dtype), height, width) * depth[..., None]


@_numpy_in_numpy_out
def project(points: torch.Tensor, K: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Image points uv (..., 2) and z-depths (...) of camera-frame points (..., 3) (numpy in, numpy out).

    u = fx x / z + s y / z + cx, v = fy y / z + cy. z is clamped to `eps` in the division so points on or behind
    the camera give finite (meaningless) uv: test z > 0 before using them. Inverse of `backproject`:
    project(backproject(depth, K), K) = (pixel centres, depth).
    """
    fx, s, cx, fy, cy = _entries(K, points.dim() - 1)
    z = points[..., 2]
    x, y = points[..., 0] / z.clamp_min(eps), points[..., 1] / z.clamp_min(eps)
    return torch.stack([fx * x + s * y + cx, fy * y + cy], dim=-1), z


@_numpy_in_numpy_out
def transform_points(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """T (..., 4, 4) applied to points (..., 3): R p + t, with T's leading dims matching the points' leading dims
    (numpy in, numpy out)."""
    return transform_vectors(T, points) + T[..., :3, 3].reshape(T.shape[:-2] + (1,) * (points.dim() - T.dim() + 1)
                                                                 + (3,))


@_numpy_in_numpy_out
def transform_vectors(T: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """The linear part R of T (..., 4, 4) or T (..., 3, 3) applied to vectors (..., 3): directions and normals move
    this way (R is orthogonal for rigid or mirrored poses, so it is also the normals' inverse-transpose)."""
    R = T[..., :3, :3]
    lead = R.shape[:-2]
    R = R.reshape(lead + (1,) * (vectors.dim() - len(lead) - 1) + (3, 3))
    return (R @ vectors[..., None])[..., 0]


@_numpy_in_numpy_out
def invert_pose(T: torch.Tensor) -> torch.Tensor:
    """The inverse (..., 4, 4) of a pose (..., 4, 4): a linear solve, valid for improper (mirrored) poses."""
    eye = torch.eye(4, dtype=T.dtype, device=T.device).expand_as(T)
    return torch.linalg.solve(T, eye)


@_numpy_in_numpy_out
def relative_pose(pose_src: torch.Tensor, pose_dst: torch.Tensor) -> torch.Tensor:
    """The transform (..., 4, 4) taking points in the dst-camera frame to the src-camera frame (numpy in, numpy out).

    pose_src, pose_dst: camera-to-world (..., 4, 4). Result = inv(pose_src) @ pose_dst by a linear solve (valid for
    improper poses). Its linear part also rotates dst-frame vectors into the src frame.
    """
    return torch.linalg.solve(pose_src, pose_dst)


def reproject(depth_b: torch.Tensor, K_b: torch.Tensor, K_a: torch.Tensor,
              b_to_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each pixel of view B lands in view A: uv_a (B, H, W, 2) and the z-depth z_a (B, H, W) in A's frame.

    depth_b: (B, H, W) B's z-depth; K_b, K_a: (B, 3, 3) at their own image sizes; b_to_a: (B, 4, 4) B's frame -> A's
    frame (`relative_pose(pose_a, pose_b)`). Pixels of B are back-projected with B's depth, moved, projected with K_a.
    """
    points = transform_points(b_to_a, backproject(depth_b, K_b))
    return project(points, K_a)


def covisible(depth_b: torch.Tensor, K_b: torch.Tensor, depth_a: torch.Tensor, K_a: torch.Tensor,
              b_to_a: torch.Tensor, rel_tol: float = 0.05) -> torch.Tensor:
    """Pixels of view B whose surface view A also sees: (B, H_b, W_b) bool (`covisible_uv` without the uv)."""
    return covisible_uv(depth_b, K_b, depth_a, K_a, b_to_a, rel_tol)[0]


def covisible_uv(depth_b: torch.Tensor, K_b: torch.Tensor, depth_a: torch.Tensor, K_a: torch.Tensor,
                 b_to_a: torch.Tensor, rel_tol: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels of view B whose surface view A also sees, (B, H_b, W_b) bool, and where B's pixels land in A, uv_a
    (B, H_b, W_b, 2) (`reproject` of B's known depths; meaningless where B's depth is unknown).

    depth_b (B, H_b, W_b), depth_a (B, H_a, W_a): z-depth labels, 0 or non-finite = unknown; K_b, K_a (B, 3, 3);
    b_to_a (B, 4, 4). A pixel of B is covisible when its depth is known, its back-projected point lies in front of
    A and projects inside A's image, and A's depth at that pixel (nearest, no blending across depth edges) agrees
    with the point's A-frame depth z_a: |z_a - depth_a| <= rel_tol * depth_a. A surface hidden behind another one in
    A (z_a beyond A's depth), outside A's frustum, or where A's depth is unknown is not covisible (conservative).
    Example: two identical views -> every pixel with a known depth is covisible.
    """
    known_b = torch.isfinite(depth_b) & (depth_b > 0)
    uv, z_a = reproject(torch.where(known_b, depth_b, torch.zeros_like(depth_b)), K_b, K_a, b_to_a)
    height_a, width_a = depth_a.shape[-2:]
    u, v = uv[..., 0], uv[..., 1]
    inside = known_b & (z_a > 0) & (u >= 0) & (u < width_a) & (v >= 0) & (v < height_a)
    col = u.floor().clamp(0, width_a - 1).long()
    row = v.floor().clamp(0, height_a - 1).long()
    flat = depth_a.reshape(depth_a.shape[0], -1)
    seen = flat.gather(1, (row * width_a + col).reshape(flat.shape[0], -1)).reshape(z_a.shape)
    known_a = torch.isfinite(seen) & (seen > 0)
    agree = (z_a - seen).abs() <= rel_tol * seen
    return inside & known_a & agree, uv
