"""Synthetic scenes: exact ray-cast labels on hand-built scenes, multi-view consistency, determinism, layout."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from mtl3dcli.derive import normals_from_depth
from mtl3dcli.data.layout import DatasetLayout
from mtl3dcli.datasets.synthetic import (
    CLASS_ID,
    SYNTHETIC_CLASSES,
    Primitive,
    Scene,
    SyntheticOptions,
    WallItem,
    camera_poses,
    generate_synthetic,
    intrinsics,
    look_at,
    make_material,
    make_scene,
    render_view,
)
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.tasks import TASKS

TINY = SyntheticOptions(train_scenes=2, val_scenes=1, views=3, height=48, width=64, seed=7)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "data", TINY)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _load(layout: DatasetLayout, sample_id: str) -> dict[str, np.ndarray]:
    return {name: TASKS[name].read(layout.label_path(TASKS[name], sample_id))
            for name in ("semseg", "depth", "normals", "edge")}


# --- exact labels on hand-built scenes ----------------------------------------------------------------------------
def _empty_room(primitives=(), wall_items=()) -> Scene:
    """Room 4 x 6 x 3 m; the camera below stands at (2, 1, 1.5) looking along +y, so camera z = world y and
    camera y = world -z."""
    rng = np.random.default_rng(0)
    plain = make_material(rng, "ceiling")
    return Scene(size=np.array([4.0, 6.0, 3.0]), primitives=list(primitives), wall_items=list(wall_items),
                 floor=plain, walls=plain, ceiling=plain, lights=np.array([[2.0, 3.0, 2.9]]),
                 light_power=np.array([1.0]), ambient=0.3, tint=np.ones(3))


H, W = 48, 64
K = intrinsics(H, W)  # fx = 51.88579, fy = 51.94696, cx = 32, cy = 24
POSE = look_at(np.array([2.0, 1.0, 1.5]), np.array([2.0, 5.0, 1.5]))


def test_intrinsics_and_pose_follow_the_conventions():
    assert K[0, 0] == pytest.approx(518.8579 / 10) and K[1, 1] == pytest.approx(519.4696 / 10)
    assert (K[0, 2], K[1, 2]) == (32.0, 24.0)
    # camera x = world +x (right), y = world -z (down), z = world +y (forward), at (2, 1, 1.5)
    np.testing.assert_allclose(POSE[:3, :3], [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-12)
    np.testing.assert_allclose(POSE[:3, 3], [2.0, 1.0, 1.5])


def test_empty_room_has_exact_depth_normals_and_classes():
    out = render_view(_empty_room(), K, POSE, H, W, np.random.default_rng(0))
    fy = K[1, 1]
    # centre pixel: the far wall y = 6 is 5 m ahead; its normal faces the camera (0, 0, -1)
    assert out["depth"][23, 31] == pytest.approx(5.0, abs=1e-5)
    np.testing.assert_allclose(out["normals"][23, 31], [0, 0, -1], atol=1e-6)
    assert out["semseg"][23, 31] == CLASS_ID["wall"]
    # bottom row, middle column: the ray drops 23.5 / fy per metre of z-depth, so the floor 1.5 m down is at
    # z = 1.5 fy / 23.5
    assert out["depth"][47, 31] == pytest.approx(1.5 * fy / 23.5, rel=1e-5)
    np.testing.assert_allclose(out["normals"][47, 31], [0, -1, 0], atol=1e-6)
    assert out["semseg"][47, 31] == CLASS_ID["floor"]
    # top row: the ceiling is 1.5 m up as well
    assert out["depth"][0, 31] == pytest.approx(1.5 * fy / 23.5, rel=1e-5)
    np.testing.assert_allclose(out["normals"][0, 31], [0, 1, 0], atol=1e-6)
    assert out["semseg"][0, 31] == CLASS_ID["ceiling"]
    assert out["image"].dtype == np.uint8 and out["image"].shape == (H, W, 3)
    assert out["depth"].dtype == np.float32 and out["normals"].dtype == np.float32


@pytest.mark.parametrize("kind, half, yaw", [
    ("box", (0.5, 0.3, 0.5), math.pi / 2),  # yawed: its 0.5 m half side runs along world y (unyawed: 1.7 m)
    ("cylinder", (0.5, 0.5, 0.5), 0.3),
    ("sphere", (0.5, 0.5, 0.5), 0.0),
])
def test_primitive_in_front_of_the_camera_is_hit_first(kind, half, yaw):
    material = make_material(np.random.default_rng(1), "objects")
    solid = Primitive(kind, CLASS_ID["table"], np.array([2.0, 3.0, 1.5]), np.array(half), yaw, material)
    out = render_view(_empty_room([solid]), K, POSE, H, W, np.random.default_rng(0))
    # its front at world y = 2.5 is 1.5 m ahead; the pixel's ray passes 0.5 / f * 1.5 = 0.0145 m off the axis, so
    # curved surfaces are 1.5002 m away and tilt their normal by 0.0145 / 0.5 = 0.029 per off-axis direction
    assert out["depth"][23, 31] == pytest.approx(1.5, abs=1e-3)
    np.testing.assert_allclose(out["normals"][23, 31], [0, 0, -1], atol=0.03)
    assert out["semseg"][23, 31] == CLASS_ID["table"]
    # a wide object stays inside its projection: the image corners still see the room
    assert out["semseg"][0, 0] in (CLASS_ID["wall"], CLASS_ID["ceiling"])


def test_wall_items_change_class_not_geometry():
    material = make_material(np.random.default_rng(2), "picture")
    picture = WallItem(CLASS_ID["picture"], 3, (1.5, 2.5, 1.0, 2.0), material, np.zeros(3), 0.05)
    plain = render_view(_empty_room(), K, POSE, H, W, np.random.default_rng(0))
    out = render_view(_empty_room(wall_items=[picture]), K, POSE, H, W, np.random.default_rng(0))
    assert out["semseg"][23, 31] == CLASS_ID["picture"]
    np.testing.assert_array_equal(out["depth"], plain["depth"])
    np.testing.assert_array_equal(out["normals"], plain["normals"])
    # the picture spans x in [1.5, 2.5] at 5 m: u = 32 +- 0.5 * fx / 5 = 32 +- 5.19 -> columns 27..36 only
    columns = np.flatnonzero((out["semseg"] == CLASS_ID["picture"]).any(axis=0))
    assert columns.min() == 27 and columns.max() == 36


def test_cameras_stay_inside_the_room_and_clear_of_objects():
    for seed in range(12):
        rng = np.random.default_rng(seed)
        scene, poses = camera_poses(make_scene(rng), 4, rng)
        k = intrinsics(24, 32)
        for pose in poses:
            position = pose[:3, 3]
            assert np.all(position > 0.29) and np.all(position < scene.size - 0.29)
            assert 1.1 < position[2] < 1.8
            depth = render_view(scene, k, pose, 24, 32, rng)["depth"]
            assert depth.min() > 0.15  # 0.25 m clearance, seen at most ~40 degrees off axis


# --- the generated dataset ------------------------------------------------------------------------------------
def test_layout_is_readable_and_complete(tiny):
    layout = DatasetLayout(tiny)
    assert layout.ids("train") == [f"s{s:04d}_v{v:02d}" for s in range(2) for v in range(3)]
    assert layout.ids("val") == ["s0002_v00", "s0002_v01", "s0002_v02"]
    assert layout.meta.name == "synthetic"
    assert layout.meta.tasks == ["semseg", "depth", "normals", "edge"]
    assert layout.meta.classes["semseg"] == SYNTHETIC_CLASSES and len(SYNTHETIC_CLASSES) == 13
    palette = layout.meta.palette("semseg")
    assert len(palette) == 13 and len({tuple(c) for c in palette}) == 13
    assert layout.meta.extra["generator"]["views"] == 3 and layout.meta.extra["seed"] == 7
    assert {t.name for t in layout.available_tasks()} == {"semseg", "depth", "normals", "edge"}
    max_depth = 0.0
    for sample_id in layout.ids("train") + layout.ids("val"):
        camera = layout.cameras[sample_id]
        assert camera.scene == sample_id[:5]
        np.testing.assert_allclose(camera.K, intrinsics(48, 64))
        np.testing.assert_allclose(camera.pose[:3, :3].T @ camera.pose[:3, :3], np.eye(3), atol=1e-9)
        assert layout.image_path(sample_id).suffix == ".png"
        labels = _load(layout, sample_id)
        assert labels["semseg"].shape == (48, 64) and labels["semseg"].max() < 13
        assert np.all(labels["depth"] > 0)  # a closed room: every ray hits something
        np.testing.assert_allclose(np.linalg.norm(labels["normals"], axis=-1), 1.0, atol=1e-5)
        assert set(np.unique(labels["edge"])) <= {0.0, 1.0}
        max_depth = max(max_depth, float(labels["depth"].max()))
    assert layout.meta.depth_range == (0.0, float(math.ceil(max_depth)))


def test_stored_normals_agree_with_depth_gradients(tiny):
    layout = DatasetLayout(tiny)
    for sample_id in layout.ids("train")[:3]:
        labels = _load(layout, sample_id)
        derived = normals_from_depth(labels["depth"], layout.cameras[sample_id].K)
        valid = np.linalg.norm(derived, axis=-1) > 0.5
        assert valid.mean() > 0.5
        cosine = np.sum(derived[valid] * labels["normals"][valid], axis=-1).clip(-1, 1)
        assert np.degrees(np.median(np.arccos(cosine))) < 2.0


def test_two_views_of_one_scene_agree(tiny):
    layout = DatasetLayout(tiny)
    for a, b in (("s0000_v00", "s0000_v01"), ("s0001_v01", "s0001_v02")):
        cam_a, cam_b = layout.cameras[a], layout.cameras[b]
        la, lb = _load(layout, a), _load(layout, b)
        v, u = np.mgrid[0:48, 0:64]
        rays = np.stack([u + 0.5, v + 0.5, np.ones_like(u)], axis=-1) @ np.linalg.inv(cam_a.K).T
        world = (rays * la["depth"][..., None]) @ cam_a.pose[:3, :3].T + cam_a.pose[:3, 3]
        in_b = (world - cam_b.pose[:3, 3]) @ cam_b.pose[:3, :3]  # world -> camera B: R^T (p - t)
        pix = in_b @ cam_b.K.T
        ub, vb = np.floor(pix[..., 0] / pix[..., 2]).astype(int), np.floor(pix[..., 1] / pix[..., 2]).astype(int)
        inside = (in_b[..., 2] > 0) & (ub >= 0) & (ub < 64) & (vb >= 0) & (vb < 48)
        assert inside.mean() > 0.6  # consecutive views overlap strongly
        z_proj = in_b[..., 2][inside]
        z_b = lb["depth"][vb[inside], ub[inside]]
        visible = np.abs(z_proj - z_b) < 0.03 * z_b
        assert visible.mean() > 0.6  # most shared points are not occluded in B (3% depth tolerance)
        interior = (la["edge"][inside] == 0) & (lb["edge"][vb[inside], ub[inside]] == 0) & visible
        same = la["semseg"][inside][interior] == lb["semseg"][vb[inside], ub[inside]][interior]
        assert same.mean() > 0.95


def test_generation_is_deterministic_and_scenes_do_not_depend_on_counts(tiny, tmp_path):
    again = generate_synthetic(tmp_path / "again", TINY, workers=2)
    assert _hashes(again) == _hashes(tiny)
    fewer = generate_synthetic(tmp_path / "fewer", SyntheticOptions(train_scenes=1, val_scenes=1, views=3,
                                                                    height=48, width=64, seed=7))
    big, small = _hashes(tiny), _hashes(fewer)
    assert small["images/s0000_v01.png"] == big["images/s0000_v01.png"]  # train scene 0
    assert small["depth/s0001_v02.npy"] == big["depth/s0002_v02.npy"]  # val scene 0, renumbered after 1 train scene
    other = generate_synthetic(tmp_path / "other", SyntheticOptions(**{**TINY.__dict__, "seed": 8}))
    assert _hashes(other)["images/s0000_v00.png"] != big["images/s0000_v00.png"]


def test_progress_overwrite_and_bad_options(tiny, tmp_path):
    with pytest.raises(Mtl3dError, match="already exists"):
        generate_synthetic(tiny, TINY)
    calls = []
    options = SyntheticOptions(train_scenes=1, val_scenes=0, views=2, height=16, width=16)
    root = generate_synthetic(tmp_path / "one", options, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]
    assert not (root / "gt_sets" / "val.txt").exists()
    generate_synthetic(root, SyntheticOptions(train_scenes=1, val_scenes=0, views=1, height=16, width=16),
                       overwrite=True)
    assert DatasetLayout(root).ids("train") == ["s0000_v00"]
    with pytest.raises(Mtl3dError, match="views"):
        generate_synthetic(tmp_path / "bad", SyntheticOptions(views=0))
    assert not (tmp_path / "bad").exists()
