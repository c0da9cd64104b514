"""Weights files: safetensors that describe themselves.

A weights file carries the full config, the tasks, the dataset meta (class names, palettes, depth range) and the
step in its safetensors metadata, so `mtl3d predict --weights W` needs nothing else; a host from outside the package
also leaves its import path ("package.module:factory", `host`). Written atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mtl3dcli import __version__, fileio
from mtl3dcli.config import Config, validate
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.errors import Mtl3dError

FORMAT = "mtl3d-weights"


@dataclass
class Weights:
    state: dict[str, torch.Tensor]
    config: Config
    meta: DatasetMeta
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)
    host: str | None = None  # import path of a host from outside the package; None for the built-in hosts

    @property
    def has_regularizer(self) -> bool:
        return any(key.startswith("regularizer.") for key in self.state)


def save_weights(path: str | os.PathLike, state: dict[str, torch.Tensor], config: Config, meta: DatasetMeta,
                 step: int, metrics: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    from mtl3dcli.models.hosts import host_import_path  # the host registry: imported when weights are written

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    metadata = {
        "format": FORMAT,
        "mtl3d_version": __version__,
        "config": json.dumps(config.to_dict()),
        "meta": json.dumps(meta.to_json()),
        "tasks": json.dumps(list(config.data.tasks)),
        "step": str(step),
        "metrics": json.dumps(metrics or {}),
    }
    host = host_import_path(config.model.host)
    if host is not None:
        metadata["host"] = host
    with fileio.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def load_weights(path: str | os.PathLike) -> Weights:
    """Read a weights file; any problem (missing, not safetensors, not ours, bad config) is one clear error."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix.lower() == ".onnx":
        raise Mtl3dError(f"{path} is an ONNX export (the host network only, for predict and evaluate); this command "
                         "needs the .safetensors weights it was exported from")
    if not path.is_file():
        raise Mtl3dError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises several types for corrupt/foreign files
        raise Mtl3dError(f"{path} is not a readable safetensors weights file ({str(exc).splitlines()[0]})") from None
    if metadata.get("format") != FORMAT:
        raise Mtl3dError(f"{path} is not an mtl3d weights file (no mtl3d config in its metadata)")
    config, meta, step, metrics = read_metadata(metadata, path)
    return Weights(state, config, meta, step, metrics, metadata.get("host"))


def read_metadata(metadata: dict[str, str], path: Path) -> tuple[Config, DatasetMeta, int, dict[str, Any]]:
    """The config, dataset meta, step and metrics an mtl3d file (weights or an ONNX export) keeps in its string
    metadata; a missing or malformed entry is one clear error naming the file."""
    try:
        config = Config.from_dict(json.loads(metadata["config"]), source=f"config in {path.name}")
        validate(config)
        meta = DatasetMeta.from_json(json.loads(metadata["meta"]), f"dataset meta in {path.name}")
        return config, meta, int(metadata.get("step", 0)), json.loads(metadata.get("metrics", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise Mtl3dError(f"{path}: unsupported or damaged mtl3d metadata ({exc})") from None
