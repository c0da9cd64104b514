"""The task registry's contract: every task round-trips its files, tensors, mirror and colours the same way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.meta import IGNORE_INDEX, DatasetMeta
from mtl3dcli.tasks import TASKS, get_task, parse_tasks

META = DatasetMeta(name="toy", tasks=list(TASKS), classes={"semseg": ["a", "b", "c"], "parts": ["bg", "head"]},
                   depth_range=(0.0, 4.0))


def canonical(name: str, rng: np.random.Generator) -> np.ndarray:
    """A canonical label array of each kind (see the tasks module docstring), with invalid pixels."""
    if name in ("semseg", "parts"):
        array = rng.integers(0, 2, (6, 8)).astype(np.uint8)
        array[0, 0] = IGNORE_INDEX
        return array
    if name == "depth":
        array = rng.uniform(0.5, 4.0, (6, 8)).astype(np.float32)
        array[1, 1] = 0.0
        return array
    if name == "normals":
        array = rng.normal(size=(6, 8, 3)).astype(np.float32)
        array /= np.linalg.norm(array, axis=-1, keepdims=True)
        array[2, 2] = 0.0
        return array
    return (rng.random((6, 8)) > 0.5).astype(np.float32)  # edge, saliency


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_round_trips_and_mirrors(name, tmp_path):
    task = TASKS[name]
    array = canonical(name, np.random.default_rng(0))
    path = task.path(tmp_path, "x")
    assert path.endswith(f"{task.folder}/x{task.suffix}")
    task.write(path, array)
    back = task.read(path)
    tolerance = 1.5 / 255 if name == "normals" else 0.0  # normals are stored as 8-bit RGB
    np.testing.assert_allclose(back, array, atol=tolerance)
    label = task.to_tensor(back)
    c = task.channels(META)
    assert label.dtype == (torch.int64 if name in ("semseg", "parts") else torch.float32)
    assert tuple(label.shape) == ((6, 8) if name in ("semseg", "parts") else (c if name == "normals" else 1, 6, 8))
    valid = task.valid(label)
    assert valid.shape == (6, 8) and valid.dtype == torch.bool
    assert not valid[0, 0] if name in ("semseg", "parts") else True
    assert not valid[1, 1] if name == "depth" else True
    assert not valid[2, 2] if name == "normals" else True
    assert torch.equal(task.hflip(task.hflip(label)), label)  # a mirror is its own inverse
    prediction = task.activate(torch.randn(1, c, 6, 8))[0].numpy()
    for picture in (task.colorize(prediction, META), task.visualize(prediction, META)):
        assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[1:] == (8, 3)
    assert task.colorize(prediction, META).shape[0] == 6


def test_mirror_negates_only_the_horizontal_normal_component():
    normals = TASKS["normals"].to_tensor(canonical("normals", np.random.default_rng(1)))
    mirrored = TASKS["normals"].hflip(normals)
    torch.testing.assert_close(mirrored[0], -normals[0].flip(-1))
    torch.testing.assert_close(mirrored[1:], normals[1:].flip(-1))


def test_depth_visualization_adds_a_legend_under_the_colour_map():
    depth = np.linspace(0.0, 4.0, 48, dtype=np.float32).reshape(1, 6, 8)
    plain, legend = TASKS["depth"].colorize(depth, META), TASKS["depth"].visualize(depth, META)
    assert np.array_equal(legend[:6], plain) and legend.shape[0] > 6 + 6  # colour bar and text below


def test_derivations_compute_boundaries_and_plane_normals():
    seg = np.zeros((5, 6), np.uint8)
    seg[:, 3:] = 1
    edge = TASKS["edge"].derivation.compute({"semseg": seg}, None)
    assert edge[:, 2:4].min() == 1.0 and edge.sum() == 10  # both sides of the class change
    K = np.array([[10.0, 0, 3.0], [0, 10.0, 2.5], [0, 0, 1.0]])
    depth = np.full((5, 6), 2.0, np.float32)  # a fronto-parallel wall faces the camera: n = (0, 0, -1)
    normals = TASKS["normals"].derivation.compute({"depth": depth}, K)
    np.testing.assert_allclose(normals[1:-1, 1:-1], np.broadcast_to([0.0, 0.0, -1.0], (3, 4, 3)), atol=1e-6)
    assert TASKS["normals"].derivation.needs_intrinsics and TASKS["semseg"].derivation is None


def test_names_aliases_and_options():
    assert get_task("SEG") is TASKS["semseg"] and get_task("sal") is TASKS["saliency"]
    assert [t.name for t in parse_tasks("seg, depth,semseg")] == ["semseg", "depth"]
    with pytest.raises(Mtl3dError, match="unknown task"):
        get_task("flow")
    assert TASKS["edge"].with_options(pos_weight=0.9).pos_weight == 0.9
    with pytest.raises(Mtl3dError, match="unknown option"):
        TASKS["depth"].with_options(pos_weight=0.9)
