"""`mtl3d render-views`: camera paths, the novel-view transform, frames/GIFs/contact sheet on disk, and pose 0
being exactly the regularizer's training-view render."""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtl3dcli import fileio
from mtl3dcli.data.dataset import default_intrinsics
from mtl3dcli.weights import load_weights
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.build import model_from_weights
from mtl3dcli.inference import inference_size
from mtl3dcli.commands.views import (DEFAULT_FOV_DEG, PATHS, camera_path, novel_view_transform, render_fields, rotation,
                            run_render_views)

FIELDS = ["semseg", "normals", "edge", "depth", "opacity", "features"]  # depth is rendered as ray depth, once
SIZE = (10, 14)
FRAMES = 4


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("views_in") / "photo.png"
    yy, xx = np.mgrid[0:40, 0:56]
    image = np.stack([xx * 4, yy * 6, (xx + yy) * 2], axis=-1) % 256
    fileio.write_image(path, image.astype(np.uint8))
    return path


def preprocessed(path: Path, weights, model) -> torch.Tensor:
    """The image as render-views feeds it to the encoder: (1, 3, h, w) in [0, 1] at the inference size."""
    array = fileio.read_image(path)
    tensor = torch.from_numpy(array).permute(2, 0, 1).float().div(255.0)[None]
    size = inference_size(*array.shape[:2], weights.config.data.eval_size or weights.config.data.size,
                          model.net.size_divisor)
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)


def loaded(weights_path: Path):
    weights = load_weights(weights_path)
    return weights, model_from_weights(weights, with_regularizer=True).eval()


# --- camera paths ------------------------------------------------------------------------------------------------
def test_camera_paths_by_hand():
    np.testing.assert_allclose(camera_path("orbit", 4, 10.0), [(0, 0), (10, 5), (0, 10), (-10, 5)], atol=1e-12)
    np.testing.assert_allclose(camera_path("swing", 4, 10.0), [(0, 0), (10, 0), (0, 0), (-10, 0)], atol=1e-12)
    # spiral: radius 0, 5, 10 at angles 2 * (0, 120, 240) degrees
    s3 = math.sqrt(3) / 2
    np.testing.assert_allclose(camera_path("spiral", 3, 10.0), [(0, 0), (-5 * s3, 3.75), (10 * s3, 7.5)],
                               atol=1e-12)


@pytest.mark.parametrize("kind", PATHS)
@pytest.mark.parametrize("frames", [1, 7, 36])
def test_every_path_starts_at_the_input_view(kind, frames):
    poses = camera_path(kind, frames, 15.0)
    assert len(poses) == frames and poses[0] == (0.0, 0.0)
    assert all(abs(yaw) <= 15.0 + 1e-9 and -1e-9 <= pitch <= 15.0 + 1e-9 for yaw, pitch in poses)


def test_camera_path_errors():
    with pytest.raises(Mtl3dError, match="unknown camera path 'circle'"):
        camera_path("circle", 4, 10.0)
    with pytest.raises(Mtl3dError, match="--frames"):
        camera_path("orbit", 0, 10.0)


def test_novel_view_transform():
    r = rotation(90.0, 0.0)
    torch.testing.assert_close(r @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0]), atol=1e-6,
                               rtol=0)  # yaw 90: looking along +z becomes looking along +x
    r = rotation(20.0, -35.0)
    torch.testing.assert_close(r @ r.T, torch.eye(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(novel_view_transform(0.0, 0.0, (0.0, 0.0, 2.75)), torch.eye(4))
    t = novel_view_transform(30.0, 10.0, (0.0, 0.0, 2.75))
    torch.testing.assert_close(t @ torch.tensor([0.0, 0.0, 2.75, 1.0]), torch.tensor([0.0, 0.0, 2.75, 1.0]),
                               atol=1e-6, rtol=0)  # the pivot stays put
    # the novel camera's centre swings around the pivot on a circle of radius 2.75
    centre = t @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert float((centre[:3] - torch.tensor([0.0, 0.0, 2.75])).norm()) == pytest.approx(2.75, abs=1e-5)


def assert_gif_plays(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Pillow merges identical consecutive frames into one longer frame, so the GIF holds the distinct frames
    and lasts frames / fps seconds (durations are stored in centiseconds)."""
    from PIL import Image, ImageSequence

    distinct = 1 + sum(not np.array_equal(a, b) for a, b in zip(frames, frames[1:]))
    with Image.open(path) as gif:
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
        assert gif.size == frames[0].shape[1::-1] and gif.info.get("loop") == 0
    assert len(durations) == distinct
    assert abs(sum(durations) - len(frames) * 1000.0 / fps) <= 10 * len(frames)


# --- rendering ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["tiny_weights", "tiny_weights_perspective"])
def test_files_on_disk(fixture, photo, tmp_path, request):
    weights = request.getfixturevalue(fixture)
    written = run_render_views(photo, weights, out=tmp_path, frames=FRAMES, orbit_degrees=15.0, size=SIZE,
                               device="cpu")
    assert written["fields"] == FIELDS and written["frames"] == FRAMES
    for field in FIELDS:
        frames = sorted((tmp_path / "frames" / field).iterdir())
        assert [p.name for p in frames] == [f"{i:03d}.png" for i in range(FRAMES)]
        assert all(iio.imread(p).shape == (*SIZE, 3) for p in frames)
        images = [iio.imread(p) for p in frames]
        assert_gif_plays(tmp_path / f"{field}.gif", images, fps=12.0)
    assert written["gifs"] == [tmp_path / f"{field}.gif" for field in FIELDS]
    # contact sheet: one row per field, 4 tiles of 2x upscaled frames with 2-px gutters
    assert iio.imread(written["sheet"]).shape == (len(FIELDS) * (2 * SIZE[0] + 4), FRAMES * (2 * SIZE[1] + 4), 3)


def test_default_size_is_four_times_the_training_render(tiny_weights, photo, tmp_path):
    run_render_views(photo, tiny_weights, out=tmp_path, frames=1, device="cpu")
    assert iio.imread(tmp_path / "frames" / "opacity" / "000.png").shape == (32, 48, 3)  # render_size 8x12


def test_frame_zero_on_disk_is_the_training_view_render(tiny_weights, photo, tmp_path):
    run_render_views(photo, tiny_weights, out=tmp_path, frames=FRAMES, size=SIZE, device="cpu")
    weights, model = loaded(tiny_weights)
    reg = model.regularizer
    with torch.no_grad():
        planes = reg.planes(model.net(preprocessed(photo, weights, model)).features)
        camera = reg.view_camera(torch.eye(3)[None], SIZE)  # orthographic: K is not used
        opacity = reg.render(planes, camera, size=SIZE).opacity[0, 0]
    expected = np.round(opacity.clamp(0, 1).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(iio.imread(tmp_path / "frames" / "opacity" / "000.png")[..., 0], expected)


@pytest.mark.parametrize("fixture", ["tiny_weights", "tiny_weights_perspective"])
def test_pose_zero_reproduces_the_regularizer_render_and_other_poses_differ(fixture, photo, request):
    weights, model = loaded(request.getfixturevalue(fixture))
    image = preprocessed(photo, weights, model)
    reg = model.regularizer
    renders = render_fields(model, image, camera_path("orbit", FRAMES, 15.0))
    # a new photo has no intrinsics: render-views assumes a 60 degree field of view (the orthographic camera
    # ignores K); a camera moved by the identity takes the general (unfactored) path and must agree
    K = default_intrinsics(tuple(image.shape[-2:]), DEFAULT_FOV_DEG)[None]
    with torch.no_grad():
        planes = reg.planes(model.net(image).features)
        direct = reg.render(planes, reg.view_camera(K, tuple(image.shape[-2:])), stratified=False)
        identity = reg.render(planes, reg.view_camera(K, tuple(image.shape[-2:]), torch.eye(4)[None]),
                              stratified=False)
    assert len(renders) == FRAMES
    maps = lambda r: {**r.tasks, "opacity": r.opacity, "feature": r.feature}  # noqa: E731
    for name, value in maps(direct).items():
        assert maps(renders[0])[name].shape == value.shape and value.shape[-2:] == (8, 12)
        torch.testing.assert_close(maps(renders[0])[name], value, rtol=0, atol=0)
        torch.testing.assert_close(maps(identity)[name], value, rtol=1e-5, atol=1e-5)
    for k in range(1, FRAMES):
        change = max(float((getattr(renders[k], name) - getattr(renders[0], name)).abs().max())
                     for name in ("depth", "feature"))
        assert change > 1e-4, f"frame {k} looks exactly like the input view"


def test_weights_without_regularizer_are_refused(tiny_weights_noreg, photo, tmp_path):
    with pytest.raises(Mtl3dError, match="no regularizer"):
        run_render_views(photo, tiny_weights_noreg, out=tmp_path, frames=2, size=SIZE, device="cpu")
    assert not any(tmp_path.iterdir())


def test_bad_options_fail_before_any_work(tiny_weights, photo, tmp_path):
    with pytest.raises(Mtl3dError, match="--fps"):
        run_render_views(photo, tiny_weights, out=tmp_path, frames=2, fps=0, device="cpu")
    with pytest.raises(Mtl3dError, match="swirl"):
        run_render_views(photo, tiny_weights, out=tmp_path, path="swirl", device="cpu")
    with pytest.raises(Mtl3dError, match="missing image"):
        run_render_views(tmp_path / "absent.png", tiny_weights, out=tmp_path / "o", frames=2, device="cpu")
    assert not any(tmp_path.iterdir())
