"""Hosts from outside the package: an import path or a registered name, trained and used through the CLI, and
recorded in the weights file so a fresh process finds them again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES, tiny_config

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.build import build_model, model_from_weights
from mtl3dcli.models.hosts import HOSTS, build_host, host_import_path, register_host
from mtl3dcli.weights import load_weights, save_weights

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def mtl3d(*args, cwd: Path, pythonpath: tuple[Path, ...] = (REPO, TESTS)) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb",
               PYTHONPATH=os.pathsep.join(map(str, pythonpath)))
    return subprocess.run([sys.executable, "-m", "mtl3dcli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_host_from_a_tests_module_trains_predicts_and_renders_through_the_cli(tiny_dataset, tmp_path):
    sets = [arg for o in [*TINY_OVERRIDES, "model.host=external_host:build", "model.host_options={width: 12}",
                          "train.save_every=2", "train.eval_every=2"] for arg in ("--set", o)]
    done = mtl3d("train", "--preset", "demo", "--data", tiny_dataset, "--steps", 2, "--out", tmp_path / "run", *sets,
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    weights = tmp_path / "run" / "weights" / "last.safetensors"
    loaded = load_weights(weights)
    assert loaded.host == "external_host:build" and loaded.step == 2
    assert loaded.has_regularizer and loaded.config.model.host == "external_host:build"
    image = next((tiny_dataset / "images").iterdir())
    done = mtl3d("predict", image, "--weights", weights, "--out", tmp_path / "pred", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pred" / f"{image.stem}_depth.npy").is_file()
    done = mtl3d("render-views", image, "--weights", weights, "--out", tmp_path / "views", "--frames", 2,
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert any((tmp_path / "views").glob("*.gif"))


@pytest.mark.slow
def test_weights_whose_host_module_is_gone_are_one_error_line(tiny_dataset, tmp_path, monkeypatch):
    # a host module next to the working directory, importable from there as `python -m` and uvicorn do; without
    # external_host's registration, which a name may get only once per process
    source = (TESTS / "external_host.py").read_text(encoding="utf-8")
    (tmp_path / "vanishing_host.py").write_text(source.split("\n@register_host")[0], encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tiny_config(tiny_dataset, "model.host=vanishing_host:build")
    model = build_model(config, load_weights_meta(tiny_dataset))
    path = save_weights(tmp_path / "w.safetensors", model.state_dict(), config, model.meta, 0)
    assert load_weights(path).host == "vanishing_host:build"
    (tmp_path / "vanishing_host.py").unlink()
    image = next((tiny_dataset / "images").iterdir())
    done = mtl3d("predict", image, "--weights", path, "--out", tmp_path / "pred", cwd=tmp_path,
                 pythonpath=(REPO,))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "'vanishing_host'" in lines[0], done.stderr


def load_weights_meta(root: Path):
    from mtl3dcli.data.layout import DatasetLayout

    return DatasetLayout(root).meta


def test_a_registered_host_is_built_by_name_and_its_weights_record_the_import_path(tiny_dataset, tmp_path):
    import external_host

    assert HOSTS["test-two-conv"] is external_host.build_registered
    config = tiny_config(tiny_dataset, "model.host=test-two-conv")
    model = build_model(config, load_weights_meta(tiny_dataset))
    assert type(model.net).__name__ == "TwoConvHost" and model.net.size_divisor == 4
    assert host_import_path("test-two-conv") == "external_host:build_registered"
    assert host_import_path("baseline") is None
    path = save_weights(tmp_path / "w.safetensors", model.state_dict(), config, model.meta, 0)
    loaded = load_weights(path)
    assert loaded.host == "external_host:build_registered" and loaded.config.model.host == "test-two-conv"
    rebuilt = model_from_weights(loaded)
    image = torch.rand(1, 3, 32, 48)
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(image).outputs["depth"], model(image).outputs["depth"])


def test_host_registry_errors_name_the_culprit(tiny_dataset):
    config = tiny_config(tiny_dataset)
    with pytest.raises(Mtl3dError, match="'baselin' is neither a registered host"):
        build_host_named(config, "baselin")
    with pytest.raises(Mtl3dError, match="cannot import host module 'no_such_module'"):
        build_host_named(config, "no_such_module:build")
    with pytest.raises(Mtl3dError, match="host module 'external_host' has no factory 'missing'"):
        build_host_named(config, "external_host:missing")
    with pytest.raises(Mtl3dError, match="did not return a Host"):
        build_host_named(config, "builtins:repr")
    with pytest.raises(Mtl3dError, match="host 'baseline' is already registered"):
        register_host("baseline")(lambda spec: None)


def build_host_named(config, host: str):
    from mtl3dcli.models.hosts import HostSpec

    config.model.host = host
    return build_host(HostSpec(config.model, {"depth": 1}, (32, 48)))
