"""`mtl3d predict`: run the inference network (never the regularizer) on images of any size and format.

Each image is resized, keeping its aspect ratio, to about the pixel count the model trained at (sides rounded
to a multiple of the backbone stride), and every output is resized back to the input resolution before
activation. One unreadable image does not stop the others: failures are collected and summarized.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from mtl3dcli import fileio
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.inference import InferenceSession
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.progress import progress_bar
from mtl3dcli.tasks import Task

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
FORMATS = ("png", "npy")


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


def write_prediction(out: Path, stem: str, task: Task, prediction: torch.Tensor, meta: DatasetMeta,
                     formats: set[str]) -> list[Path]:
    """<stem>_<task>.png (the task's visualization) and/or .npy (its canonical array) for one image."""
    written = []
    if "png" in formats:
        path = out / f"{stem}_{task.name}.png"
        fileio.write_image(path, task.visualize(prediction.cpu().numpy(), meta))
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
    session = InferenceSession.from_weights(weights_path, device=device, tasks=tasks)
    meta = session.model.meta
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
                predictions = session.predict([image for _, image in group])
                for i, (path, _) in enumerate(group):
                    stem = path.stem if path.stem not in stems else f"{path.stem}-{stems[path.stem]}"
                    stems[path.stem] = stems.get(path.stem, 0) + 1
                    for task in session.tasks:
                        write_prediction(out, stem, task, predictions[task.name][i], meta, chosen_formats)
                    done += 1
            advance(done + len(failures) - errors, len(files))
    console.print(f"predicted {done} image(s) -> {out}" + (f"; {len(failures)} failed:" if failures else ""))
    for failure in failures:
        console.print(f"[red]  {failure.path}: {failure.reason}[/]", highlight=False)
    return failures
