"""Pixel and ray geometry (mtl3dcli.geometry): answers derived by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtl3dcli import geometry
from mtl3dcli.geometry import (backproject, camera_rays, covisible, covisible_uv, invert_pose, pixel_centres, pixel_rays,
                               project, relative_pose, reproject, scale_intrinsics, transform_points, transform_vectors)

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


def test_pixel_centres_and_closed_form_rays():
    uv = pixel_centres(2, 3)
    assert uv.shape == (2, 3, 2) and uv[1, 2].tolist() == [2.5, 1.5] and uv[0, 0].tolist() == [0.5, 0.5]
    # the docstring example: K = [[2, 0, 1], [0, 4, 2], [0, 0, 1]], uv = (3, 6) -> (1, 1, 1)
    K = torch.tensor([[2.0, 0.0, 1.0], [0.0, 4.0, 2.0], [0.0, 0.0, 1.0]])
    assert pixel_rays(torch.tensor([3.0, 6.0]), K).tolist() == [1.0, 1.0, 1.0]
    # with skew, the closed form equals K^-1 [u, v, 1]
    K = torch.tensor([[[500.0, 2.0, 320.0], [0.0, 480.0, 240.0], [0.0, 0.0, 1.0]]], dtype=D64)
    rays = camera_rays(K, 3, 5)
    assert rays.shape == (1, 3, 5, 3)
    homogeneous = torch.cat([pixel_centres(3, 5, dtype=D64), torch.ones(3, 5, 1, dtype=D64)], dim=-1)
    torch.testing.assert_close(rays[0], homogeneous @ torch.linalg.inv(K[0]).T)


def test_backproject_and_project_are_inverse_numpy_in_numpy_out():
    K = np.array([[40.0, 0.5, 20.3], [0.0, 41.0, 16.1], [0.0, 0.0, 1.0]])
    depth = np.random.default_rng(0).uniform(0.5, 4.0, size=(6, 8))
    points = backproject(depth, K)
    assert isinstance(points, np.ndarray) and points.shape == (6, 8, 3) and points.dtype == np.float64
    np.testing.assert_allclose(points[..., 2], depth)
    uv, z = project(points, K)
    assert isinstance(uv, np.ndarray)
    np.testing.assert_allclose(uv, pixel_centres(6, 8, dtype=D64).numpy(), atol=1e-12)
    np.testing.assert_allclose(z, depth)


def test_scale_intrinsics_keeps_pixel_centres():
    # the continuous point x maps to (W'/W) x: the centre of pixel 0 of a 2-wide image (x = 0.5) is the left edge's
    # quarter of a 4-wide one (x = 1.0), and K's principal point scales the same way
    K = torch.tensor([[10.0, 1.0, 3.0], [0.0, 20.0, 2.0], [0.0, 0.0, 1.0]])
    scaled = scale_intrinsics(K, (4, 6), (8, 3))
    torch.testing.assert_close(scaled, torch.tensor([[5.0, 0.5, 1.5], [0.0, 40.0, 4.0], [0.0, 0.0, 1.0]]))
    point = torch.tensor([0.3, -0.2, 2.0])
    uv, _ = project(point, K)
    uv_scaled, _ = project(point, scaled)
    torch.testing.assert_close(uv_scaled, uv * torch.tensor([0.5, 2.0]))


@pytest.mark.parametrize("mirror", [False, True])
def test_relative_pose_moves_points_and_vectors_between_frames(mirror):
    rot_a = _rotation(1, 0.3) @ _rotation(0, -0.2)
    rot_b = _rotation(1, -0.4) @ _rotation(2, 0.1)
    if mirror:  # an improper camera (horizontally flipped image): det = -1
        rot_b = rot_b @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=D64))
    pose_a = _pose(rot_a, [0.2, -0.1, 0.5])[None]
    pose_b = _pose(rot_b, [-0.6, 0.1, 0.3])[None]
    world = torch.tensor([0.4, 0.3, 4.0], dtype=D64)
    in_a = transform_points(invert_pose(pose_a), world[None])
    in_b = transform_points(invert_pose(pose_b), world[None])
    b_to_a = relative_pose(pose_a, pose_b)
    torch.testing.assert_close(transform_points(b_to_a, in_b), in_a)
    # a direction (a surface normal) known in the world: its camera-frame versions are related by the linear part
    normal = torch.tensor([[0.0, 0.6, -0.8]], dtype=D64)
    n_a = transform_vectors(invert_pose(pose_a), normal)
    n_b = transform_vectors(invert_pose(pose_b), normal)
    torch.testing.assert_close(transform_vectors(b_to_a, n_b), n_a)
    torch.testing.assert_close(invert_pose(pose_b) @ pose_b, torch.eye(4, dtype=D64)[None])


def test_reproject_into_a_camera_moved_sideways():
    # B is A moved 1 m to the right; a pixel of B seeing depth z lands fx / z pixels further right in A
    K = torch.tensor([[[20.0, 0.0, 8.0], [0.0, 20.0, 4.0], [0.0, 0.0, 1.0]]])
    b_to_a = torch.eye(4)[None].clone()
    b_to_a[0, 0, 3] = 1.0
    depth = torch.full((1, 8, 16), 4.0)
    uv, z = reproject(depth, K, K, b_to_a)
    torch.testing.assert_close(uv - pixel_centres(8, 16), torch.tensor([5.0, 0.0]).expand(1, 8, 16, 2))
    torch.testing.assert_close(z, depth)


def _two_plane_scene(K: torch.Tensor, centre_x: float, size: tuple[int, int]) -> torch.Tensor:
    """z-depth (1, H, W) seen by a camera at (centre_x, 0, 0) looking along +z: a wall at z = 4 and, in front of it,
    an occluder at z = 2 covering the half-space x < 0 (world = A's frame)."""
    rays = camera_rays(K, *size)[0]  # (H, W, 3), z = 1
    hits_occluder = centre_x + 2.0 * rays[..., 0] < 0
    return torch.where(hits_occluder, 2.0, 4.0)[None]


def test_covisible_masks_occluded_and_out_of_frustum_pixels():
    # A at the origin, B 1 m to its right; K: fx = 20, W = 32, cx = 16 (A's frustum at z = 4 spans x in [-3.2, 3.2]).
    # B's pixel u has ray x-slope (u + 0.5 - 16) / 20. By hand, for B's pixel columns:
    #   occluder hit (x = 1 + 2 slope < 0, u <= 5): A sees it (nothing in front) where A's u_A = 10 x + 16 >= 0:
    #     x >= -1.6, i.e. slope >= -1.3 -> u >= -10.5: every occluder pixel of B (u in 0..5) is covisible;
    #   wall hit (u >= 6, x = 1 + 4 slope): hidden from A behind the occluder when x < 0 (u in 6..10);
    #     visible in A when 0 <= x < 3.2 (u in 11..26); outside A's image when x >= 3.2 (u in 27..31).
    K = torch.tensor([[[20.0, 0.0, 16.0], [0.0, 20.0, 4.0], [0.0, 0.0, 1.0]]])
    size = (8, 32)
    depth_a, depth_b = _two_plane_scene(K, 0.0, size), _two_plane_scene(K, 1.0, size)
    b_to_a = torch.eye(4)[None].clone()
    b_to_a[0, 0, 3] = 1.0
    mask = covisible(depth_b, K, depth_a, K, b_to_a, rel_tol=0.05)
    expected_columns = [True] * 6 + [False] * 5 + [True] * 16 + [False] * 5
    assert mask[0].all(dim=0).tolist() == expected_columns and (mask[0] == mask[0, :1]).all()
    # unknown depth in B or in A is never covisible. A wall pixel u of B lands at A's u_A = 20 x / 4 + 16 = u + 5.5,
    # i.e. in A's column u + 5: unknown depth in A's column 24 hides B's column 19.
    depth_b[0, :, 12] = 0.0
    depth_a[0, :, 24] = float("nan")
    mask = covisible(depth_b, K, depth_a, K, b_to_a)
    expected_columns[12] = expected_columns[19] = False
    assert mask[0].all(dim=0).tolist() == expected_columns and (mask[0] == mask[0, :1]).all()
    # identical views: every known pixel is covisible
    assert covisible(depth_a.nan_to_num(0.0), K, depth_a, K, torch.eye(4)[None]).sum() == 8 * 31
    # covisible_uv: the same mask, and where B's known pixels land in A (B's column u lands at u_A = u + 5.5 on the wall)
    mask_uv, uv = covisible_uv(depth_b, K, depth_a, K, b_to_a)
    assert torch.equal(mask_uv, mask)
    assert torch.equal(uv[0, :, 19], reproject(depth_b, K, K, b_to_a)[0][0, :, 19])
    assert torch.allclose(uv[0, :, 19, 0], torch.full((8,), 19 + 5.5))


def test_pinhole_intrinsics_and_fov_focal():
    """90 degrees over 128 pixels is a focal length of 64 (tan 45 = 1); the principal point of a 96x128 image's
    centre is (64, 48) with pixel centres at u + 0.5."""
    assert geometry.fov_focal(128, 90.0) == pytest.approx(64.0, abs=1e-12)
    assert geometry.fov_focal(100, 60.0) == pytest.approx(50.0 * math.sqrt(3.0), rel=1e-12)
    K = geometry.pinhole_intrinsics(64.0, 64.0, 64.0, 48.0)
    np.testing.assert_array_equal(K, [[64.0, 0.0, 64.0], [0.0, 64.0, 48.0], [0.0, 0.0, 1.0]])
    assert K.dtype == np.float64


def test_scale_intrinsics_takes_numpy_too():
    K = geometry.pinhole_intrinsics(10.0, 12.0, 4.0, 3.0)
    scaled = geometry.scale_intrinsics(K, (6, 8), (3, 4))
    assert isinstance(scaled, np.ndarray)
    np.testing.assert_array_equal(scaled, [[5.0, 0.0, 2.0], [0.0, 6.0, 1.5], [0.0, 0.0, 1.0]])
