"""Cameras for the tri-plane renderer: which rays to cast, where their samples sit in the cube, what t means.

A renderable camera (`OrthographicCamera`, `NDCCamera`) answers four questions, all in float32 whatever autocast
says (ray math in half precision loses whole pixels and `linalg` refuses it):

    rays(size, batch, device) -> RayBundle        rays of an h x w render in the frame the field lives in
    to_cube(points) -> (B, r, N, 3)               those rays' sample points in the tri-plane cube [-1, 1]^3
    grid(size, t) -> CubeGrid | None              the same samples factored (x per column, y per row, z per
                                                  sample), when the rays allow it: the exact fast path
    depth_metres(t) -> metres                     a rendered (expected) ray parameter as z-depth in metres

plus `vectors_to_view(v)`, which rotates rendered camera-frame vectors (normals) from the field's frame into the
rendered camera's frame, and `spacing` ("depth" | "disparity": how samples are spread along t).
`PinholeCamera` is a pinhole view as a ray source (K, near/far, a transform into the source frame); it is rendered
through the `NDCCamera` of the source view, which defines the cube.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.geometry import (camera_rays, normalized_pixel_centres, project, scale_intrinsics, transform_vectors)
from mtl3dcli.render.rays import SPACINGS, CubeGrid, RayBundle, orthographic_rays, transform_rays

# Cube coordinates of samples far outside the cube (behind a camera, say) are clamped to this range: they are
# masked anyway, and huge coordinates must not reach the plane lookup's index arithmetic.
_CUBE_CLAMP = 2.0


def float32_math(device: torch.device | str):
    """Context in which camera math runs in float32 even inside an autocast region (CUDA fp16/bf16, CPU bf16)."""
    return torch.autocast(device_type=torch.device(device).type, enabled=False)


class RenderCamera(Protocol):
    """What the renderer asks of a camera (see the module docstring)."""

    spacing: str

    def rays(self, size: tuple[int, int], batch: int, device: torch.device | str) -> RayBundle: ...

    def to_cube(self, points: torch.Tensor) -> torch.Tensor: ...

    def grid(self, size: tuple[int, int], t: torch.Tensor) -> CubeGrid | None: ...

    def depth_metres(self, t: torch.Tensor) -> torch.Tensor: ...

    def vectors_to_view(self, vectors: torch.Tensor) -> torch.Tensor: ...


def _inverse_linear(transform: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) inverse of the linear part of (B, 4, 4) transforms, in float32 (a true inverse: mirrors allowed)."""
    with float32_math(transform.device):
        return torch.linalg.inv(transform[:, :3, :3].float())


def _pixel_grid(size: tuple[int, int], z: torch.Tensor) -> CubeGrid:
    """The sample grid of rays through the render pixels' centres (x, y in [-1, 1], shared by all images) at cube
    depths z (B, N): the grid of every camera whose rays are axis-aligned in tri-plane coordinates."""
    h, w = size
    x = normalized_pixel_centres(w, device=z.device)[None]
    y = normalized_pixel_centres(h, device=z.device)[None]
    return CubeGrid(x, y, z)


@dataclass
class OrthographicCamera:
    """The paper's camera: rays along +z through the pixel centres of the cube face z = -1; t in [0, 2] (cube
    units) crosses the cube and maps linearly onto [near, far] metres for the rendered depth.

    near, far: metres that the cube's z = -1 and z = 1 stand for. transform: (B, 4, 4) in cube units taking the
    rendered camera's cube frame into the field's (render-views turns the rays about the cube centre), None = the
    training view, whose samples form a `CubeGrid` (x per column, y per row, z = t - 1 per sample).
    """

    near: float
    far: float
    transform: torch.Tensor | None = None
    spacing: str = "depth"

    def rays(self, size: tuple[int, int], batch: int, device: torch.device | str) -> RayBundle:
        h, w = size
        with float32_math(device):
            origins, directions = orthographic_rays(h, w, device=device)
            origins, directions = origins.expand(batch, -1, -1), directions.expand(batch, -1, -1)
            if self.transform is not None:
                origins, directions = transform_rays(origins, directions, self.transform.float())
        return RayBundle(origins, directions, 0.0, 2.0, size)

    def to_cube(self, points: torch.Tensor) -> torch.Tensor:
        return points

    def grid(self, size: tuple[int, int], t: torch.Tensor) -> CubeGrid | None:
        """t: (B, 1, N) shared sample parameters -> the samples' grid, or None for a moved camera."""
        if self.transform is not None or t.shape[1] != 1:
            return None
        with float32_math(t.device):
            return _pixel_grid(size, t[:, 0, :] - 1.0)  # the ray points' z = -1 + t, computed as they are

    def depth_metres(self, t: torch.Tensor) -> torch.Tensor:
        return self.near + t * ((self.far - self.near) / 2.0)

    def vectors_to_view(self, vectors: torch.Tensor) -> torch.Tensor:
        if self.transform is None:
            return vectors
        return transform_vectors(_inverse_linear(self.transform), vectors.float())


@dataclass
class PinholeCamera:
    """A pinhole view as a ray source. K: (B, 3, 3) intrinsics of an image of `image_size` (H, W); rays at another
    render size use K scaled to it (pixel centres stay pixel centres). near, far: the range of this camera's
    z-depth sampled along every ray (directions have z = 1 in this camera, so t is its z-depth in metres).
    transform: (B, 4, 4) taking this camera's frame into the frame the field lives in (e.g. a partner view B into
    the source view A: `relative_pose(pose_a, pose_b)`), None = the field's own camera.
    """

    K: torch.Tensor
    image_size: tuple[int, int]
    near: float
    far: float
    transform: torch.Tensor | None = None

    def __post_init__(self):
        if not 0 < self.near < self.far:
            raise Mtl3dError(f"camera near/far must satisfy 0 < near < far, got {self.near}, {self.far}")

    def rays(self, size: tuple[int, int], batch: int | None = None,
             device: torch.device | str | None = None) -> RayBundle:
        h, w = size
        with float32_math(self.K.device):
            K = scale_intrinsics(self.K.float(), self.image_size, size)
            directions = camera_rays(K, h, w).reshape(K.shape[0], h * w, 3)
            origins = torch.zeros_like(directions)
            if self.transform is not None:
                origins, directions = transform_rays(origins, directions, self.transform.float())
        return RayBundle(origins, directions, self.near, self.far, size)


@dataclass
class NDCCamera:
    """The pixel-aligned cube of a pinhole view A (`source`), and a camera rendering it (`view`, default A).

    A point p of A's frame sits at cube x = 2 u / W - 1, y = 2 v / H - 1 with (u, v) = A's projection of p at A's
    image size (H, W), and cube z = the normalized depth of p between near and far: 2 (z - near) / (far - near) - 1
    ("depth" spacing, the orthographic camera's depth map) or the same in inverse depth ("disparity": finer near the
    camera). Every point on the ray of one of A's pixels therefore reads the xy plane at that pixel's centre: the
    planes are aligned with the image the encoder saw, as in the orthographic camera, while the geometry stays
    perspective for other views. Rays of `view` (a `PinholeCamera` whose transform maps its frame into A's, e.g. a
    partner view B) are cast in A's frame and their samples mapped into A's cube; the samples of A's own rays form a
    `CubeGrid` (x per column, y per row, z per sample), the factored fast path. t is the viewing camera's z-depth.
    """

    source: PinholeCamera
    view: PinholeCamera | None = None
    spacing: str = "depth"

    def __post_init__(self):
        if self.spacing not in SPACINGS:
            raise Mtl3dError(f"unknown camera spacing {self.spacing!r}; choose one of {', '.join(SPACINGS)}")
        if self.source.transform is not None:
            raise Mtl3dError("the source view of an NDC camera defines the field's frame: it has no transform")

    @property
    def _viewer(self) -> PinholeCamera:
        return self.view if self.view is not None else self.source

    def rays(self, size: tuple[int, int], batch: int | None = None,
             device: torch.device | str | None = None) -> RayBundle:
        return self._viewer.rays(size)

    def _cube_z(self, z: torch.Tensor) -> torch.Tensor:
        near, far = self.source.near, self.source.far
        if self.spacing == "depth":
            return (z - near) * (2.0 / (far - near)) - 1.0
        return (1.0 / near - 1.0 / z.clamp_min(1e-6)) * (2.0 / (1.0 / near - 1.0 / far)) - 1.0

    def to_cube(self, points: torch.Tensor) -> torch.Tensor:
        """points (B, r, N, 3) in A's frame -> cube coordinates (B, r, N, 3); points behind A land outside."""
        height, width = self.source.image_size
        with float32_math(points.device):
            uv, z = project(points.float(), self.source.K.float())
            cube = torch.stack([uv[..., 0] * (2.0 / width) - 1.0, uv[..., 1] * (2.0 / height) - 1.0,
                                self._cube_z(z)], dim=-1)
            return cube.clamp(-_CUBE_CLAMP, _CUBE_CLAMP)

    def grid(self, size: tuple[int, int], t: torch.Tensor) -> CubeGrid | None:
        """t: (B, 1, N) -> the grid of A's own samples (x, y the render pixels' centres), None for another view."""
        if self.view is not None or t.shape[1] != 1:
            return None
        with float32_math(t.device):
            return _pixel_grid(size, self._cube_z(t[:, 0, :].float()))

    def depth_metres(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def vectors_to_view(self, vectors: torch.Tensor) -> torch.Tensor:
        """Field-frame (A's camera frame) vectors (B, ..., 3) -> the viewing camera's frame."""
        if self.view is None or self.view.transform is None:
            return vectors
        return transform_vectors(_inverse_linear(self.view.transform), vectors.float())
