"""`mtl3d predict`: run the inference network (never the regularizer) on images of any size and format.

Each image is resized, keeping its aspect ratio, to about the pixel count the model trained at (sides rounded
to a multiple of the backbone stride), and every output is resized back to the input resolution before
activation. One unreadable image does not stop the others: failures are collected and summarized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from mtl3dcli import fileio
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.weights import load_weights
from mtl3dcli.engine.distributed import DistContext
from mtl3dcli.engine.trainer import resolve_device
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.commands.evaluate import select_tasks
from mtl3dcli.models.build import MTL3DModel, model_from_weights
from mtl3dcli.models.layers import upsample_maps
from mtl3dcli.progress import progress_bar
from mtl3dcli.colors import colormap
from mtl3dcli.tasks import Task

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
FORMATS = ("png", "npy")
STRIDE = 32


@dataclass
class Failure:
    path: Path
    reason: str


def collect_images(inputs: list[Path]) -> tuple[list[Path], list[Failure]]:
    """Files as given, folders expanded (sorted, non-recursive) to their image files."""
    files, failures = [], []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                failures.append(Failure(item, "folder holds no images"))
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            failures.append(Failure(item, "no such file or folder"))
    return files, failures


def inference_size(height: int, width: int, train_size: tuple[int, int]) -> tuple[int, int]:
    """Keep the aspect ratio, match the training pixel count, round each side to a multiple of STRIDE."""
    scale = math.sqrt(train_size[0] * train_size[1] / (height * width))
    return (max(STRIDE, round(height * scale / STRIDE) * STRIDE), max(STRIDE, round(width * scale / STRIDE) * STRIDE))


def model_input(images: list[np.ndarray], train_size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """uint8 images of one size (H, W, 3) -> (B, 3, h, w) in [0, 1] at `inference_size` (antialiased bilinear)."""
    height, width = images[0].shape[:2]
    tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255.0).to(device)
    return F.interpolate(tensor, size=inference_size(height, width, train_size), mode="bilinear",
                         align_corners=False, antialias=True)


@torch.no_grad()
def predict_images(model: MTL3DModel, images: list[np.ndarray], tasks: list[Task], train_size: tuple[int, int],
                   device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 images of one size (H, W, 3) -> {task: predictions (B, ...) at (H, W)} as Task.activate gives them."""
    height, width = images[0].shape[:2]
    outputs = upsample_maps(model.net(model_input(images, train_size, device)).outputs, (height, width))
    return {t.name: t.activate(outputs[t.name].float()) for t in tasks}


def depth_with_legend(depth: np.ndarray, depth_range: tuple[float, float]) -> np.ndarray:
    """Colourised depth with a colour bar and its range in metres underneath."""
    from PIL import Image, ImageDraw

    lo, hi = depth_range
    body = colormap((depth - lo) / max(hi - lo, 1e-6))
    width = body.shape[1]
    bar_h = max(6, body.shape[0] // 24)
    bar = np.repeat(colormap(np.linspace(0, 1, width))[None], bar_h, axis=0)
    text_h = 12
    legend = Image.new("RGB", (width, text_h), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    draw.text((1, 0), f"{lo:.1f} m", fill=(0, 0, 0))
    right = f"{hi:.1f} m"
    draw.text((max(0, width - 6 * len(right) - 1), 0), right, fill=(0, 0, 0))
    return np.concatenate([body, bar, np.asarray(legend)], axis=0)


def write_prediction(out: Path, stem: str, task: Task, prediction: torch.Tensor, meta: DatasetMeta,
                     formats: set[str]) -> list[Path]:
    written = []
    if "png" in formats:
        array = prediction.cpu().numpy()
        if task.rendered_as_depth:
            rgb = depth_with_legend(task.to_numpy(prediction), meta.depth_range)
        else:
            rgb = task.colorize(array, meta)
        path = out / f"{stem}_{task.name}.png"
        fileio.write_image(path, rgb)
        written.append(path)
    if "npy" in formats:
        path = out / f"{stem}_{task.name}.npy"
        fileio.write_npy(path, task.to_numpy(prediction))
        written.append(path)
    return written


def parse_formats(spec: str) -> set[str]:
    formats = {f.strip().lower() for f in spec.split(",") if f.strip()}
    unknown = formats - set(FORMATS)
    if unknown or not formats:
        raise Mtl3dError(f"--format takes a comma list of {', '.join(FORMATS)}, got {spec!r}")
    return formats


def run_predict(inputs: list[Path], weights_path: Path, *, tasks: str | None = None, out: Path = Path("predictions"),
                formats: str = "png,npy", batch_size: int = 4, device: str = "auto",
                console: Console | None = None) -> list[Failure]:
    """Predict every input; returns the failures (already reported on `console`)."""
    console = console or Console(stderr=True)
    chosen_formats = parse_formats(formats)
    weights = load_weights(weights_path)
    model = model_from_weights(weights, with_regularizer=False)
    selected = select_tasks(model, tasks)
    torch_device = resolve_device(device, DistContext())
    model.to(torch_device).eval()
    train_size = weights.config.data.eval_size or weights.config.data.size
    files, failures = collect_images(inputs)
    stems: dict[str, int] = {}
    done, errors = 0, len(failures)
    with progress_bar("predicting", console) as advance:
        for start in range(0, len(files), max(1, batch_size)):
            groups: dict[tuple[int, ...], list[tuple[Path, np.ndarray]]] = {}
            for path in files[start:start + batch_size]:
                try:
                    image = fileio.read_image(path, mode="RGB")
                    groups.setdefault(image.shape, []).append((path, image))
                except Mtl3dError as exc:
                    failures.append(Failure(path, str(exc)))
            for group in groups.values():  # images of one size share a forward pass
                predictions = predict_images(model, [image for _, image in group], selected, train_size,
                                             torch_device)
                for i, (path, _) in enumerate(group):
                    stem = path.stem if path.stem not in stems else f"{path.stem}-{stems[path.stem]}"
                    stems[path.stem] = stems.get(path.stem, 0) + 1
                    for task in selected:
                        write_prediction(out, stem, task, predictions[task.name][i], weights.meta, chosen_formats)
                    done += 1
            advance(done + len(failures) - errors, len(files))
    console.print(f"predicted {done} image(s) -> {out}" + (f"; {len(failures)} failed:" if failures else ""))
    for failure in failures:
        console.print(f"[red]  {failure.path}: {failure.reason}[/]", highlight=False)
    return failures
