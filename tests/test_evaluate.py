"""`mtl3d evaluate`: metrics per task (checked against a direct forward pass), the JSON file, rendered maps,
task subsets, Delta_m from a references file, and refusing a dataset whose classes do not match the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl3dcli import fileio
from mtl3dcli.weights import load_weights
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.commands.evaluate import run_evaluation
from mtl3dcli.inference import select_tasks
from mtl3dcli.metrics import delta_m
from mtl3dcli.models.build import model_from_weights
from mtl3dcli.reports import run_report_path
from mtl3dcli.tasks import parse_tasks, primary_metrics

PRIMARY = {"semseg": "mIoU", "depth": "rmse", "normals": "mean", "edge": "odsF"}
VAL_ID = "s2_v3"  # the fixture's only val sample


def evaluate(weights: Path, data: Path, out: Path, **options) -> dict:
    return run_evaluation(weights, data=data, out=out, device="cpu", workers=0, **options)


@pytest.fixture(scope="module")
def report(tiny_weights, tiny_dataset, tmp_path_factory) -> dict:
    return evaluate(tiny_weights, tiny_dataset, tmp_path_factory.mktemp("eval") / "metrics.json")


def test_every_task_has_its_primary_metric_and_the_json_is_written(report, tiny_dataset, tiny_weights):
    assert set(report["results"]) == set(PRIMARY) | {"consistency"}  # the fixture has cameras
    for task, metric in PRIMARY.items():
        assert np.isfinite(report["results"][task][metric])
    assert (report["split"], report["samples"], report["step"]) == ("val", 1, 4)
    assert report["dataset"] == str(tiny_dataset) and report["weights"] == str(tiny_weights)
    on_disk = json.loads(Path(report["written"]).read_text())
    assert on_disk == {k: v for k, v in report.items() if k != "written"}
    assert "delta_m" not in report  # the demo preset names no references


def test_training_ends_with_the_report_evaluate_writes(report, tiny_weights):
    """The run's final validation is the full protocol with consistency, written as `mtl3d evaluate` writes it: a
    study reads it instead of scoring the run a second time."""
    written = json.loads(run_report_path(tiny_weights.parent.parent, report["dataset"]).read_text())
    assert written == {k: v for k, v in report.items() if k != "written"}


def test_metrics_match_a_direct_forward_pass(report, tiny_weights, tiny_dataset):
    """pixel accuracy, depth RMSE and mean normal angle of the single val image, computed here by hand."""
    model = model_from_weights(load_weights(tiny_weights)).eval()
    image = fileio.read_image(tiny_dataset / "images" / f"{VAL_ID}.png")
    with torch.no_grad():
        x = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None]
        out = model(x).outputs
    seg = out["semseg"][0].argmax(0).numpy()
    seg_gt = fileio.read_image(tiny_dataset / "segmentation" / f"{VAL_ID}.png", mode="L")
    depth = out["depth"][0, 0].clamp_min(0).double().numpy()
    depth_gt = np.load(tiny_dataset / "depth" / f"{VAL_ID}.npy").astype(np.float64)
    normals = torch.nn.functional.normalize(out["normals"][0].double(), dim=0, eps=1e-6).permute(1, 2, 0).numpy()
    normals_gt = (fileio.read_image(tiny_dataset / "normals" / f"{VAL_ID}.png").astype(np.float64) / 255 * 2 - 1)
    normals_gt /= np.linalg.norm(normals_gt, axis=-1, keepdims=True)
    angle = np.degrees(np.arccos(np.clip((normals * normals_gt).sum(-1), -1, 1)))

    results = report["results"]
    assert results["semseg"]["pixAcc"] == pytest.approx(100.0 * (seg == seg_gt).mean(), abs=1e-6)
    assert results["depth"]["rmse"] == pytest.approx(np.sqrt(((depth - depth_gt) ** 2).mean()), rel=1e-4)
    assert results["normals"]["mean"] == pytest.approx(angle.mean(), abs=0.05)


def test_rendered_adds_the_regularizer_maps(tiny_weights, tiny_dataset, tmp_path, report):
    rendered = evaluate(tiny_weights, tiny_dataset, tmp_path / "m.json", rendered=True)
    assert set(rendered["results"]) == set(PRIMARY) | {f"render/{t}" for t in PRIMARY} | {"consistency"}
    for task, metric in PRIMARY.items():
        assert np.isfinite(rendered["results"][f"render/{task}"][metric])
        assert rendered["results"][task] == pytest.approx(report["results"][task])  # heads are unchanged


def test_rendered_with_perspective_rays(tiny_weights_perspective, tiny_dataset, tmp_path):
    rendered = evaluate(tiny_weights_perspective, tiny_dataset, tmp_path / "m.json", rendered=True, tasks="depth")
    assert set(rendered["results"]) == {"depth", "render/depth", "consistency"}
    assert rendered["results"]["render/depth"]["rmse"] > 0


def test_a_task_subset_restricts_the_results(tiny_weights, tiny_dataset, tmp_path, report):
    subset = evaluate(tiny_weights, tiny_dataset, tmp_path / "m.json", tasks="seg")
    assert list(subset["results"]) == ["semseg"]
    assert subset["results"]["semseg"] == pytest.approx(report["results"]["semseg"])


def test_default_output_sits_next_to_the_weights(tiny_weights, tiny_dataset):
    target = tiny_weights.with_suffix(".val.json")
    try:
        written = run_evaluation(tiny_weights, data=tiny_dataset, tasks="depth", device="cpu", workers=0)
        assert Path(written["written"]) == target and target.is_file()
    finally:
        target.unlink(missing_ok=True)


def test_delta_m_from_a_references_file(tiny_weights, tiny_dataset, tmp_path, report):
    mt = report["results"]
    refs = {"semseg": {"mIoU": 2 * mt["semseg"]["mIoU"]}, "depth": {"rmse": 4 * mt["depth"]["rmse"]}}
    fileio.write_json(tmp_path / "refs.json", refs)
    scored = evaluate(tiny_weights, tiny_dataset, tmp_path / "m.json", tasks="seg,depth",
                      references=tmp_path / "refs.json")
    # semseg: (m - 2m) / 2m = -50 %; depth (lower is better): -(r - 4r) / 4r = +75 %; mean 12.5 %
    assert scored["delta_m"] == pytest.approx(12.5)
    assert scored["delta_m"] == pytest.approx(delta_m(scored["results"], refs, primary_metrics(parse_tasks("semseg,depth"))))
    assert json.loads((tmp_path / "m.json").read_text())["delta_m"] == pytest.approx(12.5)


def test_an_evaluate_output_file_serves_as_references(tiny_weights, tiny_dataset, tmp_path, report):
    scored = evaluate(tiny_weights, tiny_dataset, tmp_path / "m.json", references=Path(report["written"]))
    assert scored["delta_m"] == pytest.approx(0.0, abs=1e-9)  # the same model against itself


def test_bad_references_are_user_errors(tiny_weights, tiny_dataset, tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(Mtl3dError, match="list.json"):
        evaluate(tiny_weights, tiny_dataset, tmp_path / "m.json", references=tmp_path / "list.json")
    fileio.write_json(tmp_path / "partial.json", {"semseg": {"mIoU": 50.0}})
    with pytest.raises(Mtl3dError, match="reference 'rmse' for task depth"):
        evaluate(tiny_weights, tiny_dataset, tmp_path / "m.json", references=tmp_path / "partial.json")
    with pytest.raises(Mtl3dError, match="absent.json"):
        evaluate(tiny_weights, tiny_dataset, tmp_path / "m.json", references=tmp_path / "absent.json")


def test_a_dataset_with_other_classes_is_refused(tiny_weights, tiny_dataset, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_dataset, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["classes"]["semseg"].append("sofa")
    meta["palettes"]["semseg"].append([10, 10, 10])
    (other / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(Mtl3dError, match="4 classes but dataset .* has 5"):
        evaluate(tiny_weights, other, tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()
    # depth alone has no classes: that evaluation is fine
    assert "depth" in evaluate(tiny_weights, other, tmp_path / "m.json", tasks="depth")["results"]


def test_select_tasks(tiny_weights):
    model = model_from_weights(load_weights(tiny_weights))
    assert [t.name for t in select_tasks(model, None)] == ["semseg", "depth", "normals", "edge"]
    assert [t.name for t in select_tasks(model, "edges,seg")] == ["edge", "semseg"]
    with pytest.raises(Mtl3dError, match="no parts, saliency head"):
        select_tasks(model, "parts,sal,depth")
