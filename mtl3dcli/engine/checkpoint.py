"""Training-state checkpoints (optimizer, scheduler, scaler, EMA, step): tensors and plain containers only, written
atomically and read back with `torch.load(weights_only=True)`, so resuming never unpickles objects.

The state is written through a Python file object rather than a path: torch's own file writer reports a full disk
as "unexpected pos", while the file object's OSError (ENOSPC) travels with the error and becomes a `DiskFull`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mtl3dcli import fileio
from mtl3dcli.errors import Mtl3dError


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    with fileio.atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise Mtl3dError(f"training state not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise Mtl3dError(f"cannot read training state {path} ({str(exc).splitlines()[0]})") from None
