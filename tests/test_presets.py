"""Every bundled preset trains through the real CLI (two steps at tiny sizes) on the data its tasks need, and a
preset whose tasks a dataset lacks is a one-line error. The giant backbones (HRNet-48, ViT-L) are swapped for their
small siblings here: their architectures are checked on the meta device in test_hosts_*.py."""

from __future__ import annotations

import pytest
from test_cli import assert_one_line_error, invoke

from mtl3dcli.config import list_presets, load_config, preset_description

PAPER_PRESETS = [name for name in list_presets() if not name.startswith("demo") and not name.endswith("-noreg")]
SMALLER = {"hrnet48": "hrnet18", "vit-l": "vit-s"}


def tiny_args(name: str, data, out) -> list[str]:
    config = load_config(name)
    overrides = ["data.size=32x32", "data.eval_size=null", "data.batch_size=2", "data.workers=0",
                 "data.scale=[1.0, 1.0]", "model.pretrained=null", "train.steps=2", "train.eval_every=2",
                 "train.save_every=2", "train.log_every=1", "regularizer.plane_channels=4", "regularizer.samples=4",
                 "regularizer.render_size=8x8", "regularizer.density_hidden=8", "regularizer.task_hidden=8",
                 "eval.edge_thresholds=5", "eval.edge_workers=1",
                 f"model.backbone={SMALLER.get(config.model.backbone, config.model.backbone)}"]
    return ["train", "--preset", name, "--data", data, "--out", out, *[a for o in overrides for a in ("--set", o)]]


def test_every_preset_has_a_description_and_a_noreg_twin():
    names = set(list_presets())
    for name in names - {n for n in names if n.endswith("-noreg")}:
        assert preset_description(name)
        twin = name.replace("-crossview", "") + "-noreg"
        assert twin in names, name
        assert not load_config(twin).regularizer.enabled and load_config(name).regularizer.enabled


@pytest.mark.parametrize("name", PAPER_PRESETS)
@pytest.mark.slow
def test_paper_preset_trains_two_steps(name, tiny_dataset, pascal_dataset, tmp_path, monkeypatch, capsys):
    pascal = "pascal" in name
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke(tiny_args(name, pascal_dataset if pascal else tiny_dataset, tmp_path / "run"), capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "weights" / "best.safetensors").is_file()
    if pascal:  # the synthetic-like fixture has no human parts or saliency: one clear line, no crash
        code, out, err = invoke(tiny_args(name, tiny_dataset, tmp_path / "other"), capsys)
        assert_one_line_error(code, out, err, "parts")
