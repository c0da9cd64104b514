"""Tri-plane volume renderer: answers derived by hand (see each test's comment)."""

from __future__ import annotations

import math

import pytest
import torch

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.render.rays import (frustum_box, orthographic_rays, pinhole_rays, points_to_cube, relative_pose,
                                  sample_along_rays, transform_rays)
from mtl3dcli.render.triplane import AGGREGATIONS, inside_cube, sample_triplane, triplane_feature_dim
from mtl3dcli.render.volume import accumulated_opacity, composite, expected_depth, render_field, render_weights

D64 = torch.float64


def _rotation(axis: int, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    r = torch.eye(3, dtype=D64)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _pose(rotation: torch.Tensor, translation: list[float]) -> torch.Tensor:
    pose = torch.eye(4, dtype=D64)
    pose[:3, :3], pose[:3, 3] = rotation, torch.tensor(translation, dtype=D64)
    return pose


# ---------------------------------------------------------------- rays


def test_orthographic_rays_hit_pixel_centres_on_the_near_face():
    origins, directions = orthographic_rays(2, 4, dtype=D64)
    # pixel (u=3, v=1) is row-major index 1*4+3 = 7: x = -1 + 2*3.5/4 = 0.75, y = -1 + 2*1.5/2 = 0.5
    assert origins.shape == (8, 3)
    assert origins[7].tolist() == [0.75, 0.5, -1.0]
    assert origins[0].tolist() == [-0.75, -0.5, -1.0]
    assert (directions == torch.tensor([0.0, 0.0, 1.0], dtype=D64)).all()


def test_pinhole_ray_at_depth_z_projects_back_to_its_pixel_centre():
    K = torch.tensor([[[500.0, 2.0, 320.0], [0.0, 480.0, 240.0], [0.0, 0.0, 1.0]]], dtype=D64)
    origins, directions = pinhole_rays(K, 3, 5)
    assert (origins == 0).all() and (directions[..., 2] == 1.0).all()
    z = 2.5
    points = origins + z * directions  # (1, 15, 3)
    projected = points[0] @ K[0].T
    uv = projected[:, :2] / projected[:, 2:]
    v, u = torch.meshgrid(torch.arange(3, dtype=D64), torch.arange(5, dtype=D64), indexing="ij")
    expected = torch.stack([u.reshape(-1) + 0.5, v.reshape(-1) + 0.5], dim=-1)
    torch.testing.assert_close(uv, expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(points[..., 2], torch.full((1, 15), z, dtype=D64))


@pytest.mark.parametrize("mirror", [False, True])
def test_relative_pose_and_transform_rays_agree_on_a_world_point(mirror):
    rot_a = _rotation(1, 0.3) @ _rotation(0, -0.2)
    rot_b = _rotation(1, -0.4) @ _rotation(2, 0.1)
    if mirror:  # an improper camera (horizontally flipped image): det = -1
        rot_b = rot_b @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=D64))
    pose_a = _pose(rot_a, [0.2, -0.1, 0.5])[None]
    pose_b = _pose(rot_b, [-0.6, 0.1, 0.3])[None]
    world = torch.tensor([0.4, 0.3, 4.0, 1.0], dtype=D64)
    in_a = torch.linalg.inv(pose_a[0]) @ world
    in_b = torch.linalg.inv(pose_b[0]) @ world
    b_to_a = relative_pose(pose_a, pose_b)
    torch.testing.assert_close(b_to_a[0] @ in_b, in_a)
    # the pinhole ray of camera B through the point's pixel, moved into A's frame, reaches it at t = its B depth
    K = torch.tensor([[[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]]], dtype=D64)
    pixel = K[0] @ in_b[:3]
    direction_b = torch.linalg.inv(K[0]) @ (pixel / pixel[2])
    origins, directions = transform_rays(torch.zeros(1, 1, 3, dtype=D64), direction_b.reshape(1, 1, 3), b_to_a)
    torch.testing.assert_close(origins[0, 0] + in_b[2] * directions[0, 0], in_a[:3])


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


def test_frustum_box_and_points_to_cube():
    K = torch.tensor([[[10.0, 0.0, 4.0], [0.0, 20.0, 2.0], [0.0, 0.0, 1.0]]], dtype=D64)
    box_min, box_max = frustum_box(K, 4, 8, 1.0, 3.0)
    # x = (u - 4) / 10 * z for u in {0, 8}, y = (v - 2) / 20 * z for v in {0, 4}: extremes at z = far
    torch.testing.assert_close(box_min, torch.tensor([[-1.2, -0.3, 1.0]], dtype=D64))
    torch.testing.assert_close(box_max, torch.tensor([[1.2, 0.3, 3.0]], dtype=D64))
    xyz = torch.tensor([[[-1.2, -0.3, 1.0], [1.2, 0.3, 3.0], [0.0, 0.0, 2.0], [0.6, 0.15, 2.5]]], dtype=D64)
    torch.testing.assert_close(points_to_cube(xyz, box_min, box_max),
                               torch.tensor([[[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0],
                                              [0.5, 0.5, 0.5]]], dtype=D64))


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


def test_sample_triplane_outside_the_cube_and_extra_dims():
    planes = torch.ones(1, 3, 2, 4, 4, dtype=D64)
    xyz = torch.tensor([[[[1.8, 0.0, 0.0], [1.8, -1.8, 1.8], [0.0, 0.0, 0.0]]]], dtype=D64)  # (1, 1, 3, 3)
    out = sample_triplane(planes, xyz)
    assert out.shape == (1, 1, 3, 2)
    # x out of the cube: the xy and xz planes give zeros, the yz plane still reads 1; all out: 0; inside: 3
    assert out[0, 0, :, 0].tolist() == [1.0, 0.0, 3.0]
    assert inside_cube(xyz)[0, 0].tolist() == [False, False, True]
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


@pytest.mark.parametrize("stratified", [False, True])
def test_constant_density_gives_exact_opacity(stratified):
    sigma_value, near, far = 0.7, 0.5, 3.0
    origins, directions = orthographic_rays(2, 3, dtype=D64)
    generator = torch.Generator().manual_seed(3)
    out = render_field(lambda p: (torch.full(p.shape[:-1], sigma_value, dtype=D64), torch.ones(*p.shape[:-1], 1,
                                                                                                 dtype=D64)),
                       origins[None], directions[None], near, far, 7, stratified=stratified, generator=generator)
    expected = 1 - math.exp(-sigma_value * (far - near))
    torch.testing.assert_close(out["opacity"], torch.full((1, 6), expected, dtype=D64))
    torch.testing.assert_close(out["values"][..., 0], out["opacity"])


@pytest.mark.parametrize("stratified", [False, True])
def test_opaque_slab_renders_its_depth_and_value(stratified):
    z0, thickness, n = 0.3, 0.1, 64
    slab_value = torch.tensor([0.2, 0.5, 0.9], dtype=D64)

    def slab(points):
        z = points[..., 2]
        occupied = (z >= z0) & (z <= z0 + thickness)
        sigma = torch.where(occupied, torch.full_like(z, 1e6), torch.zeros_like(z))
        values = torch.where(occupied[..., None], slab_value, torch.ones(3, dtype=D64))
        return sigma, values

    origins, directions = orthographic_rays(3, 2, dtype=D64)
    out = render_field(slab, origins[None], directions[None], 0.0, 2.0, n, stratified=stratified,
                       generator=torch.Generator().manual_seed(5))
    # rays start at z = -1 with unit z direction, so depth t sits at z = t - 1. Bins are 1/32 wide; z0 = 0.3 lies in
    # bin 41 (z in [0.28125, 0.3125]). Midpoints: bin 41's 0.296875 misses the slab, bin 42's 0.328125 is the first
    # hit. Stratified: the first hit is bin 41's or bin 42's sample, so within [z0, z0 + 2 bins).
    depth_z = out["depth"] - 1.0
    if stratified:
        assert ((depth_z >= z0) & (depth_z < z0 + 2 / 32)).all()
    else:
        torch.testing.assert_close(depth_z, torch.full((1, 6), 0.328125, dtype=D64))
    torch.testing.assert_close(out["opacity"], torch.ones(1, 6, dtype=D64))
    torch.testing.assert_close(out["values"], slab_value.expand(1, 6, 3))


def test_empty_ray_depth_goes_to_far_only_when_asked():
    origins, directions = orthographic_rays(1, 2, dtype=D64)

    def empty(points):
        return torch.zeros(points.shape[:-1], dtype=D64), torch.zeros(*points.shape[:-1], 1, dtype=D64)

    far = torch.tensor([[[2.0], [1.5]]], dtype=D64)
    assert render_field(empty, origins[None], directions[None], 0.0, far, 4)["depth"].tolist() == [[0.0, 0.0]]
    out = render_field(empty, origins[None], directions[None], 0.0, far, 4, empty_depth_at_far=True)
    assert out["depth"].tolist() == [[2.0, 1.5]]


def _field_of(planes: torch.Tensor, to_cube=lambda p: p):
    """A tri-plane field: density softplus(feature 0) * 4 inside the cube, values = the other features."""

    def field(points):
        xyz = to_cube(points)
        feats = sample_triplane(planes, xyz)
        sigma = torch.nn.functional.softplus(feats[..., 0]) * 4.0 * inside_cube(xyz)
        return sigma, feats[..., 1:]

    return field


def test_chunked_rendering_equals_unchunked():
    generator = torch.Generator().manual_seed(2)
    planes = torch.randn(2, 3, 4, 6, 6, generator=generator, dtype=D64)
    origins, directions = orthographic_rays(5, 7, dtype=D64)
    origins, directions = origins.expand(2, -1, -1), directions.expand(2, -1, -1)
    kwargs = dict(stratified=True)
    whole = render_field(_field_of(planes), origins, directions, 0.0, 2.0, 9,
                         generator=torch.Generator().manual_seed(9), **kwargs)
    chunked = render_field(_field_of(planes), origins, directions, 0.0, 2.0, 9, chunk=4,
                           generator=torch.Generator().manual_seed(9), **kwargs)
    for key in ("values", "depth", "opacity"):
        torch.testing.assert_close(chunked[key], whole[key], rtol=0, atol=1e-14)


def test_orthographic_and_far_narrow_perspective_camera_agree():
    # a camera at distance D with focal f = D * W / 2 sees a 2 x 2 x 2 box around z = D almost orthographically:
    # frustum_box + points_to_cube map its samples to the orthographic ones up to a relative 2 / (D + 1), so the two
    # renders differ by O(1 / D) (measured: 1.7e-3 at D = 1e4, 1.7e-5 at D = 1e6).
    height, width, n, distance = 4, 6, 16, 1e6
    planes = torch.randn(1, 3, 3, 5, 5, generator=torch.Generator().manual_seed(4), dtype=D64)
    origins, directions = orthographic_rays(height, width, dtype=D64)
    ortho = render_field(_field_of(planes), origins[None], directions[None], 0.0, 2.0, n)
    f = distance * width / 2
    K = torch.tensor([[[f, 0.0, width / 2], [0.0, f * height / width, height / 2], [0.0, 0.0, 1.0]]], dtype=D64)
    near, far = distance - 1, distance + 1
    box_min, box_max = frustum_box(K, height, width, near, far)
    origins, directions = pinhole_rays(K, height, width)
    to_cube = lambda p: points_to_cube(p, box_min, box_max)  # noqa: E731
    persp = render_field(_field_of(planes, to_cube), origins, directions, near, far, n)
    torch.testing.assert_close(persp["values"], ortho["values"], rtol=0, atol=1e-4)
    torch.testing.assert_close(persp["opacity"], ortho["opacity"], rtol=0, atol=1e-4)
    torch.testing.assert_close(persp["depth"] - near * persp["opacity"], ortho["depth"], rtol=0, atol=1e-4)


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
