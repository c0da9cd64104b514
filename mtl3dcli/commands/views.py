"""`mtl3d render-views`: look at the learned tri-plane fields from novel camera poses around the input view.

The image goes through the encoder and the regularizer's projector once; the resulting tri-plane is rendered for
every pose of a camera path (`Regularizer.view_camera`). Orthographic models rotate their rays about the cube
centre; perspective models rotate the pinhole camera about a pivot on its optical axis at mid depth. Pose 0 is the
input view itself: frame 0 is exactly the render the regularizer was supervised with during training (perspective
models see a new photo through an assumed 60-degree pinhole; training used each sample's own K). Rendered normals
are shown in each novel camera's frame.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F

from mtl3dcli import fileio
from mtl3dcli.data.dataset import default_intrinsics
from mtl3dcli.inference import InferenceSession
from mtl3dcli.weights import load_weights
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.build import MTL3DModel
from mtl3dcli.models.regularizer import Renders
from mtl3dcli.tasks import TASKS

PATHS = ("orbit", "spiral", "swing")
DEFAULT_FOV_DEG = 60.0  # a new photo has no intrinsics: assume a typical indoor camera (NYUv2 is about 62 deg)


def camera_path(kind: str, frames: int, degrees: float) -> list[tuple[float, float]]:
    """(yaw, pitch) in degrees per frame, starting at (0, 0) = the input view.

    orbit: a closed loop around the input view; swing: yaw back and forth; spiral: a loop whose radius grows from
    0 to `degrees` over the path."""
    if kind not in PATHS:
        raise Mtl3dError(f"unknown camera path {kind!r}; choose one of {', '.join(PATHS)}")
    if frames < 1:
        raise Mtl3dError(f"--frames must be at least 1, got {frames}")
    poses = []
    for i in range(frames):
        theta = 2.0 * math.pi * i / frames
        if kind == "orbit":
            poses.append((degrees * math.sin(theta), 0.5 * degrees * (1.0 - math.cos(theta))))
        elif kind == "swing":
            poses.append((degrees * math.sin(theta), 0.0))
        else:
            radius = degrees * i / max(1, frames - 1)
            poses.append((radius * math.sin(2 * theta), 0.5 * radius * (1.0 - math.cos(2 * theta))))
    return poses


def rotation(yaw_deg: float, pitch_deg: float) -> torch.Tensor:
    """(3, 3) rotation: yaw about the camera y axis (down), then pitch about x."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = torch.tensor([[math.cos(yaw), 0.0, math.sin(yaw)], [0.0, 1.0, 0.0], [-math.sin(yaw), 0.0, math.cos(yaw)]])
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, math.cos(pitch), -math.sin(pitch)],
                       [0.0, math.sin(pitch), math.cos(pitch)]])
    return ry @ rx


def novel_view_transform(yaw_deg: float, pitch_deg: float, pivot: tuple[float, float, float]) -> torch.Tensor:
    """(4, 4) map from the novel camera's frame to the source frame: a rotation about `pivot`."""
    out = torch.eye(4)
    rot = rotation(yaw_deg, pitch_deg)
    p = torch.tensor(pivot)
    out[:3, :3] = rot
    out[:3, 3] = p - rot @ p
    return out


@torch.no_grad()
def render_fields(model: MTL3DModel, image: torch.Tensor, poses: list[tuple[float, float]],
                  size: tuple[int, int] | None = None) -> list[Renders]:
    """image (1, 3, H, W) in [0, 1] -> the regularizer's renders (`Renders`), one per pose. Normals come out in each
    novel camera's frame."""
    reg = model.regularizer
    if reg is None:
        raise Mtl3dError("these weights have no regularizer; render-views needs a model trained with it")
    planes = reg.planes(model.net(image).features)
    height, width = image.shape[-2:]
    K = default_intrinsics((height, width), DEFAULT_FOV_DEG).to(image)[None]
    pivot = (0.0, 0.0, 0.0) if not reg.perspective else (0.0, 0.0, 0.5 * (reg.near + reg.far))
    renders = []
    for yaw, pitch in poses:
        transform = None
        if (yaw, pitch) != (0.0, 0.0):
            transform = novel_view_transform(yaw, pitch, pivot).to(image)[None]
        renders.append(reg.render(planes, reg.view_camera(K, (height, width), transform), size=size,
                                  stratified=False))
    return renders


def feature_pca(maps: list[torch.Tensor]) -> list[np.ndarray]:
    """Project C-channel maps to RGB with the top-3 principal components of the first map (fixed across frames,
    so colours are comparable), scaled by the first map's 1st-99th percentiles."""
    first = maps[0].flatten(1).T.double()
    mean = first.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(first - mean, full_matrices=False)
    basis = v[:3].T
    if basis.shape[1] < 3:
        basis = F.pad(basis, (0, 3 - basis.shape[1]))
    ref = (first - mean) @ basis
    lo, hi = torch.quantile(ref, 0.01, dim=0), torch.quantile(ref, 0.99, dim=0)
    frames = []
    for m in maps:
        proj = ((m.flatten(1).T.double() - mean) @ basis - lo) / (hi - lo).clamp_min(1e-8)
        rgb = proj.clamp(0, 1).T.reshape(3, *m.shape[-2:]).permute(1, 2, 0).numpy()
        frames.append(np.round(rgb * 255).astype(np.uint8))
    return frames


def colorize_fields(model: MTL3DModel, renders: list[Renders]) -> dict[str, list[np.ndarray]]:
    """Renders -> uint8 RGB frames per field: each decoded task in its colours, then depth (colormap), opacity
    (grey) and features (PCA)."""
    meta = model.meta
    tasks = {task.name: task for task in model.regularizer.tasks}
    out: dict[str, list[np.ndarray]] = {}
    for name in renders[0].decoded:
        task = tasks[name]
        out[name] = [task.colorize(task.activate(r.decoded[name][:1].float())[0].cpu().numpy(), meta)
                     for r in renders]
    out["depth"] = [TASKS["depth"].colorize(r.depth[0, 0].float().cpu().numpy(), meta) for r in renders]
    out["opacity"] = [np.repeat(np.round(r.opacity[0, 0].clamp(0, 1).float().cpu().numpy() * 255)
                                .astype(np.uint8)[..., None], 3, -1) for r in renders]
    out["features"] = feature_pca([r.feature[0].float().cpu() for r in renders])
    return out


def contact_sheet(frames: dict[str, list[np.ndarray]], columns: int = 6, scale: int = 2) -> np.ndarray:
    """One row per field, `columns` frames evenly spaced along the path, upscaled `scale` times, 2-px gutters."""
    rows = []
    for images in frames.values():
        picks = [images[round(i * (len(images) - 1) / max(1, columns - 1))] for i in range(min(columns, len(images)))]
        tiles = [np.pad(np.kron(img, np.ones((scale, scale, 1), np.uint8)), ((2, 2), (2, 2), (0, 0)),
                        constant_values=255) for img in picks]
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


def write_gif(path: Path, frames: list[np.ndarray], fps: float) -> None:
    with fileio.atomic_path(path) as tmp:
        iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=1000.0 / fps, loop=0)


def run_render_views(image_path: Path, weights_path: Path, *, out: Path, frames: int = 36, orbit_degrees: float = 15.0,
                     path: str = "orbit", size: tuple[int, int] | None = None, fps: float = 12.0,
                     device: str = "auto") -> dict[str, Any]:
    poses = camera_path(path, frames, orbit_degrees)
    if fps <= 0:
        raise Mtl3dError(f"--fps must be positive, got {fps}")
    weights = load_weights(weights_path)
    session = InferenceSession.from_weights(weights, device=device, with_regularizer=True)
    tensor = session.prepare([fileio.read_image(image_path, mode="RGB")])
    if size is None:  # the field is continuous: render 4x finer than the training renders by default
        size = tuple(4 * s for s in weights.config.regularizer.render_size)
    colored = colorize_fields(session.model, render_fields(session.model, tensor, poses, size))
    gifs = []
    for field, images in colored.items():
        for i, img in enumerate(images):
            fileio.write_image(out / "frames" / field / f"{i:03d}.png", img)
        gifs.append(out / f"{field}.gif")
        write_gif(gifs[-1], images, fps)
    sheet = out / "contact_sheet.png"
    fileio.write_image(sheet, contact_sheet(colored))
    return {"gifs": gifs, "frames": len(poses), "sheet": sheet, "fields": list(colored)}
