"""Presets, inheritance, dotted overrides with type coercion, and the errors a typo must produce."""

from __future__ import annotations

import dataclasses

import pytest

from mtl3dcli.config import Config, list_presets, load_config, merge, parse_override, presets_dir, validate
from mtl3dcli.errors import Mtl3dError


def test_demo_preset_values():
    config = load_config("demo")
    assert config.name == "demo"
    assert config.data.size == (96, 128)
    assert config.data.scale == (0.8, 1.25)
    assert config.regularizer.render_size == (12, 16)
    assert config.regularizer.enabled is True
    assert config.train.lr == 0.002
    # keys the preset does not list keep the dataclass defaults
    assert config.train.poly_power == 0.9
    assert config.data.train_split == "train"


def test_base_inheritance_overrides_only_listed_keys():
    demo, noreg = load_config("demo").to_dict(), load_config("demo-noreg").to_dict()
    assert noreg["regularizer"]["enabled"] is False
    assert noreg["name"] == "demo-noreg"
    noreg["regularizer"]["enabled"], noreg["name"] = True, "demo"
    assert noreg == demo


def test_two_level_inheritance():
    """hrnet48-noreg -> hrnet48 -> hrnet18: the middle preset's backbone and the root's schedule both survive."""
    config = load_config("hrnet48-noreg")
    assert config.model.backbone == "hrnet48"
    assert config.regularizer.enabled is False
    assert config.train.steps == 10000
    assert config.data.size == (448, 576)


@pytest.mark.parametrize("override, section, key, expected", [
    ("train.lr=1e-4", "train", "lr", 0.0001),  # YAML 1.1 reads 1e-4 as a string
    ("train.lr=3", "train", "lr", 3.0),  # int accepted for a float
    ("data.size=64x80", "data", "size", (64, 80)),
    ("data.size=[64, 80]", "data", "size", (64, 80)),
    ("data.scale=[1, 2.5]", "data", "scale", (1.0, 2.5)),
    ("data.tasks=[semseg, depth]", "data", "tasks", ["semseg", "depth"]),
    ("data.tasks=semseg,edge", "data", "tasks", ["semseg", "edge"]),
    ("train.clip_grad=null", "train", "clip_grad", None),
    ("data.eval_size=120x160", "data", "eval_size", (120, 160)),
    ("regularizer.enabled=false", "regularizer", "enabled", False),
    ("train.loss_weights={semseg: 2, depth: 0.5}", "train", "loss_weights", {"semseg": 2.0, "depth": 0.5}),
    ("train.steps=12", "train", "steps", 12),
])
def test_override_coercion(override, section, key, expected):
    value = getattr(getattr(load_config("demo", [override]), section), key)
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(value, (tuple, list)):
        assert [type(v) for v in value] == [type(v) for v in expected]


def test_later_override_wins_and_others_keep_preset():
    config = load_config("demo", ["train.lr=0.1", "train.lr=0.2"])
    assert config.train.lr == 0.2
    assert config.train.steps == 800


def test_parse_override_nesting():
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}
    assert parse_override("name=x=y") == {"name": "x=y"}
    with pytest.raises(Mtl3dError, match="section.key=value"):
        parse_override("train.lr")
    with pytest.raises(Mtl3dError, match="empty key"):
        parse_override("=3")


def test_merge_is_recursive_and_does_not_mutate():
    base = {"a": {"x": 1, "y": 2}, "b": 1}
    assert merge(base, {"a": {"y": 3}, "c": 4}) == {"a": {"x": 1, "y": 3}, "b": 1, "c": 4}
    assert base == {"a": {"x": 1, "y": 2}, "b": 1}


@pytest.mark.parametrize("override, named", [
    ("train.lrr=1", "lrr"),
    ("trian.lr=1", "trian"),
    ("regularizer.alpha.semseg=abc", "regularizer.alpha.semseg"),
])
def test_unknown_key_or_bad_nested_value_names_the_key(override, named):
    with pytest.raises(Mtl3dError, match=named.replace(".", r"\.")):
        load_config("demo", [override])


@pytest.mark.parametrize("override, message", [
    ("train.steps=abc", "train.steps must be an integer"),
    ("train.steps=2.5", "train.steps must be an integer"),
    ("train.lr=fast", "train.lr must be a number"),
    ("regularizer.enabled=3", "regularizer.enabled must be true or false"),
    ("data.size=64", "data.size must be a list of 2 values"),
    ("data.size=64x64x3", "data.size must be a list of 2 values"),
    ("data.root=[a, b]", "data.root must be a string"),
    ("train=3", "train must be a mapping"),
])
def test_wrong_type_is_an_error(override, message):
    with pytest.raises(Mtl3dError, match=message):
        load_config("demo", [override])


def test_error_message_names_the_preset():
    with pytest.raises(Mtl3dError, match="preset demo-noreg"):
        load_config("demo-noreg", ["train.nope=1"])


def test_unknown_preset_lists_available():
    with pytest.raises(Mtl3dError) as info:
        load_config("demoo")
    message = str(info.value)
    assert "unknown preset 'demoo'" in message
    for name in ("demo", "demo-noreg", "hrnet18"):
        assert name in message


def test_preset_file_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: demo\nname: mine\ntrain:\n  steps: 7\n", encoding="utf-8")
    config = load_config(str(path), ["train.lr=0.5"])
    assert (config.name, config.train.steps, config.train.lr) == ("mine", 7, 0.5)
    assert config.model.width == 32  # from demo


def test_preset_file_base_relative_to_the_file(tmp_path, monkeypatch):
    """`base: other.yaml` in a user preset names a file next to it, wherever the command runs from."""
    (tmp_path / "parent.yaml").write_text("base: demo\ntrain:\n  steps: 9\n", encoding="utf-8")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nname: child\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path.parent)
    config = load_config(str(tmp_path / "child.yaml"))
    assert (config.name, config.train.steps, config.model.backbone) == ("child", 9, "tiny")


def test_missing_preset_file():
    with pytest.raises(Mtl3dError, match="preset file not found"):
        load_config("/nonexistent/dir/p.yaml")


def test_self_inheriting_preset_is_an_error(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text(f"base: {path}\nname: loop\n", encoding="utf-8")
    with pytest.raises(Mtl3dError, match="inherits from itself"):
        load_config(str(path))
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"base: {b}\n", encoding="utf-8")
    b.write_text(f"base: {a}\n", encoding="utf-8")
    with pytest.raises(Mtl3dError, match="inherits from itself"):
        load_config(str(a))


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "must be a mapping"),
    ("train: [unclosed\n", "cannot read preset"),
])
def test_malformed_preset_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(Mtl3dError, match=message):
        load_config(str(path))


def test_validate_rejects_cross_view_with_orthographic_camera():
    with pytest.raises(Mtl3dError, match="cross_view needs regularizer.camera=perspective"):
        load_config("demo", ["regularizer.cross_view=true"])
    config = load_config("demo-crossview")
    assert (config.regularizer.camera, config.regularizer.cross_view) == ("perspective", True)


@pytest.mark.parametrize("override, message", [
    ("train.schedule=linear", "train.schedule must be one of"),
    ("regularizer.camera=fisheye", "regularizer.camera must be one of"),
    ("regularizer.decode=pixel", "regularizer.decode must be one of"),
    ("train.steps=0", "train.steps must be positive"),
    ("train.lr=-1", "train.lr must be positive"),
    ("train.ema=1.5", "train.ema must be in"),
])
def test_validate_rejects_bad_values(override, message):
    with pytest.raises(Mtl3dError, match=message):
        load_config("demo", [override])


def test_every_bundled_preset_loads():
    names = list_presets()
    assert {"demo", "demo-noreg", "demo-crossview", "hrnet18", "hrnet18-noreg", "hrnet48"} <= set(names)
    assert len(names) == len(list(presets_dir().glob("*.yaml")))
    for name in names:
        config = load_config(name)
        validate(config)
        assert config.name == name


def test_dict_round_trip():
    config = load_config("demo-crossview", ["regularizer.alpha={depth: 2}"])
    again = Config.from_dict(config.to_dict())
    assert again == config
    assert dataclasses.asdict(again) == dataclasses.asdict(config)
