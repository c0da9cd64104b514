"""`mtl3d export` and the ONNX Runtime backend: the host alone with outputs named by task and the metadata predict
needs, parity with PyTorch (1e-4), and `predict` / `evaluate` on the .onnx equal to the safetensors path."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import onnx
import pytest
from test_cli import invoke
from rich.console import Console

from mtl3dcli.commands import export as export_command
from mtl3dcli.commands.evaluate import run_evaluation
from mtl3dcli.commands.export import (TaskOutputs, check_dynamic, check_inputs, check_parity, export_size,
                                      run_export)
from mtl3dcli.commands.predict import run_predict
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.inference import InferenceSession
from mtl3dcli.models.build import model_from_weights
from mtl3dcli.models.layers import IMAGENET_MEAN, IMAGENET_STD
from mtl3dcli.onnx_backend import load_onnx
from mtl3dcli.weights import load_weights

TASKS = ["semseg", "depth", "normals", "edge"]


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def exports(tiny_weights, tmp_path_factory) -> dict[str, dict]:
    """A dynamic export and a fixed 32x48 one (the training size) of the tiny trained model, with their summaries."""
    folder = tmp_path_factory.mktemp("onnx")
    return {"dynamic": run_export(tiny_weights, folder / "dynamic.onnx", dynamic=True),
            "fixed": run_export(tiny_weights, folder / "fixed.onnx", size=(32, 48))}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three photos of two sizes: one not a multiple of anything, two equal (one batch)."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name, shape in {"odd.png": (37, 53, 3), "a.png": (32, 48, 3), "b.png": (32, 48, 3)}.items():
        iio.imwrite(folder / name, rng.integers(0, 256, shape, dtype=np.uint8))
    return folder


def test_export_holds_the_host_with_task_outputs_and_metadata(tiny_weights, exports):
    weights = load_weights(tiny_weights)
    summary = exports["dynamic"]
    model = onnx.load(summary["out"])
    assert min(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [o.name for o in model.graph.output] == TASKS and [i.name for i in model.graph.input] == ["image"]
    assert not [i.name for i in model.graph.initializer if "regularizer" in i.name]
    assert weights.has_regularizer, "the fixture trained with the regularizer: the export must leave it out"
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["format"] == "mtl3d-onnx" and json.loads(meta["tasks"]) == TASKS
    assert json.loads(meta["config"]) == weights.config.to_dict()
    assert json.loads(meta["classes"]) == {"semseg": weights.meta.classes["semseg"]}
    assert json.loads(meta["palettes"]) == {"semseg": weights.meta.palette("semseg")}
    assert json.loads(meta["channels"]) == {"semseg": len(weights.meta.classes["semseg"]), "depth": 1,
                                            "normals": 3, "edge": 1}
    normalization = json.loads(meta["input"])
    assert normalization["mean"] == list(IMAGENET_MEAN) and normalization["std"] == list(IMAGENET_STD)
    assert normalization["range"] == [0.0, 1.0] and normalization["layout"] == "NCHW"
    assert int(meta["size_divisor"]) == model_from_weights(weights).net.size_divisor
    assert meta["input_size"] == "dynamic" and meta["step"] == str(weights.step)
    fixed = load_onnx(exports["fixed"]["out"])
    assert fixed.session.get_inputs()[0].shape == [1, 3, 32, 48]
    assert load_onnx(summary["out"]).session.get_inputs()[0].shape == ["batch", 3, "height", "width"]


def test_export_matches_pytorch_within_the_tolerance(exports):
    for summary in exports.values():
        assert set(summary["max_abs_diff"]) == set(TASKS)
        assert max(summary["max_abs_diff"].values()) <= 1e-4


@pytest.mark.slow
def test_parity_failure_names_the_output_and_writes_nothing(tiny_weights, exports, tmp_path, monkeypatch):
    class Shifted(TaskOutputs):
        def forward(self, image):
            outputs = list(super().forward(image))
            outputs[1] = outputs[1] + 1e-3  # depth off by more than the tolerance
            return tuple(outputs)

    net = model_from_weights(load_weights(tiny_weights)).eval().net
    inputs = check_inputs((32, 48), 1, dynamic=True)
    with pytest.raises(Mtl3dError, match="output 'depth' differs from PyTorch by up to 0.001"):
        check_parity(Path(exports["dynamic"]["out"]), Shifted(net, TASKS), inputs, 1e-4)
    real = export_command.check_parity
    monkeypatch.setattr(export_command, "check_parity",
                        lambda path, module, *args: real(path, Shifted(module.net, module.names), *args))
    with pytest.raises(Mtl3dError, match="'depth'"):
        run_export(tiny_weights, tmp_path / "shifted.onnx")
    assert not list(tmp_path.iterdir())


def test_a_dynamic_export_whose_size_got_fixed_is_refused(exports):
    """What the exporter makes of a host that turns a size into a Python int: the input dims become constants."""
    check_dynamic(load_onnx(exports["dynamic"]["out"]).session)
    with pytest.raises(Mtl3dError, match="--dynamic: the exporter fixed the input shape to \\[1, 3, 32, 48\\]"):
        check_dynamic(load_onnx(exports["fixed"]["out"]).session)


def _predict_both(weights: Path, onnx_file: str, images: Path, out: Path, monkeypatch) -> tuple[Path, Path]:
    run_predict([images], weights, out=out / "torch", device="cpu", console=quiet())

    def no_torch_model(*args, **kwargs):
        raise AssertionError("an ONNX session must not build a torch model")

    with monkeypatch.context() as patch:
        patch.setattr("mtl3dcli.models.build.build_model", no_torch_model)
        assert not run_predict([images], onnx_file, out=out / "onnx", device="cpu", console=quiet())
    return out / "torch", out / "onnx"


def _assert_same_predictions(torch_dir: Path, onnx_dir: Path, names: list[str]) -> None:
    files = sorted(p.name for p in torch_dir.iterdir())
    assert files == sorted(p.name for p in onnx_dir.iterdir())
    assert {f.split("_")[0] for f in files} == set(names)
    for name in files:
        ours, theirs = (iio.imread(d / name) if name.endswith(".png") else np.load(d / name)
                        for d in (torch_dir, onnx_dir))
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        if name.endswith("semseg.npy") or name.endswith("semseg.png"):
            assert np.array_equal(ours, theirs), name
        else:
            tolerance = 1 if name.endswith(".png") else 1e-4  # colours: one level of rounding
            assert np.abs(ours.astype(np.float64) - theirs).max() <= tolerance, name


def test_predict_with_the_onnx_file_equals_the_safetensors_path(tiny_weights, exports, images, tmp_path,
                                                                monkeypatch):
    torch_dir, onnx_dir = _predict_both(tiny_weights, exports["dynamic"]["out"], images, tmp_path, monkeypatch)
    _assert_same_predictions(torch_dir, onnx_dir, ["odd", "a", "b"])


def test_fixed_size_export_predicts_at_its_size(tiny_weights, exports, images, tmp_path, monkeypatch):
    """Photos of 32x48 run at 32x48 (predict's size for them: the tiny host takes any size) in both paths; a batch
    of two runs image by image."""
    only = tmp_path / "only"
    only.mkdir()
    for name in ("a.png", "b.png"):
        (only / name).write_bytes((images / name).read_bytes())
    torch_dir, onnx_dir = _predict_both(tiny_weights, exports["fixed"]["out"], only, tmp_path, monkeypatch)
    _assert_same_predictions(torch_dir, onnx_dir, ["a", "b"])


def test_evaluate_with_the_onnx_file_equals_the_safetensors_path(tiny_weights, tiny_dataset, exports, tmp_path):
    options = {"data": tiny_dataset, "split": "train", "device": "cpu", "workers": 0, "edge_thresholds": 5,
               "batch_size": 3, "console": quiet()}
    ours = run_evaluation(tiny_weights, out=tmp_path / "torch.json", **options)
    theirs = run_evaluation(exports["dynamic"]["out"], **options)
    assert Path(theirs["written"]) == Path(exports["dynamic"]["out"]).with_name("dynamic.onnx.train.json")
    assert theirs["step"] == ours["step"] and theirs["samples"] == ours["samples"]
    assert theirs["protocols"] == ours["protocols"]
    for task, metrics in ours["results"].items():
        for name, value in metrics.items():
            assert math.isclose(theirs["results"][task][name], value, rel_tol=1e-5, abs_tol=1e-5), (task, name)


def test_onnx_has_no_regularizer(exports, tiny_dataset):
    with pytest.raises(Mtl3dError, match="host network only: rendered maps and render-views need"):
        InferenceSession.from_weights(Path(exports["dynamic"]["out"]), device="cpu", with_regularizer=True)
    with pytest.raises(Mtl3dError, match="host network only"):
        load_weights(exports["dynamic"]["out"])


def test_files_that_are_not_mtl3d_exports(tmp_path):
    not_onnx = tmp_path / "noise.onnx"
    not_onnx.write_bytes(b"\x00\x01 definitely not protobuf")
    with pytest.raises(Mtl3dError, match="noise.onnx is not a readable ONNX model"):
        load_onnx(not_onnx)
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), foreign)
    with pytest.raises(Mtl3dError, match="not one `mtl3d export` wrote"):
        load_onnx(foreign)
    with pytest.raises(Mtl3dError, match="ONNX file not found"):
        load_onnx(tmp_path / "absent.onnx")


def test_export_size_must_fit_the_size_divisor():
    assert export_size(None, (448, 576), 32) == (448, 576)
    assert export_size((64, 96), (448, 576), 32) == (64, 96)
    with pytest.raises(Mtl3dError, match="multiples of the host's size divisor 32 \\(e.g. 96x128\\)"):
        export_size((90, 100), (448, 576), 32)


@pytest.mark.parametrize("case", ["opset", "format", "from_onnx", "size", "render_views"])
def test_export_user_errors_are_one_line(case, tiny_weights, exports, images, tmp_path, capsys):
    onnx_file = exports["dynamic"]["out"]
    cases = {
        "opset": (["export", "--weights", tiny_weights, "--out", tmp_path / "m.onnx", "--opset", "16"], "16"),
        "format": (["export", "--weights", tiny_weights, "--out", tmp_path / "m.onnx", "--format", "tflite"],
                   "tflite"),
        "from_onnx": (["export", "--weights", onnx_file, "--out", tmp_path / "m.onnx"], "ONNX export"),
        "size": (["export", "--weights", tiny_weights, "--out", tmp_path / "m.onnx", "--size", "32by48"], "32by48"),
        "render_views": (["render-views", images / "a.png", "--weights", onnx_file, "--out", tmp_path / "v"],
                         "needs the .safetensors weights"),
    }
    args, culprit = cases[case]
    code, out, err = invoke(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and culprit in lines[0], err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_export_cli_reports_the_parity(tiny_weights, tmp_path, capsys):
    code, out, err = invoke(["export", "--weights", tiny_weights, "--out", tmp_path / "m.onnx"], capsys)
    assert code == 0, err
    assert "opset 18" in out and "input 1x3x32x48" in out and "ONNX Runtime matches PyTorch within" in out
    assert load_onnx(tmp_path / "m.onnx").session.get_inputs()[0].shape == [1, 3, 32, 48]
