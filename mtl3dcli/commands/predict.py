"""`mtl3d predict`: run the inference network (never the regularizer) on images of any size and format.

Each image is resized, keeping its aspect ratio, to about the pixel count the model trained at (sides rounded
to a multiple of the backbone stride), and every output is resized back to the input resolution before
activation. One unreadable image does not stop the others: failures are collected and summarized. The weights
may be an `mtl3d export` ONNX file (run by ONNX Runtime, no torch model built) and may come from the hub or a URL.
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
from mtl3dcli.sources import resolve_weights
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


def write_predictions(out: Path, stem: str, predictions: dict[Task, torch.Tensor], meta: DatasetMeta,
                      formats: set[str]) -> None:
    """<stem>_<task>.png (the task's visualization) and/or .npy (its canonical array) of one image's predictions."""
    for task, prediction in predictions.items():
        if "png" in formats:
            fileio.write_image(out / f"{stem}_{task.name}.png", task.visualize(prediction.cpu().numpy(), meta))
        if "npy" in formats:
            fileio.write_npy(out / f"{stem}_{task.name}.npy", task.to_numpy(prediction))


def parse_formats(spec: str) -> set[str]:
    formats = {f.strip().lower() for f in spec.split(",") if f.strip()}
    unknown = formats - set(FORMATS)
    if unknown or not formats:
        raise Mtl3dError(f"--format takes a comma list of {', '.join(FORMATS)}, got {spec!r}")
    return formats


def read_by_size(paths: list[Path], failures: list[Failure]) -> list[list[tuple[Path, np.ndarray]]]:
    """Read images (unreadable ones go to `failures`) and group them by size: one forward pass per group."""
    groups: dict[tuple[int, ...], list[tuple[Path, np.ndarray]]] = {}
    for path in paths:
        try:
            image = fileio.read_image(path, mode="RGB")
        except Mtl3dError as exc:
            failures.append(Failure(path, str(exc)))
            continue
        groups.setdefault(image.shape, []).append((path, image))
    return list(groups.values())


def run_predict(inputs: list[Path], weights_path: str | Path, *, tasks: str | None = None,
                out: Path = Path("predictions"), formats: str = "png,npy", batch_size: int = 4, device: str = "auto",
                console: Console | None = None) -> list[Failure]:
    """Predict every input with `weights_path` (a file or remote reference); returns the failures (already reported
    on `console`)."""
    console = console or Console(stderr=True)
    chosen_formats = parse_formats(formats)
    local = resolve_weights(weights_path, lambda label: progress_bar(label, console, bytes_mode=True))
    session = InferenceSession.from_weights(local, device=device, tasks=tasks)
    files, failures = collect_images(inputs)
    stems: dict[str, int] = {}  # a repeated file name gets -1, -2, ... so no output overwrites another
    done, errors = 0, len(failures)
    with progress_bar("predicting", console, unit="images") as advance:
        for start in range(0, len(files), max(1, batch_size)):
            for group in read_by_size(files[start:start + batch_size], failures):
                predictions = session.predict([image for _, image in group])
                for i, (path, _) in enumerate(group):
                    stem = path.stem if path.stem not in stems else f"{path.stem}-{stems[path.stem]}"
                    stems[path.stem] = stems.get(path.stem, 0) + 1
                    write_predictions(out, stem, {t: predictions[t.name][i] for t in session.tasks},
                                      session.model.meta, chosen_formats)
                    done += 1
            advance(done + len(failures) - errors, len(files))
    console.print(f"predicted {done} image(s) -> {out}" + (f"; {len(failures)} failed:" if failures else ""))
    for failure in failures:
        console.print(f"[red]  {failure.path}: {failure.reason}[/]", highlight=False)
    return failures
