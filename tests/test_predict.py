"""`mtl3d predict`: outputs per task and format at each input's own resolution, colourings that match the raw
arrays, grey/RGBA inputs, and bad images reported without stopping the good ones."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from layout_fixtures import PALETTE
from rich.console import Console

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.commands.predict import parse_formats, run_predict
from mtl3dcli.inference import inference_size
from mtl3dcli.colors import colormap

TASKS = ("semseg", "depth", "normals", "edge")
DEPTH_RANGE = (0.5, 5.0)  # the fixture dataset's meta


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    iio.imwrite(folder / "small.png", noise((37, 53, 3), 0))
    iio.imwrite(folder / "large.jpg", noise((64, 80, 3), 1), quality=95)
    iio.imwrite(folder / "grey.png", noise((30, 40), 2))
    iio.imwrite(folder / "rgba.png", np.concatenate([noise((30, 40, 3), 3), noise((30, 40, 1), 4)], axis=-1))
    (folder / "notes.txt").write_text("not an image, ignored by the folder scan")
    return folder


@pytest.fixture(scope="module")
def predicted(inputs, tiny_weights, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predictions")
    failures = run_predict([inputs], tiny_weights, out=out, device="cpu", console=quiet())
    assert failures == []
    return out


def sizes(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.stem: iio.imread(p).shape[:2] for p in folder.iterdir() if p.suffix in (".png", ".jpg")}


def test_every_task_and_format_is_written_once_per_image(inputs, predicted):
    expected = {f"{stem}_{task}.{fmt}" for stem in ("small", "large", "grey", "rgba") for task in TASKS
                for fmt in ("png", "npy")}
    assert {p.name for p in predicted.iterdir()} == expected


def test_outputs_have_the_input_resolution(inputs, predicted):
    for stem, (h, w) in sizes(inputs).items():
        assert np.load(predicted / f"{stem}_semseg.npy").shape == (h, w)
        assert np.load(predicted / f"{stem}_depth.npy").shape == (h, w)
        assert np.load(predicted / f"{stem}_normals.npy").shape == (h, w, 3)
        assert np.load(predicted / f"{stem}_edge.npy").shape == (h, w)
        for task in ("semseg", "normals", "edge"):
            assert iio.imread(predicted / f"{stem}_{task}.png").shape == (h, w, 3)
        legend = max(6, h // 24) + 12  # colour bar + one text row under the depth map
        assert iio.imread(predicted / f"{stem}_depth.png").shape == (h + legend, w, 3)


def test_raw_arrays_have_the_documented_types(inputs, predicted):
    for stem in sizes(inputs):
        seg = np.load(predicted / f"{stem}_semseg.npy")
        assert seg.dtype == np.uint8 and seg.max() < len(PALETTE)
        depth = np.load(predicted / f"{stem}_depth.npy")
        assert depth.dtype == np.float32 and np.isfinite(depth).all() and depth.min() >= 0
        normals = np.load(predicted / f"{stem}_normals.npy")
        assert normals.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)
        edge = np.load(predicted / f"{stem}_edge.npy")
        assert edge.dtype == np.float32 and edge.min() >= 0 and edge.max() <= 1


def test_pngs_are_the_colourised_arrays(inputs, predicted):
    for stem, (h, _) in sizes(inputs).items():
        seg = np.load(predicted / f"{stem}_semseg.npy")
        np.testing.assert_array_equal(iio.imread(predicted / f"{stem}_semseg.png"), PALETTE.astype(np.uint8)[seg])
        normals = np.load(predicted / f"{stem}_normals.npy")
        expected = np.round((normals.clip(-1, 1) + 1) / 2 * 255).astype(np.uint8)
        np.testing.assert_array_equal(iio.imread(predicted / f"{stem}_normals.png"), expected)
        edge = np.load(predicted / f"{stem}_edge.npy")
        grey = iio.imread(predicted / f"{stem}_edge.png")
        np.testing.assert_array_equal(grey[..., 0], np.round(edge * 255).astype(np.uint8))
        depth = np.load(predicted / f"{stem}_depth.npy")
        body = iio.imread(predicted / f"{stem}_depth.png")[:h]
        lo, hi = DEPTH_RANGE
        np.testing.assert_array_equal(body, colormap((depth - lo) / (hi - lo)))


def test_grey_and_rgba_inputs_equal_their_rgb_version(inputs, predicted, tiny_weights, tmp_path):
    grey = iio.imread(inputs / "grey.png")
    iio.imwrite(tmp_path / "grey.png", np.repeat(grey[..., None], 3, axis=-1))
    iio.imwrite(tmp_path / "rgba.png", iio.imread(inputs / "rgba.png")[..., :3])
    out = tmp_path / "out"
    assert run_predict([tmp_path / "grey.png", tmp_path / "rgba.png"], tiny_weights, out=out, formats="npy",
                       device="cpu", console=quiet()) == []
    for stem in ("grey", "rgba"):
        for task in TASKS:
            np.testing.assert_array_equal(np.load(out / f"{stem}_{task}.npy"),
                                          np.load(predicted / f"{stem}_{task}.npy"))


def test_batching_does_not_change_predictions(inputs, predicted, tiny_weights, tmp_path):
    """Images of different sizes are grouped per batch; one at a time must give the same numbers."""
    run_predict([inputs], tiny_weights, out=tmp_path, formats="npy", batch_size=1, device="cpu", console=quiet())
    for path in tmp_path.glob("*.npy"):
        np.testing.assert_allclose(np.load(path), np.load(predicted / path.name), atol=1e-5)


def test_task_and_format_selection(inputs, tiny_weights, tmp_path):
    run_predict([inputs / "small.png"], tiny_weights, tasks="seg,depth", formats="npy", out=tmp_path,
                device="cpu", console=quiet())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small_depth.npy", "small_semseg.npy"]


def test_same_stem_in_two_folders_is_not_overwritten(inputs, tiny_weights, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    iio.imwrite(other / "small.png", noise((20, 20, 3), 5))
    out = tmp_path / "out"
    run_predict([inputs / "small.png", other / "small.png"], tiny_weights, tasks="depth", formats="npy", out=out,
                device="cpu", console=quiet())
    assert np.load(out / "small_depth.npy").shape == (37, 53)
    assert np.load(out / "small-1_depth.npy").shape == (20, 20)


def test_a_corrupt_image_does_not_stop_the_others(inputs, tiny_weights, tmp_path, monkeypatch, capsys):
    from mtl3dcli import cli

    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("small.png", "large.jpg"):
        (folder / name).write_bytes((inputs / name).read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["mtl3d", "predict", str(folder), "--weights", str(tiny_weights), "--out",
                                      str(out), "--tasks", "seg", "--format", "png", "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert sorted(p.name for p in out.iterdir()) == ["large_semseg.png", "small_semseg.png"]
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 failed" in err
    assert "small.png" not in err and "Traceback" not in err


def test_missing_inputs_are_reported_as_failures(inputs, tiny_weights, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    failures = run_predict([inputs / "small.png", tmp_path / "absent.png", empty], tiny_weights, tasks="edge",
                           formats="npy", out=tmp_path / "out", device="cpu", console=quiet())
    assert [(f.path.name, f.reason) for f in failures] == [("absent.png", "no such file or folder"),
                                                          ("empty", "folder holds no images")]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["small_edge.npy"]


def test_format_parsing():
    assert parse_formats("png") == {"png"}
    assert parse_formats(" NPY , png ") == {"png", "npy"}
    for bad in ("jpg", "", ","):
        with pytest.raises(Mtl3dError, match="--format"):
            parse_formats(bad)


def test_inference_size_keeps_the_pixel_count_on_the_hosts_grid():
    assert inference_size(480, 640, (288, 384), 32) == (288, 384)  # NYUv2: 0.6x, both sides on the grid
    assert inference_size(240, 320, (288, 384), 32) == (288, 384)  # upscaled to the training pixel count
    assert inference_size(1000, 100, (96, 128), 32) == (352, 32)  # scale 0.35: 350 -> 352, 35 -> 32
    assert inference_size(10, 1000, (64, 64), 32) == (32, 640)  # never below one divisor
    assert inference_size(1000, 100, (96, 128), 16) == (352, 32)  # ViT patches: 350 -> 352, 35 -> 32
    assert inference_size(1000, 100, (96, 128), 1) == (351, 35)  # a plain CNN takes any size (350.54 -> 351)
