"""`preprocess`: derived edges/normals, the NYU 40 -> 13 mapping, resizing with consistent K, idempotency."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mtl3dcli import fileio
from mtl3dcli.datasets.convert import convert_nyud
from mtl3dcli.data.layout import DatasetLayout
from mtl3dcli.datasets.preprocess import preprocess, scale_intrinsics
from mtl3dcli.datasets.registry import NYU13
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.tasks import TASKS

from archives import NYU_IDS, PLANE_NORMAL, nyu_K, nyud_files, plane_depth


@pytest.fixture
def nyu(tmp_path) -> Path:
    """The tiny NYUD_MT sample converted into the common layout."""
    for name, data in nyud_files().items():
        path = tmp_path / "upstream" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return convert_nyud(tmp_path / "upstream" / "NYUD_MT", tmp_path / "nyuv2")


def drop_tasks(root: Path, *names: str) -> None:
    for name in names:
        shutil.rmtree(root / TASKS[name].folder)
    meta = fileio.read_json(root / "meta.json")
    meta["tasks"] = [t for t in meta["tasks"] if t not in names]
    fileio.write_json(root / "meta.json", meta)


def test_derives_missing_edges_and_normals_once(nyu):
    drop_tasks(nyu, "edge", "normals")
    calls = []
    summary = preprocess(nyu, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)] * 2  # edges, then normals
    assert summary["derived"] == {"edge": 3, "normals": 3} and not summary["nothing_to_do"]
    layout = DatasetLayout(nyu)
    assert {"edge", "normals"} <= set(layout.meta.tasks)
    edge = TASKS["edge"].read(layout.label_path(TASKS["edge"], "0001"))
    # train ids per row (rows 1..): 255 in cols 0..7, 4 in 8..19, 39 in 20..31; row 0 is id 0.
    assert edge[5, 19] == 1 and edge[5, 20] == 1  # 4 | 39 change, both sides marked
    assert edge[5, 7] == 0 and edge[5, 8] == 0  # a change from ignore (255) is no boundary
    assert edge[5, 12] == 0 and edge[0, 12] == 1 and edge[1, 12] == 1  # row 0 (id 0) against row 1 (id 4)
    normals = TASKS["normals"].read(layout.label_path(TASKS["normals"], "0002"))
    assert np.allclose(normals[10, 10], PLANE_NORMAL, atol=0.01)  # the plane's normal, from depth and K
    assert not normals[0].any() and not normals[:, 0].any()  # no central difference at the border: invalid
    stamps = {p: p.stat().st_mtime_ns for p in nyu.rglob("*") if p.is_file()}
    again = preprocess(nyu)
    assert again["nothing_to_do"] and again["derived"] == {}
    assert stamps == {p: p.stat().st_mtime_ns for p in nyu.rglob("*") if p.is_file()}


def test_normals_need_intrinsics(nyu):
    drop_tasks(nyu, "normals")
    (nyu / "cameras.json").unlink()
    summary = preprocess(nyu)
    assert "normals" in summary["skipped"] and not (nyu / "normals").exists()


def test_nyu40_to_13_mapping_values():
    ids = np.array([[0, 1, 3, 4, 22], [24, 39, 255, 7, 8]], dtype=np.uint8)
    # wall->wall, floor->floor, bed->bed, chair->chair, books->books / tv->tv, otherprop->objects, ignore,
    # door->wall, window->window
    assert NYU13.apply(ids).tolist() == [[11, 4, 0, 3, 1], [10, 6, 255, 11, 12]]
    assert NYU13.classes[11] == "wall" and NYU13.classes[6] == "objects" and len(NYU13.classes) == 13


def test_nyu13_copy(nyu, tmp_path):
    summary = preprocess(nyu, remap=NYU13)
    out = Path(summary["output"])
    assert out == tmp_path / "nyuv2-13"
    layout = DatasetLayout(out)
    assert layout.meta.classes["semseg"] == list(NYU13.classes) and layout.meta.name == "nyuv2-13"
    seg = TASKS["semseg"].read(layout.label_path(TASKS["semseg"], "0003"))
    assert seg[5, 0] == 255 and seg[5, 10] == 3 and seg[5, 25] == 6  # ignore, chair (40: 4), otherprop -> objects
    assert layout.image_path("0001").read_bytes() == DatasetLayout(nyu).image_path("0001").read_bytes()
    assert (layout.root / "depth" / "0001.npy").read_bytes() == (nyu / "depth" / "0001.npy").read_bytes()
    assert preprocess(nyu, remap=NYU13)["nothing_to_do"]
    with pytest.raises(Mtl3dError, match="needs 40 semseg classes"):
        preprocess(out, remap=NYU13, out=tmp_path / "twice")


def test_resize_scales_K_and_samples_nearest(nyu, tmp_path):
    summary = preprocess(nyu, resize=(12, 16), out=tmp_path / "small")
    layout = DatasetLayout(summary["output"])
    K = layout.cameras["0001"].K
    expected = nyu_K() * np.array([[0.5], [0.5], [1.0]])  # fx, cx by W'/W; fy, cy by H'/H
    assert np.allclose(K, expected) and np.allclose(K, scale_intrinsics(nyu_K(), (24, 32), (12, 16)))
    # Pixel-centre consistency: the original pixel-centre point (u, v) = (9.0, 7.0) (corner of 4 pixels) maps to
    # (4.5, 3.5) in the half-size image, i.e. K' projects the same 3D ray to half the coordinates.
    ray = np.linalg.inv(nyu_K()) @ np.array([9.0, 7.0, 1.0])
    assert np.allclose((K @ ray)[:2], [4.5, 3.5])
    depth = TASKS["depth"].read(layout.label_path(TASKS["depth"], "0002"))
    assert depth.shape == (12, 16) and depth[3, 4] == pytest.approx(plane_depth()[7, 9])  # src centre 2j+1
    seg = TASKS["semseg"].read(layout.label_path(TASKS["semseg"], "0002"))
    assert set(np.unique(seg)) <= {1, 4, 39, 255}  # nearest: no blended class ids
    assert fileio.read_image(layout.image_path("0001")).shape == (12, 16, 3)
    assert layout.ids("train") == list(NYU_IDS[:2])
    assert preprocess(nyu, resize=(12, 16), out=tmp_path / "small")["nothing_to_do"]
    assert not preprocess(nyu, resize=(12, 16), out=tmp_path / "small", overwrite=True)["nothing_to_do"]
    with pytest.raises(Mtl3dError, match="already exists"):
        preprocess(nyu, resize=(6, 8), out=tmp_path / "small")
