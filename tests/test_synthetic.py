"""Synthetic scenes: exact ray-cast labels on hand-built scenes, random intrinsics, multi-view consistency (with the
stored K and poses), determinism, layout, option checks."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtl3dcli.derive import backproject, normals_from_depth
from mtl3dcli.data.layout import DatasetLayout
from mtl3dcli.datasets.synthetic import (
    CLASS_ID,
    NYU_FOCAL,
    SYNTHETIC_CLASSES,
    Primitive,
    Scene,
    SyntheticOptions,
    WallItem,
    camera_poses,
    draw_intrinsics,
    generate_synthetic,
    intrinsics,
    look_at,
    make_material,
    make_scene,
    parse_fov_range,
    render_view,
)
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.tasks import TASKS

TINY = SyntheticOptions(train_scenes=2, val_scenes=1, views=3, height=48, width=64, seed=7)
TINY_FOV = dataclasses.replace(TINY, fov_range=(45.0, 100.0), principal_jitter=0.05)  # same scenes and poses


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "data", TINY)


@pytest.fixture(scope="module")
def tiny_fov(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "fov", TINY_FOV)


@pytest.fixture(params=["nyu", "fov"])
def dataset(request, tiny, tiny_fov) -> Path:
    """Both tiny datasets: NYUv2 intrinsics, and random intrinsics with principal point jitter."""
    return tiny if request.param == "nyu" else tiny_fov


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
    # a 90 degree horizontal field of view at width 64: fx = 32 / tan(45) = 32, square pixels
    np.testing.assert_allclose(intrinsics(48, 64, hfov=90.0, principal_offset=(1.5, -2.0)),
                               [[32, 0, 33.5], [0, 32, 22], [0, 0, 1]], atol=1e-12)
    # camera x = world +x (right), y = world -z (down), z = world +y (forward), at (2, 1, 1.5)
    np.testing.assert_allclose(POSE[:3, :3], [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-12)
    np.testing.assert_allclose(POSE[:3, 3], [2.0, 1.0, 1.5])
    # a quarter turn of roll about the optical axis: camera x now points down the world (-z), y to world -x
    rolled = look_at(np.array([2.0, 1.0, 1.5]), np.array([2.0, 5.0, 1.5]), roll=math.pi / 2)
    np.testing.assert_allclose(rolled[:3, :3], [[0, -1, 0], [0, 0, 1], [-1, 0, 0]], atol=1e-12)


def test_draw_intrinsics_draws_fields_of_view_and_principal_points():
    rng = np.random.default_rng
    nyu = draw_intrinsics(rng(0), 4, 48, 64, None, 0.0)
    assert all(np.array_equal(k, K) for k in nyu)
    drawn = draw_intrinsics(rng(0), 200, 48, 64, (40.0, 100.0), 0.0)
    hfov = np.degrees([2 * math.atan(32 / k[0, 0]) for k in drawn])
    assert 40.0 <= hfov.min() < 45.0 and 95.0 < hfov.max() <= 100.0  # uniform over the range
    assert all(k[0, 0] == k[1, 1] and (k[0, 2], k[1, 2]) == (32.0, 24.0) for k in drawn)
    jittered = draw_intrinsics(rng(0), 200, 48, 64, (40.0, 100.0), 0.1)
    # the same fields of view with or without jitter; principal points within 10% of the size of the centre
    np.testing.assert_array_equal([k[0, 0] for k in jittered], [k[0, 0] for k in drawn])
    offsets = np.array([[k[0, 2] - 32, k[1, 2] - 24] for k in jittered])
    assert np.all(np.abs(offsets) <= [6.4, 4.8]) and np.abs(offsets).max(axis=0).min() > 3.0
    assert len({k[0, 2] for k in jittered}) == 200


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
            assert 0.79 < position[2] < scene.size[2] - 0.39
            depth = render_view(scene, k, pose, 24, 32, rng)["depth"]
            assert depth.min() > 0.15  # 0.25 m clearance, seen at most ~40 degrees off axis


def test_arc_degrees_widen_the_baselines():
    def spread(arc: float) -> tuple[float, float]:
        """Mean angle (degrees) between the first and last optical axes, and mean camera distance (m)."""
        angles, distances = [], []
        for seed in range(10):
            rng = np.random.default_rng(seed)
            _, poses = camera_poses(make_scene(rng), 4, rng, arc_degrees=arc)
            first, last = poses[0], poses[-1]
            angles.append(math.degrees(math.acos(np.clip(first[:3, 2] @ last[:3, 2], -1, 1))))
            distances.append(np.linalg.norm(first[:3, 3] - last[:3, 3]))
        return float(np.mean(angles)), float(np.mean(distances))

    narrow, wide = spread(20.0), spread(120.0)
    assert narrow[0] < 25.0 and wide[0] > 60.0
    assert wide[1] > 2 * narrow[1]


def test_scenes_are_varied_and_furniture_stays_in_the_room():
    labels, counts, structure = set(), [], 0
    for seed in range(20):
        scene = make_scene(np.random.default_rng(seed))
        counts.append(len(scene.primitives))
        labels |= {p.label for p in scene.primitives} | {item.label for item in scene.wall_items}
        structure += any(p.label == CLASS_ID["wall"] for p in scene.primitives)  # L-shapes, partitions, columns
        for p in scene.primitives:
            c, s = abs(math.cos(p.yaw)), abs(math.sin(p.yaw))
            reach = (np.array([c * p.half[0] + s * p.half[1], s * p.half[0] + c * p.half[1]]) if p.kind == "box"
                     else p.half[:2])  # half extents of the world-aligned bounding box
            assert np.all(p.center[:2] - reach > -1e-6) and np.all(p.center[:2] + reach < scene.size[:2] + 1e-6)
            assert p.center[2] - p.half[2] > -1e-9 and p.center[2] + p.half[2] < scene.size[2] + 1e-9
    rooms = {CLASS_ID["wall"], CLASS_ID["floor"], CLASS_ID["ceiling"]}
    assert labels | rooms == set(range(len(SYNTHETIC_CLASSES)))  # every class is built somewhere
    assert np.mean(counts) > 35 and min(counts) > 10
    assert 2 <= structure <= 15


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


def test_random_intrinsics_change_only_K_and_pixels(tiny, tiny_fov):
    nyu, fov = DatasetLayout(tiny), DatasetLayout(tiny_fov)
    assert fov.meta.extra["generator"]["fov_range"] == [45.0, 100.0]
    assert "uniform in [45, 100]" in fov.meta.extra["intrinsics"]
    assert nyu.ids("train") + nyu.ids("val") == fov.ids("train") + fov.ids("val")
    hfovs = []
    for sample_id in fov.ids("train") + fov.ids("val"):
        K_fov = fov.cameras[sample_id].K
        np.testing.assert_array_equal(fov.cameras[sample_id].pose, nyu.cameras[sample_id].pose)  # same scenes
        assert K_fov[0, 0] == K_fov[1, 1] and K_fov[0, 1] == K_fov[1, 0] == 0 and K_fov[2].tolist() == [0, 0, 1]
        assert abs(K_fov[0, 2] - 32) <= 0.05 * 64 and abs(K_fov[1, 2] - 24) <= 0.05 * 48
        hfovs.append(math.degrees(2 * math.atan(32 / K_fov[0, 0])))
    assert 45.0 <= min(hfovs) and max(hfovs) <= 100.0 and len(set(hfovs)) == len(hfovs)
    assert np.ptp(hfovs) > 20.0  # 9 views spread over the 55 degree range
    wider = hfovs[0] > math.degrees(2 * math.atan(320 / NYU_FOCAL[0]))  # NYUv2: 63.3 degrees
    depth_nyu = _load(nyu, "s0000_v00")["depth"]
    depth_fov = _load(fov, "s0000_v00")["depth"]
    assert not np.array_equal(depth_nyu, depth_fov)
    # the centre ray is almost the same one (principal point within 5% of the centre): about the same depth there,
    # while a wider field of view sees more of the room around it
    assert (depth_fov.max() >= depth_nyu.max() - 1e-3) if wider else (depth_fov.max() <= depth_nyu.max() + 1e-3)


def test_stored_normals_agree_with_depth_gradients(dataset):
    """Normals derived from the stored depth with the stored K match the stored normals: K reproduces the geometry."""
    layout = DatasetLayout(dataset)
    for sample_id in layout.ids("train")[:3] + layout.ids("val")[:1]:
        labels = _load(layout, sample_id)
        derived = normals_from_depth(labels["depth"], layout.cameras[sample_id].K)
        valid = np.linalg.norm(derived, axis=-1) > 0.5
        assert valid.mean() > 0.5
        cosine = np.sum(derived[valid] * labels["normals"][valid], axis=-1).clip(-1, 1)
        assert np.degrees(np.median(np.arccos(cosine))) < 2.0
        # with a wrong focal length the same check fails: the test can tell (planes bend, normals tilt)
        wrong = layout.cameras[sample_id].K * np.array([[1.5], [1.5], [1.0]])
        derived = normals_from_depth(labels["depth"], wrong)
        cosine = np.sum(derived[valid] * labels["normals"][valid], axis=-1).clip(-1, 1)
        assert np.degrees(np.mean(np.arccos(cosine))) > 4.0


def test_floor_pixels_back_project_onto_the_floor(dataset):
    """Stored depth + K + pose put every floor pixel on the world plane z = 0 (rugs: 1.2 cm above it)."""
    layout = DatasetLayout(dataset)
    checked = 0
    for sample_id in layout.ids("train") + layout.ids("val"):
        camera, labels = layout.cameras[sample_id], _load(layout, sample_id)
        floor = labels["semseg"] == CLASS_ID["floor"]
        if floor.sum() < 20:
            continue
        world = backproject(labels["depth"], camera.K) @ camera.pose[:3, :3].T + camera.pose[:3, 3]
        assert np.all(np.abs(world[floor][:, 2] - 0.006) <= 0.0061)
        assert np.median(np.abs(world[floor][:, 2])) < 1e-4  # mostly bare floor, exactly at 0
        checked += 1
    assert checked >= 3


def test_two_views_of_one_scene_agree(dataset):
    """A pixel of view A, back-projected with A's depth, K and pose and projected with B's K and pose, lands on a
    surface of B at the depth B stored (unless occluded in B) and with the same class."""
    layout = DatasetLayout(dataset)
    checked = 0
    for a, b in (("s0000_v00", "s0000_v01"), ("s0001_v01", "s0001_v02"), ("s0002_v00", "s0002_v01")):
        cam_a, cam_b = layout.cameras[a], layout.cameras[b]
        la, lb = _load(layout, a), _load(layout, b)
        world = backproject(la["depth"], cam_a.K) @ cam_a.pose[:3, :3].T + cam_a.pose[:3, 3]
        in_b = (world - cam_b.pose[:3, 3]) @ cam_b.pose[:3, :3]  # world -> camera B: R^T (p - t)
        pix = in_b @ cam_b.K.T
        ub, vb = np.floor(pix[..., 0] / pix[..., 2]).astype(int), np.floor(pix[..., 1] / pix[..., 2]).astype(int)
        inside = (in_b[..., 2] > 0) & (ub >= 0) & (ub < 64) & (vb >= 0) & (vb < 48)
        if inside.mean() < 0.2:  # a pair on a wide arc may share little: nothing to compare
            continue
        z_proj = in_b[..., 2][inside]
        z_b = lb["depth"][vb[inside], ub[inside]]
        visible = np.abs(z_proj - z_b) < 0.03 * z_b
        assert visible.mean() > 0.5  # most shared points are not occluded in B (3% depth tolerance)
        # nothing is seen through: a point is not in front of all B sees around its pixel (B's 3x3 neighbours
        # cover the sub-pixel offset, which matters at occlusion edges and on grazing floors)
        padded = np.pad(lb["depth"], 1, mode="edge")
        nearest = np.min([padded[1 + dv:49 + dv, 1 + du:65 + du] for dv in (-1, 0, 1) for du in (-1, 0, 1)], axis=0)
        seen_through = z_proj <= 0.97 * nearest[vb[inside], ub[inside]]
        assert seen_through.mean() < 0.005  # only solids thinner than a pixel (a lamp pole, a cord) can slip between
        interior = (la["edge"][inside] == 0) & (lb["edge"][vb[inside], ub[inside]] == 0) & visible
        same = la["semseg"][inside][interior] == lb["semseg"][vb[inside], ub[inside]][interior]
        assert same.mean() > 0.95
        checked += 1
    assert checked >= 2


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


# The content of two tiny seed-0 datasets (made before the generator became a package, the same after), recorded with
# numpy 2.4 (its random streams and float maths): a change to the generator that moves any pixel, label, depth (to
# 1e-4 m), camera or file name changes these.
CONTENT_DIGESTS = {"nyu": "3a1b8826469095e4f416ee3a2d239c3b74ceb5c6ef823495cbf39476261018ec",
                   "fov": "69e3c8233eb14a2443553672da313cb23a28f1fb49ef8cf240bd445d2abe10c6"}
RECORDED_NUMPY = "2.4"


def _content_digest(root: Path) -> str:
    """sha256 over every file's name and content: decoded PNGs, .npy arrays (floats rounded to 4 decimals), the
    other files' bytes (so no image encoder version enters it)."""
    import imageio.v3 as iio

    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        if path.suffix not in (".png", ".npy"):
            digest.update(path.read_bytes())
            continue
        data = np.asarray(iio.imread(path)) if path.suffix == ".png" else np.load(path)
        data = np.ascontiguousarray(np.round(data, 4) if data.dtype.kind == "f" else data)
        digest.update(f"{data.shape} {data.dtype.str}".encode() + data.tobytes())
    return digest.hexdigest()


@pytest.mark.skipif(".".join(np.__version__.split(".")[:2]) != RECORDED_NUMPY,
                    reason=f"the digests were recorded with numpy {RECORDED_NUMPY}")
def test_the_generator_output_for_seed_0_is_unchanged(tmp_path):
    options = SyntheticOptions(train_scenes=2, val_scenes=1, views=2, height=24, width=32, seed=0)
    fov = dataclasses.replace(options, fov_range=(40.0, 100.0), principal_jitter=0.1, arc_degrees=150.0)
    got = {name: _content_digest(generate_synthetic(tmp_path / name, settings))
           for name, settings in (("nyu", options), ("fov", fov))}
    assert got == CONTENT_DIGESTS


def test_random_intrinsics_are_deterministic(tiny_fov, tmp_path):
    again = generate_synthetic(tmp_path / "again", TINY_FOV, workers=2)
    assert _hashes(again) == _hashes(tiny_fov)


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


@pytest.mark.parametrize("change, message", [
    ({"views": 101}, r"views \(--views\) must be <= 100"),
    ({"height": 8}, r"height \(--height\) must be an integer >= 16, got 8"),
    ({"arc_degrees": 200.0}, r"arc_degrees \(--arc-degrees\) must be a number of degrees in \[0, 180\], got 200"),
    ({"arc_degrees": float("nan")}, r"arc_degrees .* got nan"),
    ({"fov_range": (80.0, 60.0)}, r"fov_range \(--fov-range\) must be A-B degrees with 20 <= A <= B <= 120, "
                                  r"got \(80.0, 60.0\)"),
    ({"fov_range": (10.0, 60.0)}, r"20 <= A <= B <= 120"),
    ({"fov_range": (60.0,)}, r"fov_range .* must be two numbers"),
    ({"principal_jitter": -0.1}, r"principal_jitter \(--principal-jitter\) must be a fraction of the image size "
                                 r"in \[0, 0.2\]"),
])
def test_bad_options_are_named_with_their_flag(change, message, tmp_path):
    with pytest.raises(Mtl3dError, match=message):
        generate_synthetic(tmp_path / "bad", dataclasses.replace(TINY, **change))
    assert not (tmp_path / "bad").exists()


def test_parse_fov_range():
    assert parse_fov_range("50-80") == (50.0, 80.0)
    assert parse_fov_range(" 55.5 - 70 ") == (55.5, 70.0)
    assert parse_fov_range("60") == (60.0, 60.0)
    assert parse_fov_range(None) is None and parse_fov_range("") is None
    for text in ("50..80", "fifty-80", "-50-80", "50-", "50-80-90", "50 80"):
        with pytest.raises(Mtl3dError, match=r"--fov-range must be A-B .*e\.g\. 50-80"):
            parse_fov_range(text)


@pytest.mark.slow
def test_cli_defaults_match_the_generator_and_bad_fov_range_is_one_line(tmp_path):
    from mtl3dcli.cli import download

    parameters = inspect.signature(download).parameters
    defaults = SyntheticOptions()
    for name in ("train_scenes", "val_scenes", "views", "seed", "arc_degrees", "principal_jitter"):
        assert parameters[name].default == getattr(defaults, name), name
    assert parameters["size"].default == f"{defaults.height}x{defaults.width}"
    assert parameters["fov_range"].default is None
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb", PYTHONPATH=str(Path(__file__).parents[1]))
    result = subprocess.run([sys.executable, "-m", "mtl3dcli", "download", "synthetic", "--out", str(tmp_path / "d"),
                             "--fov-range", "80to90"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--fov-range must be A-B" in result.stderr and "'80to90'" in result.stderr
    assert not (tmp_path / "d").exists()
