"""Tri-plane volume renderer: cameras, samples, tri-plane lookup (direct and factored), compositing. Answers derived
by hand (see each test's comment)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.geometry import project
from mtl3dcli.render.cameras import NDCCamera, OrthographicCamera, PinholeCamera
from mtl3dcli.render.rays import CubeGrid, CubeSamples, orthographic_rays, sample_along_rays
from mtl3dcli.render.triplane import (AGGREGATIONS, inside_cube, linear_read_matrix, sample_triplane,
                                      sample_triplane_grid, triplane_feature_dim)
from mtl3dcli.render.volume import (FieldOutput, accumulated_opacity, composite, expected_depth, render_field,
                                   render_weights)

D64 = torch.float64
K = torch.tensor([[[500.0, 2.0, 320.0], [0.0, 480.0, 240.0], [0.0, 0.0, 1.0]]])  # a 480 x 640 camera, skewed


# ---------------------------------------------------------------- rays and cameras


def test_orthographic_rays_hit_pixel_centres_on_the_near_face():
    origins, directions = orthographic_rays(2, 4, dtype=D64)
    # pixel (u=3, v=1) is row-major index 1*4+3 = 7: x = -1 + 2*3.5/4 = 0.75, y = -1 + 2*1.5/2 = 0.5
    assert origins.shape == (8, 3)
    assert origins[7].tolist() == [0.75, 0.5, -1.0]
    assert origins[0].tolist() == [-0.75, -0.5, -1.0]
    assert (directions == torch.tensor([0.0, 0.0, 1.0], dtype=D64)).all()


def test_pinhole_ray_at_depth_z_projects_back_to_its_render_pixel_centre():
    # K belongs to 480 x 640; rendering at 3 x 5 scales it by (5/640, 3/480): render pixel (j, i) covers source
    # pixels around ((j + 0.5) * 128, (i + 0.5) * 160), and its ray must project there at every depth.
    camera = PinholeCamera(K, (480, 640), near=1.0, far=4.0)
    rays = camera.rays((3, 5))
    assert (rays.origins == 0).all() and torch.allclose(rays.directions[..., 2], torch.ones(1, 15))
    assert (rays.near, rays.far) == (1.0, 4.0)
    v, u = torch.meshgrid(torch.arange(3.0), torch.arange(5.0), indexing="ij")
    expected = torch.stack([(u.reshape(-1) + 0.5) * 128, (v.reshape(-1) + 0.5) * 160], dim=-1)
    for z in (1.0, 2.5):
        uv, depth = project(rays.origins + z * rays.directions, K)
        torch.testing.assert_close(uv[0], expected, rtol=0, atol=1e-3)
        torch.testing.assert_close(depth, torch.full((1, 15), z))


def test_ndc_camera_is_pixel_aligned():
    # Every sample on the ray of render pixel (i, j) maps to cube (x, y) = (-1 + 2 (j + 0.5) / w, -1 + 2 (i + 0.5) / h),
    # the centre of that pixel in the plane's [-1, 1] coordinates, whatever its depth; cube z is the normalized depth.
    near, far = 1.0, 4.0
    for spacing in ("depth", "disparity"):
        camera = NDCCamera(PinholeCamera(K, (480, 640), near, far), spacing=spacing)
        rays = camera.rays((3, 5))
        t, _ = sample_along_rays(near, far, 7, stratified=True, shape=(1, 1), spacing=spacing)
        cube = camera.to_cube(rays.points(t))  # (1, 15, 7, 3)
        v, u = torch.meshgrid(torch.arange(3.0), torch.arange(5.0), indexing="ij")
        x = (-1 + 2 * (u.reshape(-1) + 0.5) / 5)[:, None].expand(15, 7)
        y = (-1 + 2 * (v.reshape(-1) + 0.5) / 3)[:, None].expand(15, 7)
        torch.testing.assert_close(cube[0, ..., 0], x, rtol=0, atol=1e-5)
        torch.testing.assert_close(cube[0, ..., 1], y, rtol=0, atol=1e-5)
        z = t[0, 0]
        expected = 2 * (z - near) / (far - near) - 1 if spacing == "depth" else 2 * (1 - 1 / z) / (1 - 1 / far) - 1
        torch.testing.assert_close(cube[0, ..., 2], expected.expand(15, 7), rtol=0, atol=1e-5)
        # the factored description of the same samples
        grid = camera.grid((3, 5), t)
        torch.testing.assert_close(grid.points(), cube, rtol=0, atol=1e-5)


def test_ndc_partner_rays_map_into_the_source_cube():
    # A partner camera B one metre to the right of A, looking the same way: the A-frame point of B's pixel at depth z
    # is p = (x_B + 1, y_B, z); A sees it at u = fx (x_B + 1) / z + s y / z + cx, i.e. shifted right by fx / z pixels.
    near, far = 1.0, 5.0
    to_a = torch.eye(4)[None].clone()
    to_a[0, 0, 3] = 1.0
    source = PinholeCamera(K, (480, 640), near, far)
    camera = NDCCamera(source, PinholeCamera(K, (480, 640), near, far, to_a))
    rays = camera.rays((3, 5))
    assert camera.grid((3, 5), torch.ones(1, 1, 4)) is None  # a moved camera takes the general path
    t = torch.tensor([[[2.0, 4.0]]])
    cube = camera.to_cube(rays.points(t))
    own = NDCCamera(source).to_cube(source.rays((3, 5)).points(t))
    shift = 2 * 500.0 / t[0, 0] / 640  # fx / z pixels in cube units (2 / W per pixel)
    torch.testing.assert_close(cube[..., 0], own[..., 0] + shift, rtol=0, atol=1e-5)
    torch.testing.assert_close(cube[..., 1:], own[..., 1:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_camera_math_is_float32_under_autocast(dtype):
    source = PinholeCamera(K.to(dtype), (480, 640), 1.0, 4.0)
    with torch.autocast("cpu", dtype=dtype):
        camera = NDCCamera(source, PinholeCamera(K, (480, 640), 1.0, 4.0, torch.eye(4)[None].to(dtype)))
        rays = camera.rays((3, 5))
        cube = camera.to_cube(rays.points(torch.full((1, 1, 2), 2.0)))
        ortho = OrthographicCamera(1.0, 4.0, torch.eye(4)[None].to(dtype)).rays((2, 2), 1, "cpu")
    assert rays.directions.dtype == cube.dtype == ortho.origins.dtype == torch.float32


def test_sample_along_rays_midpoints_and_stratified_bins():
    t, deltas = sample_along_rays(1.0, 3.0, 4, stratified=False, shape=(2,), dtype=D64)
    assert t.tolist() == [[1.25, 1.75, 2.25, 2.75]] * 2
    assert deltas.tolist() == [[0.5] * 4] * 2
    near = torch.tensor([[0.0], [1.0]], dtype=D64)
    far = torch.tensor([[1.0], [5.0]], dtype=D64)
    generator = torch.Generator().manual_seed(0)
    t, deltas = sample_along_rays(near, far, 8, stratified=True, shape=(2,), generator=generator)
    assert t.dtype == D64
    edges = near + (far - near) * torch.linspace(0, 1, 9, dtype=D64)
    assert ((t >= edges[:, :-1]) & (t <= edges[:, 1:])).all()
    torch.testing.assert_close(deltas.sum(-1), (far - near)[:, 0])
    assert not torch.allclose(t, (edges[:, :-1] + edges[:, 1:]) / 2)


def test_stratified_jitter_is_shared_by_the_rays_of_an_image():
    # shape (B, 1): one jitter per image and sample index, broadcast over the rays of per-ray near/far
    near = torch.tensor([[[1.0], [2.0], [3.0]]]).expand(2, 3, 1)
    t, deltas = sample_along_rays(near, near + 1.0, 4, stratified=True, shape=(2, 1),
                                  generator=torch.Generator().manual_seed(1))
    assert t.shape == deltas.shape == (2, 3, 4)
    torch.testing.assert_close(t - near, (t - near)[:, :1].expand(2, 3, 4))  # same offsets on every ray
    assert not torch.allclose(t[0], t[1])  # a fresh draw per image


def test_disparity_spacing():
    # near 1, far 4: disparity edges 1, 0.8125, 0.625, 0.4375, 0.25 -> t edges 1, 16/13, 1.6, 16/7, 4; midpoints in
    # disparity 0.90625, 0.71875, 0.53125, 0.34375 -> t = their inverses; deltas = t edge differences, summing to 3
    t, deltas = sample_along_rays(1.0, 4.0, 4, stratified=False, shape=(1,), spacing="disparity", dtype=D64)
    torch.testing.assert_close(t[0], 1 / torch.tensor([0.90625, 0.71875, 0.53125, 0.34375], dtype=D64))
    edges = torch.tensor([1.0, 16 / 13, 1.6, 16 / 7, 4.0], dtype=D64)
    torch.testing.assert_close(deltas[0], edges[1:] - edges[:-1])
    with pytest.raises(Mtl3dError, match="spacing 'log'"):
        sample_along_rays(1.0, 4.0, 4, stratified=False, shape=(1,), spacing="log")


# ---------------------------------------------------------------- tri-plane


def _centre(index: int, size: int) -> float:
    """Cube coordinate of plane pixel `index` along an axis of `size` pixels (align_corners=False)."""
    return -1.0 + (2 * index + 1) / size


@pytest.mark.parametrize("plane", [0, 1, 2])
def test_sample_triplane_reads_each_plane_at_its_pixel_centres(plane):
    hp, wp, c = 3, 5, 2
    planes = torch.zeros(1, 3, c, hp, wp, dtype=D64)
    planes[0, plane] = torch.arange(c * hp * wp, dtype=D64).reshape(c, hp, wp) + 1
    points, expected = [], []
    for i in range(hp):
        for j in range(wp):
            x_w, y_h, free = _centre(j, wp), _centre(i, hp), 0.37
            # plane 0: (x, y) -> (width, height); plane 1: (x, z); plane 2: (z, y)
            points.append([(x_w, y_h, free), (x_w, free, y_h), (free, y_h, x_w)][plane])
            expected.append(planes[0, plane, :, i, j])
    out = sample_triplane(planes, torch.tensor([points], dtype=D64))
    torch.testing.assert_close(out[0], torch.stack(expected))


def test_sample_triplane_aggregations_at_a_shared_grid_point():
    size, c = 4, 3
    generator = torch.Generator().manual_seed(1)
    planes = torch.rand(2, 3, c, size, size, generator=generator, dtype=D64) + 0.5
    a, b_, k = 1, 2, 3  # x at column a, y at row b_, z at index k
    xyz = torch.tensor([[_centre(a, size), _centre(b_, size), _centre(k, size)]], dtype=D64).expand(2, 1, 3)
    f_xy, f_xz, f_yz = planes[:, 0, :, b_, a], planes[:, 1, :, k, a], planes[:, 2, :, b_, k]
    expected = {"sum": f_xy + f_xz + f_yz, "mean": (f_xy + f_xz + f_yz) / 3, "product": f_xy * f_xz * f_yz,
                "concat": torch.cat([f_xy, f_xz, f_yz], dim=-1)}
    assert set(expected) == set(AGGREGATIONS)
    for name, value in expected.items():
        out = sample_triplane(planes, xyz, name)
        assert out.shape == (2, 1, triplane_feature_dim(c, name))
        torch.testing.assert_close(out[:, 0], value)
        grid = CubeGrid(xyz[:, 0, :1], xyz[:, 0, 1:2], xyz[:, 0, 2:])
        torch.testing.assert_close(sample_triplane_grid(planes, grid, name)[:, 0, 0], value)


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_factored_lookup_equals_the_per_sample_lookup_with_gradients(aggregation, padding_mode):
    # a random grid (some coordinates outside the cube, one shared x/y over the batch), float32 as in training;
    # gradients reach the planes and the coordinates alike
    generator = torch.Generator().manual_seed(7)
    planes = torch.randn(2, 3, 4, 5, 6, generator=generator, requires_grad=True)
    coords = (torch.rand(1, 7, generator=generator) * 2.2 - 1.1, torch.rand(1, 3, generator=generator) * 2 - 1,
              torch.rand(2, 6, generator=generator) * 2.2 - 1.1)
    coords = tuple(c.requires_grad_() for c in coords)
    grid = CubeGrid(*coords)
    weights = torch.randn(2, 21, 6, triplane_feature_dim(4, aggregation), generator=generator)
    factored = sample_triplane_grid(planes, grid, aggregation, padding_mode=padding_mode)
    grads_factored = torch.autograd.grad((factored * weights).sum(), (planes, *coords))
    direct = sample_triplane(planes, grid.points(), aggregation, padding_mode=padding_mode)
    grads_direct = torch.autograd.grad((direct * weights).sum(), (planes, *coords))
    torch.testing.assert_close(factored, direct, rtol=0, atol=1e-5)
    for got, expected in zip(grads_factored, grads_direct):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_linear_read_matrix_weights_and_padding():
    # 4 pixels: centres at -0.75, -0.25, 0.25, 0.75. -0.5 lies midway between pixels 0 and 1; -1 is half a pixel
    # before pixel 0 (zeros: half its weight is lost outside; border: pixel 0 whole); 0.75 is pixel 3 exactly
    coords = torch.tensor([[-0.5, -1.0, 0.75, 2.0]], dtype=D64)
    zeros = linear_read_matrix(coords, 4)
    expected = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=D64)
    torch.testing.assert_close(zeros[0], expected)
    border = linear_read_matrix(coords, 4, "border")
    expected[1], expected[3] = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 0, 0, 1.0])
    torch.testing.assert_close(border[0], expected)


def test_factored_lookup_reads_float32_under_cpu_autocast():
    planes = torch.randn(1, 3, 4, 5, 6)
    grid = CubeGrid(torch.rand(1, 7) * 2 - 1, torch.rand(1, 3) * 2 - 1, torch.rand(1, 6) * 2 - 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = sample_triplane_grid(planes.bfloat16(), grid)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, sample_triplane_grid(planes.bfloat16().float(), grid))


def test_sample_triplane_outside_the_cube_and_extra_dims():
    planes = torch.ones(1, 3, 2, 4, 4, dtype=D64)
    xyz = torch.tensor([[[[1.8, 0.0, 0.0], [1.8, -1.8, 1.8], [0.0, 0.0, 0.0]]]], dtype=D64)  # (1, 1, 3, 3)
    out = sample_triplane(planes, xyz)
    assert out.shape == (1, 1, 3, 2)
    # x out of the cube: the xy and xz planes give zeros, the yz plane still reads 1; all out: 0; inside: 3
    assert out[0, 0, :, 0].tolist() == [1.0, 0.0, 3.0]
    assert inside_cube(xyz)[0, 0].tolist() == [False, False, True]
    assert CubeSamples(xyz=xyz[0]).inside()[0].tolist() == [False, False, True]
    border = sample_triplane(planes, xyz, padding_mode="border")
    assert border[0, 0, :, 0].tolist() == [3.0, 3.0, 3.0]


def test_unknown_aggregation_is_a_clear_error():
    with pytest.raises(Mtl3dError, match="aggregation 'max'"):
        sample_triplane(torch.zeros(1, 3, 1, 2, 2), torch.zeros(1, 1, 3), "max")
    with pytest.raises(Mtl3dError, match="aggregation"):
        triplane_feature_dim(4, "median")


# ---------------------------------------------------------------- volume rendering


def test_weights_of_a_hand_computed_three_sample_ray():
    sigma = torch.tensor([1.0, 2.0, 3.0], dtype=D64)
    deltas = torch.tensor([0.5, 0.5, 1.0], dtype=D64)
    # sigma*delta = [0.5, 1, 3]; T = [1, e^-0.5, e^-1.5]; w_i = T_i - T_{i+1}
    e = math.exp
    expected = torch.tensor([1 - e(-0.5), e(-0.5) - e(-1.5), e(-1.5) - e(-4.5)], dtype=D64)
    weights = render_weights(sigma, deltas)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(accumulated_opacity(weights), torch.tensor(1 - e(-4.5), dtype=D64))
    # the docstring example: sigma = [0, ln 2, ln 2], unit deltas -> [0, 0.5, 0.25]
    weights = render_weights(torch.tensor([0.0, math.log(2), math.log(2)], dtype=D64), torch.ones(3, dtype=D64))
    torch.testing.assert_close(weights, torch.tensor([0.0, 0.5, 0.25], dtype=D64))
    t = torch.tensor([0.5, 1.5, 2.5], dtype=D64)
    torch.testing.assert_close(expected_depth(weights, t), torch.tensor(1.375, dtype=D64))
    torch.testing.assert_close(expected_depth(weights, t, far=3.0), torch.tensor(2.125, dtype=D64))
    values = torch.tensor([[9.0, 9.0], [2.0, 4.0], [4.0, 8.0]], dtype=D64)
    torch.testing.assert_close(composite(weights, values), torch.tensor([2.0, 4.0], dtype=D64))


def test_weights_gradients_are_finite_where_alpha_is_one():
    sigma = torch.tensor([1e4, 1.0, 2.0], dtype=D64, requires_grad=True)
    weights = render_weights(sigma, torch.ones(3, dtype=D64))
    assert weights[0].item() == 1.0 and weights[1].item() == 0.0
    (weights * torch.tensor([1.0, 2.0, 3.0], dtype=D64)).sum().backward()
    # w_0 = 1 - exp(-s0): dw_0/ds0 = exp(-1e4) = 0; w_1, w_2 carry the factor exp(-s0) = 0 in every derivative
    assert torch.isfinite(sigma.grad).all()
    assert sigma.grad.abs().max().item() == 0.0


def _constant(sigma_value: float):
    def field(samples: CubeSamples):
        points = samples.points()
        return FieldOutput(torch.full(points.shape[:-1], sigma_value), torch.ones(*points.shape[:-1], 1))

    return field


@pytest.mark.parametrize("stratified", [False, True])
@pytest.mark.parametrize("camera", ["orthographic", "ndc"])
def test_constant_density_gives_exact_opacity(stratified, camera):
    # opacity = 1 - exp(-sigma L): L = 2 cube units (orthographic t in [0, 2]) or far - near = 2.5 m (pinhole)
    sigma_value, near, far = 0.7, 0.5, 3.0
    if camera == "orthographic":
        cam, length = OrthographicCamera(near, far), 2.0
    else:
        cam, length = NDCCamera(PinholeCamera(K, (480, 640), near, far)), far - near
    out = render_field(_constant(sigma_value), cam, (2, 3), 1, 7, stratified=stratified,
                       generator=torch.Generator().manual_seed(3))
    expected = 1 - math.exp(-sigma_value * length)
    torch.testing.assert_close(out.opacity, torch.full((1, 6), expected))
    torch.testing.assert_close(out.values[..., 0], out.opacity)


@pytest.mark.parametrize("stratified", [False, True])
def test_opaque_slab_renders_its_depth_and_value(stratified):
    z0, thickness, n, near, far = 0.3, 0.1, 64, 1.0, 5.0
    slab_value = torch.tensor([0.2, 0.5, 0.9])

    def slab(samples):
        z = samples.points()[..., 2]
        occupied = (z >= z0) & (z <= z0 + thickness)
        sigma = torch.where(occupied, torch.full_like(z, 1e6), torch.zeros_like(z))
        values = torch.where(occupied[..., None], slab_value, torch.ones(3))
        return FieldOutput(sigma, values)

    out = render_field(slab, OrthographicCamera(near, far), (3, 2), 1, n, stratified=stratified,
                       generator=torch.Generator().manual_seed(5))
    # rays start at z = -1 with unit z direction, so t sits at z = t - 1 and depth = near + t (far - near) / 2 metres.
    # Bins are 1/32 wide; z0 = 0.3 lies in bin 41 (z in [0.28125, 0.3125]). Midpoints: bin 41's 0.296875 misses the
    # slab, bin 42's 0.328125 is the first hit. Stratified: the first hit is in bin 41 or 42, so in [z0, z0 + 2 bins).
    depth_z = (out.depth - near) / ((far - near) / 2) - 1.0
    if stratified:
        assert ((depth_z >= z0 - 1e-6) & (depth_z < z0 + 2 / 32)).all()
    else:
        torch.testing.assert_close(depth_z, torch.full((1, 6), 0.328125))
    torch.testing.assert_close(out.opacity, torch.ones(1, 6))
    torch.testing.assert_close(out.values, slab_value.expand(1, 6, 3))


def test_empty_ray_depth_goes_to_far_only_when_asked():
    def empty(samples):
        points = samples.points()
        return FieldOutput(torch.zeros(points.shape[:-1]), torch.zeros(*points.shape[:-1], 1))

    camera = NDCCamera(PinholeCamera(K, (480, 640), 1.5, 2.0))
    assert render_field(empty, camera, (1, 2), 1, 4).depth.tolist() == [[0.0, 0.0]]
    assert render_field(empty, camera, (1, 2), 1, 4, empty_depth_at_far=True).depth.tolist() == [[2.0, 2.0]]
    # orthographic: the far end t = 2 of the cube is `far` metres
    assert render_field(empty, OrthographicCamera(0.5, 3.0), (1, 2), 1, 4,
                        empty_depth_at_far=True).depth.tolist() == [[3.0, 3.0]]


def _field_of(planes: torch.Tensor, scale: float = 1.0, factored: bool = True):
    """A tri-plane field: density softplus(feature 0) * 4 * scale, values = the other features."""

    def field(samples):
        if factored and samples.grid is not None:
            feats = sample_triplane_grid(planes, samples.chunk_grid())
        else:
            feats = sample_triplane(planes, samples.points())
        return FieldOutput(torch.nn.functional.softplus(feats[..., 0]) * 4.0 * scale, feats[..., 1:])

    return field


def test_chunked_rendering_equals_unchunked():
    planes = torch.randn(2, 3, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    for camera in (OrthographicCamera(0.5, 3.0), NDCCamera(PinholeCamera(K.expand(2, 3, 3), (480, 640), 0.5, 3.0))):
        whole = render_field(_field_of(planes), camera, (5, 7), 2, 9, stratified=True,
                             generator=torch.Generator().manual_seed(9))
        chunked = render_field(_field_of(planes), camera, (5, 7), 2, 9, stratified=True, chunk=20,
                               generator=torch.Generator().manual_seed(9))  # 1 row per chunk
        for key in ("values", "depth", "opacity"):
            torch.testing.assert_close(getattr(chunked, key), getattr(whole, key), rtol=0, atol=1e-6)


@pytest.mark.parametrize("stratified", [False, True])
def test_factored_render_equals_the_per_sample_render(stratified):
    planes = torch.randn(2, 3, 4, 6, 6, generator=torch.Generator().manual_seed(3), requires_grad=True)
    camera = NDCCamera(PinholeCamera(K.expand(2, 3, 3), (480, 640), 0.5, 3.0))
    outs = []
    for factored in (True, False):
        out = render_field(_field_of(planes, factored=factored), camera, (5, 7), 2, 9, stratified=stratified,
                           factored=factored, generator=torch.Generator().manual_seed(4))
        (grad,) = torch.autograd.grad(out.values.sum() + out.depth.sum(), planes)
        outs.append((out, grad))
    (a, grad_a), (b, grad_b) = outs
    for key in ("values", "depth", "opacity"):
        torch.testing.assert_close(getattr(a, key), getattr(b, key), rtol=0, atol=1e-5)
    torch.testing.assert_close(grad_a, grad_b, rtol=0, atol=1e-5)


def test_own_view_of_the_ndc_camera_is_the_orthographic_render_in_metres():
    # Both put the samples of pixel (i, j) at cube (x_j, y_i) and sample index k at cube z = -1 + 2 (k + 0.5) / N; t
    # runs over 2 cube units (orthographic) or far - near metres (NDC, depth spacing). With sigma_ndc = sigma_ortho *
    # 2 / (far - near) every sigma * delta agrees, so values and opacity are equal and both depths are in metres.
    near, far = 0.5, 4.5
    planes = torch.randn(1, 3, 3, 5, 5, generator=torch.Generator().manual_seed(4), dtype=D64).float()
    ortho = render_field(_field_of(planes), OrthographicCamera(near, far), (4, 6), 1, 16, empty_depth_at_far=True)
    ndc = render_field(_field_of(planes, scale=2.0 / (far - near)), NDCCamera(PinholeCamera(K, (480, 640), near, far)),
                       (4, 6), 1, 16, empty_depth_at_far=True)
    for key in ("values", "depth", "opacity"):
        torch.testing.assert_close(getattr(ndc, key), getattr(ortho, key), rtol=1e-5, atol=1e-5)


def test_gradcheck_triplane_weights_composite():
    generator = torch.Generator().manual_seed(6)
    planes = torch.randn(1, 3, 2, 3, 4, generator=generator, dtype=D64, requires_grad=True)
    sigma = torch.rand(1, 2, 3, generator=generator, dtype=D64, requires_grad=True)
    xyz = torch.rand(1, 2, 3, 3, generator=generator, dtype=D64) * 1.8 - 0.9
    deltas = torch.tensor([0.3, 0.5, 0.2], dtype=D64).expand(1, 2, 3)

    def render(planes, sigma):
        return composite(render_weights(sigma, deltas), sample_triplane(planes, xyz, "product"))

    assert torch.autograd.gradcheck(render, (planes, sigma))
    assert torch.autograd.gradcheck(lambda p, s: composite(render_weights(s, deltas), sample_triplane(p, xyz)),
                                    (planes, sigma))


# ---------------------------------------------------------------- the throughput benchmark


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--camera", "partner", "--decode", "point", "--plain"]])
def test_render_throughput_times_the_regularizers_own_field(extra):
    # the benchmark renders through Regularizer.render (the training path), not a stand-in MLP; tiny sizes
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "render_throughput.py"
    args = ["--batch", "1", "--height", "4", "--width", "6", "--samples", "4", "--channels", "4", "--plane-size", "4",
            "6", "--density-hidden", "8", "--task-hidden", "8", "--warmup", "0", "--iters", "1", *extra]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["field"] == ("Regularizer" if extra else "FusedRegularizer")
    assert report["rays"] == 24 and report["ms_per_batch"] > 0


@pytest.mark.slow
def test_regularizer_step_times_every_stage_of_the_training_regularizer():
    # the demo's regularizer at tiny sizes (the fixed-cost row of docs/cost.md): one step, each stage's backward fed
    # dense gradients of its outputs' shapes
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "regularizer_step.py"
    args = ["--preset", "demo", "--batch-size", "2", "--set", "regularizer.render_size=[2,2]", "--set",
            "regularizer.samples=2", "--set", "data.size=[64,64]", "--steps", "1", "--warmup", "0"]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["render_size"] == [2, 2] and report["samples"] == 2 and report["batch_size"] == 2
    assert set(report["parts_ms"]) == {"projector", "render", "upsample", "losses"}
    assert all(ms > 0 for ms in [report["ms_per_step_median"], *report["parts_ms"].values()])
