"""Alpha compositing of samples along rays (emission-absorption volume rendering) as small pure functions.

Written by hand (a few lines) rather than depending on nerfacc, whose CUDA extension is not needed at our sizes.
Shapes: (...) are any leading ray dimensions, N samples per ray, C value channels.
"""

from __future__ import annotations

from typing import Callable

import torch

from mtl3dcli.render.rays import sample_along_rays

FieldFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


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
    """sum_i w_i v_i: weights (..., N), values (..., N, C) -> (..., C). Leftover mass (1 - opacity) renders 0."""
    return torch.einsum("...n,...nc->...c", weights, values)


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


def render_field(field_fn: FieldFn, origins: torch.Tensor, directions: torch.Tensor, near: torch.Tensor | float,
                 far: torch.Tensor | float, n_samples: int, *, stratified: bool = False, chunk: int | None = None,
                 generator: torch.Generator | None = None, empty_depth_at_far: bool = False) -> dict[str, torch.Tensor]:
    """Render a radiance-like field along rays, `chunk` rays at a time to bound memory.

    field_fn: points (B, r, N, 3) -> (sigma (B, r, N), values (B, r, N, C)); origins, directions: (B, R, 3);
    near, far: floats or per-ray tensors (B, R, 1). All samples are drawn up front (one random stream), so the
    result does not depend on `chunk`. Returns {"values": (B, R, C), "depth": (B, R), "opacity": (B, R)};
    depth is the expected t (z-depth for pinhole rays), plus (1 - opacity) * far if `empty_depth_at_far`.
    """
    b, r, _ = torch.broadcast_shapes(origins.shape, directions.shape)
    origins, directions = origins.expand(b, r, 3), directions.expand(b, r, 3)
    t, deltas = sample_along_rays(near, far, n_samples, stratified=stratified, shape=(b, r), generator=generator,
                                  device=origins.device, dtype=origins.dtype)
    far_per_ray = torch.as_tensor(far, device=origins.device, dtype=origins.dtype).expand(b, r, 1)[..., 0]
    step = r if chunk is None else max(1, chunk)
    pieces = []
    for start in range(0, r, step):
        rays = slice(start, start + step)
        points = origins[:, rays, None, :] + t[:, rays, :, None] * directions[:, rays, None, :]
        sigma, values = field_fn(points)
        weights = render_weights(sigma, deltas[:, rays])
        pieces.append({
            "values": composite(weights, values),
            "depth": expected_depth(weights, t[:, rays], far_per_ray[:, rays] if empty_depth_at_far else None),
            "opacity": accumulated_opacity(weights),
        })
    return {key: torch.cat([piece[key] for piece in pieces], dim=1) for key in pieces[0]}
