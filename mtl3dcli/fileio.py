"""Atomic writes and checked reads of the files mtl3d exchanges (images, arrays, JSON).

Every reader turns a missing, truncated or undecodable file into an `Mtl3dError` that names the file, so a bad
sample in a dataset of thousands is found at once. Every writer goes through a temporary file in the destination
directory and `os.replace`, so a crash never leaves a half-written file under the final name; the file gets the
permissions a plain `open()` would have given it (the umask), and a full disk is a `DiskFull` naming the file,
with the temporary file removed. Temporary files are named `.<name>.tmp*` so a folder's single writer can clear
those a killed process left (`remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np

from mtl3dcli.errors import DiskFull, Mtl3dError, disk_full_reason

TEMP_MARK = ".tmp"
LOW_SPACE_BYTES = 1 << 20  # an unexplained write failure with less free space than this is a full disk


def _process_umask() -> int:
    """The process umask, read from /proc where the kernel reports it (os.umask can only be read by setting it,
    which races with other threads creating files), else by setting and restoring it once."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _process_umask()


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A hidden staging folder in `parent` with the usual permissions (mkdtemp alone makes it 0700), so a dataset
    moved into place from it is readable like any other folder."""
    with writing(Path(parent) / prefix):
        path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(path, 0o777 & ~UMASK)
    return path


def _low_space(path: Path) -> bool:
    """Whether the filesystem holding `path` (or its nearest existing parent) is all but full."""
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            stats = os.statvfs(folder)
            return stats.f_bavail * stats.f_frsize < LOW_SPACE_BYTES
    return False


@contextlib.contextmanager
def writing(path: str | os.PathLike, hint: str | None = None) -> Iterator[None]:
    """Turn a full disk met inside the block into a `DiskFull` naming `path`: an ENOSPC / EDQUOT however the writer
    reports it, or an OS / runtime error of a writer that hides it while the disk is all but full."""
    try:
        yield
    except Mtl3dError:
        raise
    except Exception as exc:
        reason = disk_full_reason(exc)
        if reason is None and isinstance(exc, (OSError, RuntimeError)) and _low_space(Path(path)):
            reason = "no space left on device"
        if reason is None:
            raise
        extra = {"hint": hint} if hint else {}
        raise DiskFull.writing(path, reason, **extra) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it gets the umask's permissions and is renamed over
    `path`, on failure (a full disk: `DiskFull`) it is removed.

    `suffix` defaults to the destination's suffix so writers that infer the format from the name still work.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARK}",
                                   suffix=path.suffix if suffix is None else suffix)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with writing(path):
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~UMASK)  # mkstemp makes 0600, and some writers replace the file
            os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (`.<name>.tmp*`) that writers killed mid-write left in `folder` (not below it).
    Only a folder's one writer may call this (see `runlock`): another writer's temporary files are live."""
    removed = []
    for entry in Path(folder).glob(f".*{TEMP_MARK}*"):
        if entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append to a log file (metrics.jsonl); a full disk is a `DiskFull` naming it."""
    with writing(path), open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy a file's bytes into a folder being built (not atomic: the folder moves into place when complete)."""
    with writing(target):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise Mtl3dError(f"missing file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Mtl3dError(f"corrupt JSON in {path}: {exc}") from None


def write_image(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 HxW or HxWx3 array; the format follows the file suffix (.png lossless, .jpg quality 95)."""
    path = Path(path)
    if array.dtype != np.uint8:
        raise ValueError(f"write_image expects uint8, got {array.dtype}")
    kwargs = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, array, extension=path.suffix, **kwargs)


def read_image(path: str | os.PathLike, mode: str = "RGB") -> np.ndarray:
    """Read an image as uint8: mode "RGB" gives HxWx3 (grey and RGBA are converted), "L" gives HxW as stored."""
    path = Path(path)
    if not path.is_file():
        raise Mtl3dError(f"missing image: {path}")
    try:
        array = _decode_image(path)
    except Exception as exc:  # imageio raises many types for undecodable data
        raise Mtl3dError(f"cannot read image {path}: {exc}".splitlines()[0]) from None
    if array.ndim == 3 and array.shape[0] == 1 and array.shape[-1] not in (1, 3, 4):
        array = array[0]  # first frame of a multi-frame file
    if array.dtype != np.uint8:
        if array.dtype == np.uint16:
            array = (array // 257).astype(np.uint8)
        elif array.dtype == np.bool_:
            array = array.astype(np.uint8) * 255
        else:
            raise Mtl3dError(f"unsupported pixel type {array.dtype} in {path}")
    if mode == "L":
        if array.ndim == 3:
            array = array[..., 0]
        return array
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    elif array.shape[-1] == 4:
        array = array[..., :3]
    elif array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise Mtl3dError(f"unsupported image shape {array.shape} in {path}")
    return np.ascontiguousarray(array)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)


def _decode_image(path: Path) -> np.ndarray:
    """The stored pixels, as imageio gives them. 8-bit RGB and grey JPEG / PNG files without transparency (what
    datasets hold) are decoded by OpenCV: the same pixels (both use libjpeg-turbo and libpng at their default
    settings; tests/test_decode.py checks it), JPEGs 2.5x and PNGs 10-25% faster than through imageio's Pillow
    plugin. imageio decodes everything else."""
    mode = _plain_mode(path)
    if mode is not None:
        import cv2  # imported on first use: a fraction of a second of start-up otherwise

        flags = (cv2.IMREAD_COLOR if mode == "RGB" else cv2.IMREAD_GRAYSCALE) | cv2.IMREAD_IGNORE_ORIENTATION
        array = cv2.imread(str(path), flags)
        if array is not None:
            return cv2.cvtColor(array, cv2.COLOR_BGR2RGB) if mode == "RGB" else array
    return np.asarray(iio.imread(path))


def _plain_mode(path: Path) -> str | None:
    """"RGB" or "L" for an 8-bit JPEG or PNG without transparency, from its header; None for anything else."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            kind, mode, transparent = image.format, image.mode, "transparency" in image.info
        with open(path, "rb") as file:
            header = file.read(26)
    except (OSError, ValueError):
        return None
    # Pillow shows 2- and 4-bit grey and 16-bit RGB PNGs as 8-bit modes: the bit depth is IHDR's byte 24
    eight_bit = kind == "JPEG" or (kind == "PNG" and len(header) == 26 and header[24] == 8)
    return mode if eight_bit and mode in ("RGB", "L") and not transparent else None


def read_npy(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise Mtl3dError(f"missing array file: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise Mtl3dError(f"corrupt or truncated array file {path}: {exc}".splitlines()[0]) from None
