"""Shared fixtures: a tiny dataset in the common layout and tiny trained models (seconds on a CPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from layout_fixtures import write_layout  # noqa: E402

from mtl3dcli.config import Config, load_config  # noqa: E402

TINY_OVERRIDES = [
    "data.size=32x48", "data.batch_size=2", "data.workers=0", "data.scale=[1.0, 1.0]",
    "model.width=8", "model.head_channels=8",
    "regularizer.plane_channels=4", "regularizer.render_size=8x12", "regularizer.samples=8",
    "regularizer.density_hidden=8", "regularizer.task_hidden=8",
    "train.steps=4", "train.eval_every=4", "train.save_every=2", "train.log_every=1", "train.warmup_steps=0",
    "eval.edge_thresholds=5", "eval.edge_workers=1",
]


def tiny_config(root: Path, *extra: str, preset: str = "demo") -> Config:
    """The demo preset shrunk to train in about a second per step on the fixture dataset."""
    return load_config(preset, [f"data.root={root}", *TINY_OVERRIDES, *extra])


@pytest.fixture(scope="session")
def pascal_dataset(tmp_path_factory) -> Path:
    """The PASCAL_MT archive fixture (3 images of 24x32, 5 tasks) converted into the common layout."""
    from archives import pascal_files

    from mtl3dcli.datasets.convert import convert_pascal

    source = tmp_path_factory.mktemp("pascal_src")
    for name, data in pascal_files().items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    return convert_pascal(source / "PASCAL_MT", tmp_path_factory.mktemp("pascal") / "pascal-context")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """3 scenes x 4 views of 32x48 (semseg, depth, normals, edge, cameras); val = the last view."""
    return write_layout(tmp_path_factory.mktemp("data") / "fixture", scenes=3, views=4, size=(32, 48))


def _train(tmp_path_factory, name: str, root: Path, *extra: str) -> Path:
    from mtl3dcli.engine.trainer import train

    run_dir = tmp_path_factory.mktemp("runs") / name
    train(tiny_config(root, *extra), run_dir)
    return run_dir / "weights" / "last.safetensors"


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, tiny_dataset) -> Path:
    """Weights of a 4-step run with the orthographic regularizer."""
    return _train(tmp_path_factory, "ortho", tiny_dataset)


@pytest.fixture(scope="session")
def tiny_weights_perspective(tmp_path_factory, tiny_dataset) -> Path:
    """Weights of a 4-step run with perspective rays and cross-view supervision."""
    return _train(tmp_path_factory, "persp", tiny_dataset, "regularizer.camera=perspective",
                  "regularizer.cross_view=true", "regularizer.min_overlap=0.0")


@pytest.fixture(scope="session")
def tiny_weights_noreg(tmp_path_factory, tiny_dataset) -> Path:
    """Weights of a 4-step run without the regularizer."""
    return _train(tmp_path_factory, "noreg", tiny_dataset, "regularizer.enabled=false")
