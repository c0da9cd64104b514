"""Joint transforms keep labels, intrinsics and pose consistent: every transformed pixel back-projects (with the new
K and pose) to the world point of the source pixel it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from layout_fixtures import plane_view

from mtl3dcli.data import transforms as T
from mtl3dcli.derive import backproject
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.tasks import TASKS, Task


@dataclass(frozen=True)
class SourceIndexTask(Task):
    """Test-only label: the (u, v) pixel index each pixel came from, -1 where padded; transformed like any label."""

    fill: ClassVar[float] = -1.0


SOURCE = SourceIndexTask("source", "source pixel", (), "source", ".npy", 0.0, "", False)
LABEL_TASKS = ("semseg", "depth", "normals", "edge")
TASK_MAP = {**{name: TASKS[name] for name in LABEL_TASKS}, "source": SOURCE}
SIZE = (30, 45)
K = np.array([[40.0, 0.0, 20.3], [0.0, 41.0, 16.1], [0.0, 0.0, 1.0]])


def rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return ry @ rx


POSE = np.eye(4)
POSE[:3, :3] = rotation(10.0, 5.0)
POSE[:3, 3] = [0.1, -0.2, 0.3]


def make_sample(k: np.ndarray = K) -> T.Sample:
    """The analytic plane at SIZE seen with intrinsics k; the image is a ramp encoding each pixel centre:
    (u + 0.5) / W, (v + 0.5) / H."""
    height, width = SIZE
    arrays = plane_view(k, POSE, SIZE)
    labels = {name: TASKS[name].to_tensor(arrays[name]) for name in LABEL_TASKS}
    v, u = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    labels["source"] = torch.stack([u, v]).float()
    valid = {name: TASK_MAP[name].valid(label) if name != "source" else torch.ones(SIZE, dtype=torch.bool)
             for name, label in labels.items()}
    image = torch.stack([(u + 0.5) / width, (v + 0.5) / height, torch.full(SIZE, 0.5)]).float()
    return {"image": image, "labels": labels, "valid": valid,
            "K": torch.tensor(k, dtype=torch.float32), "pose": torch.tensor(POSE, dtype=torch.float32)}


def world_points(sample: T.Sample) -> np.ndarray:
    """(H, W, 3) world points of the sample's depth via backproject with its K, then its pose."""
    depth = sample["labels"]["depth"][0].numpy().astype(np.float64)
    pose = sample["pose"].numpy().astype(np.float64)
    return backproject(depth, sample["K"].numpy()) @ pose[:3, :3].T + pose[:3, 3]


def source_index(sample: T.Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask of non-padded pixels, source v, source u) from the source-index label."""
    source = sample["labels"]["source"].numpy().astype(np.int64)
    inside = source[0] >= 0
    return inside, source[1][inside], source[0][inside]


def check_consistent(source: T.Sample, out: T.Sample, flipped: bool) -> None:
    """Every non-padded output pixel carries the labels of its source pixel; padding is invalid and filled."""
    inside, sv, su = source_index(out)
    for name in LABEL_TASKS:
        got = out["labels"][name]
        want = source["labels"][name][..., sv, su]
        if name == "normals" and flipped:
            want = want * torch.tensor([-1.0, 1.0, 1.0])[:, None]
        assert torch.equal(got[..., torch.from_numpy(inside)], want), name
        assert not out["valid"][name][torch.from_numpy(~inside)].any(), name
        assert torch.equal(out["valid"][name][torch.from_numpy(inside)], source["valid"][name][sv, su]), name
    assert (out["labels"]["semseg"][torch.from_numpy(~inside)] == 255).all()
    assert (out["labels"]["depth"][0][torch.from_numpy(~inside)] == 0).all()
    # world-frame normals are the same before and after (the mirror flips n_x and the pose's x axis together)
    normals_world = out["pose"][:3, :3] @ out["labels"]["normals"].flatten(1)
    want_world = source["pose"][:3, :3] @ source["labels"]["normals"][:, 0, 0]
    assert torch.allclose(normals_world[:, inside.ravel()], want_world[:, None], atol=1e-6)


def exact_cases() -> dict[str, T.Transform]:
    """Transforms whose output pixel centres coincide with source pixel centres (1/3 downscale, crops, pads, flips)."""
    def fixed(op):
        return lambda sample, tasks, generator: op(sample, tasks)
    return {
        "downscale-3": T.Resize((10, 15)),
        "crop": fixed(lambda s, t: T.crop(s, 3, 5, (12, 20))),
        "pad": fixed(lambda s, t: T.pad(s, t, 2, 1, 4, 3)),
        "flip": fixed(T.hflip),
        "compose": T.Compose([T.Resize((10, 15)), fixed(lambda s, t: T.pad(s, t, 1, 0, 3, 0)),
                              fixed(lambda s, t: T.crop(s, 0, 1, (9, 16))), fixed(T.hflip)]),
    }


@pytest.mark.parametrize("name", list(exact_cases()))
def test_world_points_preserved_exactly(name):
    source = make_sample()
    out = exact_cases()[name](source, TASK_MAP, torch.Generator().manual_seed(0))
    flipped = name in ("flip", "compose")
    check_consistent(source, out, flipped)
    inside, sv, su = source_index(out)
    got = world_points(out)[inside]
    want = world_points(source)[sv, su]
    assert got.shape[0] > 50
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_downscale_by_three_samples_centre_pixels_and_scales_K():
    out = T.resize(make_sample(), TASK_MAP, (10, 15))
    inside, sv, su = source_index(out)
    v, u = np.nonzero(inside)
    np.testing.assert_array_equal(su, 3 * u + 1)  # centre u' + 0.5 maps to 3u' + 1.5, the centre of pixel 3u' + 1
    np.testing.assert_array_equal(sv, 3 * v + 1)
    np.testing.assert_allclose(out["K"].numpy(), [[40 / 3, 0, 20.3 / 3], [0, 41 / 3, 16.1 / 3], [0, 0, 1]], rtol=1e-6)


def test_crop_pad_flip_intrinsics_by_hand():
    sample = make_sample()
    np.testing.assert_allclose(T.crop(sample, 3, 5, (12, 20))["K"][:2, 2].numpy(), [15.3, 13.1], rtol=1e-6)
    np.testing.assert_allclose(T.pad(sample, TASK_MAP, 2, 1, 4, 3)["K"][:2, 2].numpy(), [24.3, 18.1], rtol=1e-6)
    flipped = T.hflip(sample, TASK_MAP)
    np.testing.assert_allclose(flipped["K"].numpy(), [[40, 0, 45 - 20.3], [0, 41, 16.1], [0, 0, 1]], rtol=1e-6)
    np.testing.assert_allclose(flipped["pose"].numpy(), POSE @ np.diag([-1.0, 1, 1, 1]), atol=1e-6)
    assert np.linalg.det(flipped["pose"][:3, :3].numpy()) == pytest.approx(-1.0, abs=1e-5)
    twice = T.hflip(flipped, TASK_MAP)
    for name in LABEL_TASKS:
        assert torch.equal(twice["labels"][name], sample["labels"][name])
    assert torch.allclose(twice["K"], sample["K"]) and torch.allclose(twice["pose"], sample["pose"])


@pytest.mark.parametrize("seed", range(6))
def test_random_scale_crop_flip_keeps_geometry(seed):
    source = make_sample()
    transform = T.Compose([T.RandomScale(0.6, 1.7), T.RandomCrop((24, 32)), T.RandomHorizontalFlip(0.5)])
    out = transform(source, TASK_MAP, torch.Generator().manual_seed(seed))
    assert out["image"].shape == (3, 24, 32)
    flipped = bool(out["pose"][0, 0] * source["pose"][0, 0] < 0)
    check_consistent(source, out, flipped)
    inside, sv, su = source_index(out)
    height, width = SIZE
    fx, fy = float(out["K"][0, 0]), float(out["K"][1, 1])
    scale = fx / K[0, 0]
    assert fy / K[1, 1] == pytest.approx(scale, rel=0.05)  # aspect kept up to rounding of the new size

    # 1. the ray through each output pixel centre (new K, pose) is the ray through the continuous source position
    #    the image ramp says it shows; exact up to the antialias filter's ~0.07 px bias on a ramp, far below the
    #    0.5 px a wrong pixel-centre convention would cause.
    v, u = np.nonzero(inside)
    ramp = out["image"].numpy()
    away = (su >= 3) & (su <= width - 4) & (sv >= 3) & (sv <= height - 4)
    src_pix = np.stack([ramp[0, v, u] * width, ramp[1, v, u] * height, np.ones(u.size)])[:, away]
    out_pix = np.stack([u + 0.5, v + 0.5, np.ones(u.size)])[:, away]
    pose_out = out["pose"].numpy().astype(np.float64)
    ray_out = pose_out[:3, :3] @ np.linalg.solve(out["K"].numpy().astype(np.float64), out_pix)
    ray_src = POSE[:3, :3] @ np.linalg.solve(K, src_pix)
    assert away.sum() > 50
    np.testing.assert_allclose(ray_out, ray_src, atol=0.1 / K[0, 0])

    # 2. world points of the (nearest-sampled) depth lie within half a source pixel's ray offset of the source
    #    pixel's point: same depth, ray off by at most 0.5 px in u and v.
    got = world_points(out)[inside]
    want = world_points(source)[sv, su]
    depth = source["labels"]["depth"][0].numpy()[sv, su]
    bound = depth * np.hypot(0.5 / K[0, 0], 0.5 / K[1, 1]) * 1.01 + 1e-5
    assert (np.linalg.norm(got - want, axis=-1) <= bound).all()


def test_random_crop_pads_small_images_and_marks_padding_invalid():
    source = make_sample()
    out = T.RandomCrop((36, 50))(source, TASK_MAP, torch.Generator().manual_seed(0))
    assert out["image"].shape == (3, 36, 50)
    for name in LABEL_TASKS:
        assert out["valid"][name].sum() == 30 * 45
        assert not out["valid"][name][30:].any() and not out["valid"][name][:, 45:].any()
    assert (out["labels"]["semseg"][30:] == 255).all()
    assert (out["image"][:, 30:] == 0).all()
    torch.testing.assert_close(out["K"], source["K"])  # bottom/right padding leaves K alone


SQUARE_K = np.array([[40.0, 0.0, 20.3], [0.0, 40.0, 16.1], [0.0, 0.0, 1.0]])  # fx = fy: rotation is a camera roll


@pytest.mark.parametrize("degrees", [25.0, -13.0])
def test_rotation_rolls_the_camera(degrees):
    source = make_sample(SQUARE_K)
    out = T.rotate(source, TASK_MAP, degrees)
    inside, sv, su = source_index(out)
    assert 0.5 * inside.size < inside.sum() < inside.size  # corners rotated in from outside
    angle = np.radians(degrees)
    roll = torch.tensor([[np.cos(angle), np.sin(angle), 0], [-np.sin(angle), np.cos(angle), 0], [0, 0, 1]],
                        dtype=torch.float32)
    mask = torch.from_numpy(inside)
    for name in LABEL_TASKS:  # every label is its nearest source pixel's; outside is filled and invalid
        want = source["labels"][name][..., sv, su]
        if name == "normals":
            want = roll @ want
        torch.testing.assert_close(out["labels"][name][..., mask], want, rtol=0, atol=1e-6)
        assert not out["valid"][name][~mask].any()
    assert (out["labels"]["semseg"][~mask] == 255).all()
    assert torch.equal(out["K"], source["K"])  # rolled about the principal point
    # world-frame normals and the points of the depth stay where they were (nearest sampling: half a pixel's ray)
    normals_world = out["pose"][:3, :3] @ out["labels"]["normals"].flatten(1)
    want_world = source["pose"][:3, :3] @ source["labels"]["normals"][:, 0, 0]
    torch.testing.assert_close(normals_world[:, inside.ravel()], want_world[:, None].expand(3, int(inside.sum())),
                               rtol=0, atol=1e-5)
    got, want = world_points(out)[inside], world_points(source)[sv, su]
    bound = source["labels"]["depth"][0].numpy()[sv, su] * np.hypot(0.5, 0.5) / 40.0 * 1.01 + 1e-5
    assert (np.linalg.norm(got - want, axis=-1) <= bound).all()
    # the ray through each output pixel centre (K, new pose) is the ray through the continuous source position
    # that the bilinearly sampled image ramp shows (exact on a ramp, away from the border)
    v, u = np.nonzero(inside)
    ramp = out["image"].numpy()
    away = (su >= 2) & (su <= SIZE[1] - 3) & (sv >= 2) & (sv <= SIZE[0] - 3)
    src_pix = np.stack([ramp[0, v, u] * SIZE[1], ramp[1, v, u] * SIZE[0], np.ones(u.size)])[:, away]
    out_pix = np.stack([u + 0.5, v + 0.5, np.ones(u.size)])[:, away]
    ray_out = out["pose"].numpy().astype(np.float64)[:3, :3] @ np.linalg.solve(SQUARE_K, out_pix)
    ray_src = POSE[:3, :3] @ np.linalg.solve(SQUARE_K, src_pix)
    assert away.sum() > 200
    np.testing.assert_allclose(ray_out, ray_src, atol=1e-3 / 40.0)


def test_quarter_turn_about_the_centre_is_rot90_and_zero_is_identity():
    source = make_sample()
    square = T.crop(source, 0, 0, (30, 30))
    del square["K"]  # no camera: about the image centre
    turned = T.rotate(square, TASK_MAP, 90.0)
    assert torch.equal(turned["labels"]["semseg"], torch.rot90(square["labels"]["semseg"], 1, (0, 1)))
    assert torch.equal(turned["labels"]["source"], torch.rot90(square["labels"]["source"], 1, (1, 2)))
    torch.testing.assert_close(turned["image"], torch.rot90(square["image"], 1, (1, 2)))
    assert all(bool(mask.all()) for mask in turned["valid"].values())  # pixel centres land on pixel centres
    same = T.rotate(source, TASK_MAP, 0.0)
    assert all(torch.equal(same["labels"][n], source["labels"][n]) for n in TASK_MAP)
    assert torch.equal(same["image"], source["image"]) and torch.equal(same["pose"], source["pose"])


def _halves() -> T.Sample:
    """40x40, class 1 on the left half and class 2 on the right half (a 20-pixel-wide crop sees both only when
    it straddles column 20)."""
    semseg = torch.ones(40, 40, dtype=torch.int64)
    semseg[:, 20:] = 2
    return {"image": torch.zeros(3, 40, 40), "labels": {"semseg": semseg}, "valid": {"semseg": semseg != 255}}


def test_class_balanced_crop_redraws_until_no_class_dominates():
    def fraction(out):  # class 1's share of the crop
        return float((out["labels"]["semseg"] == 1).float().mean())

    plain = [fraction(T.RandomCrop((20, 20))(_halves(), TASKS, torch.Generator().manual_seed(s))) for s in range(40)]
    balanced = [fraction(T.RandomCrop((20, 20), max_class_ratio=0.75)(_halves(), TASKS,
                                                                      torch.Generator().manual_seed(s)))
                for s in range(40)]
    dominated = sum(not 0.25 < f < 0.75 for f in plain)
    assert dominated > 10  # left offsets 0-5 and 15-20 of 0-20: about half of the plain crops
    assert sum(not 0.25 < f < 0.75 for f in balanced) <= 1  # ten draws miss with probability 0.57^10
    # switched off, a crop draws exactly what the plain crop draws (runs without it keep their numbers)
    generator = torch.Generator().manual_seed(5)
    top, left = T._randint(generator, 20), T._randint(generator, 20)
    out = T.RandomCrop((20, 20), max_class_ratio=1.0)(_halves(), TASKS, torch.Generator().manual_seed(5))
    assert torch.equal(out["labels"]["semseg"], _halves()["labels"]["semseg"][top:top + 20, left:left + 20])


def test_train_transform_adds_rotation_and_balanced_crop_only_when_asked():
    assert not any(isinstance(t, T.RandomRotate) for t in T.train_transform((24, 32)).transforms)
    transform = T.train_transform((24, 32), rotate=20.0, max_class_ratio=0.75)
    assert any(isinstance(t, T.RandomRotate) and t.degrees == 20.0 for t in transform.transforms)
    assert next(t for t in transform.transforms if isinstance(t, T.RandomCrop)).max_class_ratio == 0.75
    with pytest.raises(Mtl3dError, match="rotation range"):
        T.RandomRotate(200.0)
    with pytest.raises(Mtl3dError, match="max class ratio"):
        T.RandomCrop((8, 8), max_class_ratio=0.0)


def test_segmentation_resizing_creates_no_new_classes():
    source = make_sample()
    classes = set(source["labels"]["semseg"].unique().tolist())
    for size in [(7, 11), (61, 93), (29, 44)]:
        out = T.resize(source, TASK_MAP, size)
        assert set(out["labels"]["semseg"].unique().tolist()) <= classes
        assert out["labels"]["semseg"].dtype == torch.int64
        assert set(out["labels"]["edge"].unique().tolist()) <= {0.0, 1.0}


def test_color_jitter_touches_only_the_image():
    source = make_sample()
    jitter = T.ColorJitter(0.4, 0.4, 0.4, 0.1)
    out = jitter(source, TASK_MAP, torch.Generator().manual_seed(3))
    again = jitter(source, TASK_MAP, torch.Generator().manual_seed(3))
    assert not torch.equal(out["image"], source["image"])
    assert torch.equal(out["image"], again["image"])
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    for name in TASK_MAP:
        assert out["labels"][name] is source["labels"][name]
        assert out["valid"][name] is source["valid"][name]
    assert out["K"] is source["K"] and out["pose"] is source["pose"]


def test_train_transform_is_deterministic_per_generator_and_fixed_size():
    source = make_sample()
    transform = T.train_transform((24, 32))
    a = transform(source, TASK_MAP, torch.Generator().manual_seed(7))
    b = transform(source, TASK_MAP, torch.Generator().manual_seed(7))
    c = transform(source, TASK_MAP, torch.Generator().manual_seed(8))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["K"], b["K"])
    assert not torch.equal(a["image"], c["image"])
    for name in LABEL_TASKS:
        assert a["labels"][name].shape[-2:] == (24, 32) and a["valid"][name].shape == (24, 32)


def test_eval_transform_modes():
    source = make_sample()
    generator = torch.Generator()
    same = T.eval_transform(None)(source, TASK_MAP, generator)
    assert torch.equal(same["image"], source["image"])
    resized = T.eval_transform((24, 36), "resize")(source, TASK_MAP, generator)
    assert resized["image"].shape == (3, 24, 36)
    np.testing.assert_allclose(resized["K"][0, 0].item(), 40 * 36 / 45, rtol=1e-6)
    padded = T.eval_transform((24, 24), "pad")(source, TASK_MAP, generator)  # fits 30x45 -> 16x24, pads 8 rows
    assert padded["image"].shape == (3, 24, 24)
    np.testing.assert_allclose(padded["K"].numpy()[[0, 1], [0, 1]], [40 * 24 / 45, 41 * 16 / 30], rtol=1e-6)
    assert padded["valid"]["depth"][:16].all() and not padded["valid"]["depth"][16:].any()
    with pytest.raises(Mtl3dError, match="unknown eval resize mode"):
        T.eval_transform((24, 24), "stretch")
