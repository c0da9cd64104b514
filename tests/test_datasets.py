"""MultiTaskDataset reads the common layout exactly, fails with errors naming the file, is deterministic per
(seed, epoch, index), and pairs views of the same scene; pairs.view_overlap against hand-derived fractions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from layout_fixtures import CLASSES, camera, plane_view, write_layout

from mtl3dcli.data.dataset import MultiTaskDataset, default_intrinsics, sample_generator
from mtl3dcli.data.layout import SampleCamera
from mtl3dcli.data.pairs import find_partners, view_overlap
from mtl3dcli.data.transforms import train_transform
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.tasks import TASKS, parse_tasks

ALL = parse_tasks("seg,depth,normals,edge")
SIZE = (24, 32)


@pytest.fixture()
def root(tmp_path):
    return write_layout(tmp_path / "fixture")


def test_sample_contents_match_the_analytic_scene(root):
    dataset = MultiTaskDataset(root, "train", ALL)
    assert len(dataset) == 5 and dataset.ids == ["s0_v0", "s0_v1", "s0_v2", "s1_v0", "s1_v1"]
    assert dataset.meta.classes["semseg"] == CLASSES
    sample = dataset[4]
    K, pose = camera(1, SIZE)
    want = plane_view(K, pose, SIZE, z0=3.0)  # scene 1 sits at z0 = 2.5 + 0.5
    assert set(sample) == {"image", "labels", "valid", "K", "pose", "id", "scene", "index", "has_camera", "size"}
    assert (sample["id"], sample["scene"], sample["index"]) == ("s1_v1", "s1", 4)
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, *SIZE)
    np.testing.assert_allclose(sample["image"].numpy(), want["image"].transpose(2, 0, 1) / 255.0, atol=1e-7)
    labels = sample["labels"]
    assert labels["semseg"].dtype == torch.int64 and labels["semseg"].shape == SIZE
    np.testing.assert_array_equal(labels["semseg"].numpy(), want["semseg"])
    assert labels["depth"].dtype == torch.float32 and labels["depth"].shape == (1, *SIZE)
    np.testing.assert_array_equal(labels["depth"][0].numpy(), want["depth"])
    assert labels["normals"].shape == (3, *SIZE)
    np.testing.assert_allclose(labels["normals"][:, 5, 7].numpy(), want["normals"][5, 7], atol=1 / 255)
    np.testing.assert_array_equal(labels["edge"][0].numpy(), want["edge"])
    for name in ("semseg", "depth", "normals", "edge"):
        assert sample["valid"][name].dtype == torch.bool and sample["valid"][name].all()
    np.testing.assert_allclose(sample["K"].numpy(), K, rtol=1e-6)
    np.testing.assert_allclose(sample["pose"].numpy(), pose, atol=1e-6)
    assert sample["has_camera"].item() is True
    assert sample["size"].tolist() == list(SIZE) and sample["size"].dtype == torch.int64


def test_split_and_task_filtering(root):
    val = MultiTaskDataset(root, "val", parse_tasks("depth"))
    assert val.ids == ["s1_v2"]
    assert set(val[0]["labels"]) == {"depth"} and set(val[0]["valid"]) == {"depth"}


def test_default_camera_without_cameras_json(tmp_path):
    root = write_layout(tmp_path / "nocam", cameras=False)
    sample = MultiTaskDataset(root, "train", ALL, default_fov_deg=90.0)[0]
    # 90 degree horizontal FOV on a 32 px wide image: fx = 16 / tan(45 deg) = 16, centred principal point
    np.testing.assert_allclose(sample["K"].numpy(), [[16, 0, 16], [0, 16, 12], [0, 0, 1]], atol=1e-5)
    assert torch.equal(sample["pose"], torch.eye(4))
    assert sample["has_camera"].item() is False and sample["scene"] == "s0_v0"
    focal = default_intrinsics((24, 32), 60.0)[0, 0].item()
    assert focal == pytest.approx(16 / math.tan(math.radians(30)))
    with pytest.raises(Mtl3dError, match="cameras.json"):
        MultiTaskDataset(root, "train", ALL, pairs=True)


def test_corrupt_image_names_the_file(root):
    (root / "images" / "s0_v1.png").write_bytes(b"this is not a png")
    dataset = MultiTaskDataset(root, "train", ALL)
    dataset[0]  # other samples still load: validation is lazy
    with pytest.raises(Mtl3dError, match=r"images[/\\]s0_v1\.png"):
        dataset[1]


def test_truncated_npy_names_the_file(root):
    path = root / "depth" / "s0_v2.npy"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(Mtl3dError, match=r"truncated.*depth[/\\]s0_v2\.npy"):
        MultiTaskDataset(root, "train", ALL)[2]


def test_label_shape_mismatch_names_both_files(root):
    TASKS["semseg"].write(root / "segmentation" / "s0_v0.png", np.zeros((20, 32), np.uint8))
    with pytest.raises(Mtl3dError, match=r"label .*s0_v0\.png has shape \(20, 32\) but image .*s0_v0\.png is "
                                         r"\(24, 32\)"):
        MultiTaskDataset(root, "train", ALL)[0]


def test_missing_label_file_names_task_and_file(root):
    (root / "normals" / "s1_v0.png").unlink()
    with pytest.raises(Mtl3dError, match=r"missing normals label for sample 's1_v0': .*s1_v0\.png"):
        MultiTaskDataset(root, "train", ALL)[3]


def test_missing_split_and_missing_task(tmp_path, root):
    with pytest.raises(Mtl3dError, match=r"split 'test' not found.*available: train, val"):
        MultiTaskDataset(root, "test", ALL)
    partial = write_layout(tmp_path / "partial", tasks=("semseg", "depth"))
    with pytest.raises(Mtl3dError, match="no labels for task.*normals"):
        MultiTaskDataset(partial, "train", parse_tasks("seg,normals"))


def test_epoch_keys_give_reproducible_worker_independent_draws(root):
    dataset = MultiTaskDataset(root, "train", ALL, train_transform((16, 20)), seed=3)
    a, b = dataset[2], dataset[2]
    other = MultiTaskDataset(root, "train", ALL, train_transform((16, 20)), seed=3)[2]  # as in another worker
    for x in (b, other):
        assert torch.equal(a["image"], x["image"]) and torch.equal(a["K"], x["K"])
        assert torch.equal(a["labels"]["depth"], x["labels"]["depth"])
    c = dataset[(1, 2)]
    assert not torch.equal(a["image"], c["image"])
    assert a["image"].shape == c["image"].shape == (3, 16, 20)
    assert torch.equal(dataset[(0, 2)]["image"], a["image"])
    g1, g2 = sample_generator(0, 0, 1), sample_generator(0, 1, 0)
    assert not torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_pairs_come_from_the_same_scene(root):
    dataset = MultiTaskDataset(root, "train", ALL, pairs=True)
    cameras = dataset.layout.cameras
    assert dataset.partners["s1_v0"] == ["s1_v1"]  # s1_v2 is in the val split, scene 0 is another scene
    assert sorted(dataset.partners["s0_v0"]) == ["s0_v1", "s0_v2"]
    assert dataset.partners["s0_v0"][0] == "s0_v1"  # the nearer view overlaps more
    for index, sample_id in enumerate(dataset.ids):
        sample = dataset[index]
        assert sample["has_pair"].item() is True
        pair = sample["pair"]
        matches = [pid for pid in dataset.partners[sample_id]
                   if np.allclose(pair["pose"].numpy(), cameras[pid].pose, atol=1e-6)]
        assert len(matches) == 1 and cameras[matches[0]].scene == sample["scene"]
        assert not torch.equal(pair["pose"], sample["pose"])
        K, pose = camera(int(matches[0][-1]), SIZE)
        want = plane_view(K, pose, SIZE, z0=2.5 + 0.5 * int(matches[0][1]))
        np.testing.assert_array_equal(pair["labels"]["depth"][0].numpy(), want["depth"])
    single = MultiTaskDataset(root, "val", ALL, pairs=True)[0]
    assert single["has_pair"].item() is False
    assert torch.equal(single["pair"]["pose"], single["pose"])
    assert torch.equal(single["pair"]["labels"]["depth"], single["labels"]["depth"])


def test_dataloader_with_default_collate(root):
    dataset = MultiTaskDataset(root, "train", ALL, train_transform((16, 20)), pairs=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=0, shuffle=False)
    batches = list(loader)
    assert len(batches) == 3
    batch = batches[0]
    assert batch["image"].shape == (2, 3, 16, 20)
    assert batch["labels"]["semseg"].shape == (2, 16, 20) and batch["labels"]["depth"].shape == (2, 1, 16, 20)
    assert batch["valid"]["normals"].dtype == torch.bool
    assert batch["K"].shape == (2, 3, 3) and batch["pose"].shape == (2, 4, 4)
    assert batch["pair"]["labels"]["normals"].shape == (2, 3, 16, 20) and batch["pair"]["K"].shape == (2, 3, 3)
    assert batch["id"] == ["s0_v0", "s0_v1"] and batch["scene"] == ["s0", "s0"]
    assert batch["index"].tolist() == [0, 1] and batch["has_pair"].tolist() == [True, True]
    assert batch["size"].tolist() == [[24, 32], [24, 32]]


def test_view_overlap_by_hand():
    K = np.array([[10.0, 0, 10], [0, 10, 5], [0, 0, 1]])  # a 10x20 image: 4 m wide at 2 m depth
    size = (10, 20)
    assert view_overlap(K, np.eye(4), K, np.eye(4), size, size, depth=2.0) == 1.0
    shifted = np.eye(4)
    shifted[0, 3] = 2.0  # half the view width to the right: A's right half lands in B
    assert view_overlap(K, np.eye(4), K, shifted, size, size, depth=2.0) == 0.5
    assert view_overlap(K, shifted, K, np.eye(4), size, size, depth=2.0) == 0.5
    behind = np.diag([-1.0, 1.0, -1.0, 1.0])  # turned around: everything is behind B
    assert view_overlap(K, np.eye(4), K, behind, size, size, depth=2.0) == 0.0
    far = np.eye(4)
    far[0, 3] = 3.0  # three quarters of the width: only the right quarter remains
    assert view_overlap(K, np.eye(4), K, far, size, size, depth=2.0) == 0.25


def test_find_partners_threshold_symmetry_and_scenes():
    K = np.array([[10.0, 0, 10], [0, 10, 5], [0, 0, 1]])
    poses = {}
    for name, shift in [("a", 0.0), ("b", 1.0), ("c", 3.0), ("d", 0.0)]:
        poses[name] = np.eye(4)
        poses[name][0, 3] = shift
    cameras = {name: SampleCamera(K, pose, "room" if name != "d" else "other") for name, pose in poses.items()}
    sizes = dict.fromkeys(cameras, (10, 20))
    partners = find_partners(cameras, list(cameras), sizes, min_overlap=0.3, depth=2.0)
    # overlaps at 2 m: a-b 0.75, b-c 0.5, a-c 0.25 (< 0.3); d is alone in its scene
    assert partners == {"a": ["b"], "b": ["a", "c"], "c": ["b"], "d": []}
    assert find_partners(cameras, ["a", "c"], sizes, min_overlap=0.2, depth=2.0) == {"a": ["c"], "c": ["a"]}


def test_train_fraction_keeps_whole_scenes_and_ignores_the_seed(root):
    full = MultiTaskDataset(root, "train", ALL)
    half = MultiTaskDataset(root, "train", ALL, fraction=0.5, seed=1)
    assert half.ids == MultiTaskDataset(root, "train", ALL, fraction=0.5, seed=7).ids
    scenes = {full.scene(i) for i in full.ids}
    kept = {half.scene(i) for i in half.ids}
    assert len(kept) == math.ceil(len(scenes) / 2) and kept < scenes
    assert half.ids == [i for i in full.ids if full.scene(i) in kept]  # every view of a kept scene, in split order
    with pytest.raises(Mtl3dError, match="train_fraction"):
        MultiTaskDataset(root, "train", ALL, fraction=0.0)


def _assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    else:
        assert a == b


def test_cache_serves_identical_samples_without_the_files(root):
    transform = train_transform((16, 20), scale=(0.8, 1.25))
    plain = MultiTaskDataset(root, "train", ALL, transform, pairs=True, seed=4)
    cached = MultiTaskDataset(root, "train", ALL, transform, pairs=True, seed=4, cache=True)
    for index in range(len(cached)):
        _assert_same(plain[(0, index)], cached[(0, index)])  # fills the cache (partners too)
    expected = {(epoch, index): plain[(epoch, index)] for epoch in (1, 2) for index in range(len(plain))}
    for path in (root / "images").glob("*"):
        path.unlink()  # from now on only the cache can serve the samples
    with pytest.raises(Mtl3dError, match="missing image"):
        plain[(1, 0)]
    for key, sample in expected.items():
        _assert_same(sample, cached[key])  # and a transformed sample never altered the cached one
