"""Alpha compositing of samples along rays (emission-absorption volume rendering) as small pure functions.

Written by hand (a few lines) rather than depending on nerfacc, whose CUDA extension is not needed at our sizes.
Shapes: (...) are any leading ray dimensions, N samples per ray, C value channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from mtl3dcli.render.cameras import RenderCamera
from mtl3dcli.render.rays import CubeSamples, sample_along_rays


def render_weights(sigma: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Compositing weights w_i = T_i alpha_i of N samples per ray.

    alpha_i = 1 - exp(-sigma_i delta_i) (the chance the ray stops in sample i's interval) and
    T_i = exp(-sum_{j<i} sigma_j delta_j) (the chance it got there). T is an exclusive cumulative sum in log space,
    not a cumulative product of (1 - alpha), so gradients stay finite and correct where alpha = 1.

    sigma: (..., N) non-negative densities; deltas: (..., N) interval lengths. Returns weights (..., N).
    Example: sigma = [0, ln 2, ln 2], deltas = [1, 1, 1] -> alpha = [0, 0.5, 0.5], T = [1, 1, 0.5],
    weights = [0, 0.5, 0.25] (opacity 0.75).
    """
    optical = sigma * deltas
    alpha = -torch.expm1(-optical)
    before = torch.cumsum(optical, dim=-1)[..., :-1]
    transmittance = torch.exp(-torch.cat([torch.zeros_like(optical[..., :1]), before], dim=-1))
    return transmittance * alpha


def composite(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_i w_i v_i: weights (..., N), values (..., N, C) -> (..., C). Leftover mass (1 - opacity) renders 0.
    Computed in the promoted dtype of the two (under autocast the matmul picks its own)."""
    dtype = torch.promote_types(weights.dtype, values.dtype)
    return torch.einsum("...n,...nc->...c", weights.to(dtype), values.to(dtype))


def accumulated_opacity(weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i = 1 - T_final: weights (..., N) -> (...). Example: weights [0, 0.5, 0.25] -> 0.75."""
    return weights.sum(dim=-1)


def expected_depth(weights: torch.Tensor, t: torch.Tensor, far: torch.Tensor | float | None = None) -> torch.Tensor:
    """Expected termination distance sum_i w_i t_i: weights, t (..., N) -> (...).

    With `far` (a float, or a tensor (...) or (..., 1) as `sample_along_rays` takes) the leftover mass
    (1 - opacity) is placed at far, so an empty ray renders depth far instead of 0.
    Example: weights [0, 0.5, 0.25], t [0.5, 1.5, 2.5] -> 1.375; with far = 3 -> 1.375 + 0.25 * 3 = 2.125.
    """
    depth = (weights * t).sum(dim=-1)
    if far is None:
        return depth
    if isinstance(far, torch.Tensor) and far.dim() == weights.dim() and far.shape[-1] == 1:
        far = far[..., 0]
    return depth + (1.0 - accumulated_opacity(weights)) * far


@dataclass
class FieldOutput:
    """What a field gives `render_field` for the samples of a chunk of r rays (N samples each).

    density: sigma (B, r, N), non-negative. values: (B, r, N, C), composited by `render_field` with the weights; or
    instead `composite`, a function of the compositing weights (B, r, N) -> (B, r, C) for a field that composites
    its own way (e.g. recomputing its activations in backward instead of keeping them). shown: optional display-only
    values (B, r, N, C'), composited without gradient, so autograd keeps nothing of them.
    """

    density: torch.Tensor
    values: torch.Tensor | None = None
    composite: Callable[[torch.Tensor], torch.Tensor] | None = None
    shown: torch.Tensor | None = None

    def composited(self, weights: torch.Tensor) -> torch.Tensor:
        """sum_i w_i v_i of the values (B, r, C), or the field's own compositing of them."""
        return self.composite(weights) if self.composite is not None else composite(weights, self.values)


FieldFn = Callable[[CubeSamples], FieldOutput]


@dataclass
class RenderedRays:
    """What `render_field` returns for B images of R = h * w rays (row-major): values (B, R, C) composited with the
    weights, depth (B, R) in metres (the camera's map of the expected ray parameter), opacity (B, R), shown
    (B, R, C') the field's display-only values composited without gradient (None when it has none)."""

    values: torch.Tensor
    depth: torch.Tensor
    opacity: torch.Tensor
    shown: torch.Tensor | None = None


def render_field(field_fn: FieldFn, camera: RenderCamera, size: tuple[int, int], batch: int, n_samples: int, *,
                 device: torch.device | str = "cpu", stratified: bool = False, chunk: int | None = None,
                 generator: torch.Generator | None = None, empty_depth_at_far: bool = False,
                 factored: bool = True) -> RenderedRays:
    """Render a radiance-like field seen by `camera` at `size` (h, w), for `batch` images.

    field_fn: `CubeSamples` of a chunk of r rays (cube coordinates: `.grid` when factored, `.points()` always) ->
    `FieldOutput` (density, values, optional display-only values). Density is zero outside the cube [-1, 1]^3, the
    tri-plane's domain.
    Samples: N bins between the bundle's near and far in the camera's spacing, the stratified jitter shared by all
    rays of an image (one draw per image and sample index), so samples of cameras with a grid structure stay a grid
    and the field can factor its lookups (`factored`; False forces the per-point path, for tests). Rays go through
    in chunks of whole rows of about `chunk` rays (all images together); all samples are drawn up front, so the
    result does not depend on `chunk`. Compositing runs in float32 (sigma * delta is promoted). depth: the expected
    ray parameter, plus (1 - opacity) * far if `empty_depth_at_far`, mapped to metres by `camera.depth_metres`.
    """
    h, w = size
    rays = camera.rays(size, batch, device)
    b = rays.directions.shape[0]
    t, deltas = sample_along_rays(rays.near, rays.far, n_samples, stratified=stratified, shape=(b, 1),
                                  spacing=camera.spacing, generator=generator, device=rays.directions.device)
    grid = camera.grid(size, t) if factored else None
    rows = h if chunk is None else max(1, chunk // max(1, b * w))
    pieces = []
    for top in range(0, h, rows):
        rows_slice = slice(top, min(h, top + rows))
        ray_slice = slice(rows_slice.start * w, rows_slice.stop * w)
        if grid is not None:
            samples = CubeSamples(grid=grid, rows=rows_slice)
        else:
            samples = CubeSamples(xyz=camera.to_cube(rays.points(t, ray_slice)))
        field = field_fn(samples)
        sigma, inside = field.density, samples.inside()
        if inside is not None:
            sigma = torch.where(inside, sigma, torch.zeros_like(sigma))
        weights = render_weights(sigma, deltas)
        depth = expected_depth(weights, t, rays.far if empty_depth_at_far else None)
        shown = None
        if field.shown is not None:
            with torch.no_grad():
                shown = composite(weights, field.shown)
        pieces.append((field.composited(weights), depth, accumulated_opacity(weights), shown))
    composited, depth, opacity, shown = zip(*pieces)
    shown = torch.cat(shown, dim=1) if shown[0] is not None else None
    return RenderedRays(torch.cat(composited, dim=1), camera.depth_metres(torch.cat(depth, dim=1)),
                        torch.cat(opacity, dim=1), shown)
