"""Metrics against answers worked out by hand on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtl3dcli.meta import DatasetMeta
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.metrics import (
    HED_THRESHOLDS,
    ConfusionMeter,
    DepthMeter,
    EdgeMeter,
    NormalsMeter,
    SaliencyMeter,
    delta_m,
)
from mtl3dcli.tasks import parse_tasks, primary_metrics

# --- segmentation ----------------------------------------------------------------------------------------------


def _seg_batch():
    label = torch.tensor([[[0, 0, 0, 1], [1, 255, 0, 2]]])
    pred = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 2]]])
    valid = torch.ones(1, 2, 4, dtype=torch.bool)
    valid[0, 1, 2:] = False  # drops a wrong 0->1 pixel and the only pixel of class 2
    return pred, label, valid


def test_confusion_meter_hand_values():
    meter = ConfusionMeter(["a", "b", "c"])
    meter.update(*_seg_batch())
    # counted (gt -> pred): 0->0, 0->0, 0->1, 1->1, 1->0 (255 and invalid pixels excluded)
    assert meter._stats["confusion"].tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 0]]
    scores = meter.compute()
    assert scores["IoU/a"] == pytest.approx(100 * 2 / 4)  # tp 2, fp 1, fn 1
    assert scores["IoU/b"] == pytest.approx(100 * 1 / 3)  # tp 1, fp 1, fn 1
    assert scores["IoU/c"] == 0.0  # absent from the split: counts 0 in the mean
    assert scores["mIoU"] == pytest.approx(100 * (1 / 2 + 1 / 3 + 0) / 3)
    assert scores["pixAcc"] == pytest.approx(100 * 3 / 5)
    assert scores["mAcc"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)  # over classes present in the labels
    assert meter.primary == "mIoU" and meter.higher_is_better


def test_confusion_meter_rejects_unknown_label_value():
    pred, label, valid = _seg_batch()
    label[0, 0, 0] = 7
    with pytest.raises(Mtl3dError, match="label value 7"):
        ConfusionMeter(["a", "b", "c"]).update(pred, label, valid)


# --- depth -----------------------------------------------------------------------------------------------------


def _depth_batch():
    label = torch.tensor([[[[2.0, 2.0], [2.0, 2.0]]], [[[1.0, 0.0], [0.0, 0.0]]]])  # image 2: one valid pixel
    pred = torch.tensor([[[[3.0, 3.0], [3.0, 3.0]]], [[[4.0, 5.0], [5.0, 5.0]]]])
    return pred, label, torch.ones(2, 2, 2, dtype=torch.bool)


def test_depth_rmse_is_pooled_over_pixels_not_images():
    meter = DepthMeter()
    meter.update(*_depth_batch())
    scores = meter.compute()
    # squared errors: image 1 four times 1, image 2 once 9 -> sqrt(13 / 5); per-image mean would be (1 + 3) / 2 = 2
    assert scores["rmse"] == pytest.approx(math.sqrt(13 / 5))
    assert scores["rmse"] != pytest.approx(2.0)
    assert scores["log_rmse"] == pytest.approx(math.sqrt((4 * math.log(1.5) ** 2 + math.log(4) ** 2) / 5))
    assert scores["abs_rel"] == pytest.approx((4 * 0.5 + 3.0) / 5)
    assert scores["sq_rel"] == pytest.approx((4 * 0.5 + 9.0) / 5)
    assert scores["log10"] == pytest.approx((4 * math.log10(1.5) + math.log10(4)) / 5)
    # ratios 1.5 (x4) and 4: none < 1.25, four < 1.5625 and < 1.953
    assert (scores["delta1"], scores["delta2"], scores["delta3"]) == pytest.approx((0.0, 80.0, 80.0))


def test_depth_zero_prediction_is_clamped_not_skipped():
    meter = DepthMeter()
    meter.update(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, dtype=torch.bool))
    assert meter.compute()["log_rmse"] == pytest.approx(-math.log(1e-9))


# --- normals ---------------------------------------------------------------------------------------------------


def _normals_batch(angles_deg=(0.0, 20.0, 45.0, 90.0)):
    theta = torch.deg2rad(torch.tensor([*angles_deg, 10.0, 10.0], dtype=torch.float64))
    pred = 2.0 * torch.stack([theta.sin(), torch.zeros_like(theta), theta.cos()])  # not unit: the meter normalizes
    label = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)[:, None].repeat(1, 6)
    label[:, 4] = 0.0  # invalid label (zero vector)
    valid = torch.ones(1, 2, 3, dtype=torch.bool)
    valid[0, 1, 2] = False  # pixel 5 outside the image region
    return pred.float().view(1, 3, 2, 3), label.float().view(1, 3, 2, 3), valid


def test_normals_meter_hand_values():
    meter = NormalsMeter()
    meter.update(*_normals_batch())
    scores = meter.compute()
    assert scores["mean"] == pytest.approx((0 + 20 + 45 + 90) / 4, abs=1e-4)
    assert scores["median"] == pytest.approx((20 + 45) / 2, abs=0.01)
    assert scores["rmse"] == pytest.approx(math.sqrt((0 + 400 + 2025 + 8100) / 4), abs=1e-4)
    assert (scores["11.25"], scores["22.5"], scores["30"]) == pytest.approx((25.0, 50.0, 50.0))


def test_normals_histogram_median_within_half_a_bin():
    rng = np.random.default_rng(0)
    pred = torch.from_numpy(rng.normal(size=(1, 3, 25, 41)))
    label = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(1, 3, 25, 41))), dim=1)
    meter = NormalsMeter()
    meter.update(pred, label, torch.ones(1, 25, 41, dtype=torch.bool))
    cos = (torch.nn.functional.normalize(pred, dim=1) * label).sum(1).clamp(-1, 1)
    exact = np.degrees(np.arccos(cos.numpy())).ravel()
    assert meter.compute()["median"] == pytest.approx(float(np.median(exact)), abs=0.005 + 1e-9)
    assert meter.compute()["mean"] == pytest.approx(float(exact.mean()), abs=1e-9)


# --- boundaries ------------------------------------------------------------------------------------------------

SIZE = 20  # diagonal 28.28 px; max_dist 0.05 -> 1.41 px tolerance


def _line(col: int, value: float = 1.0, size: int = SIZE) -> torch.Tensor:
    image = torch.zeros(size, size)
    image[2:18, col] = value
    return image


def _edge(pred: torch.Tensor, label: torch.Tensor, thresholds=5, **options) -> dict[str, float]:
    meter = EdgeMeter(max_dist=0.05, thresholds=thresholds, **options)
    meter.update(pred[None, None], label[None, None], torch.ones(1, *pred.shape, dtype=torch.bool))
    return meter.compute()


def test_edge_shift_within_tolerance_matches():
    scores = _edge(_line(11, 0.9), _line(10))
    assert (scores["odsF"], scores["odsP"], scores["odsR"], scores["oisF"]) == pytest.approx((100, 100, 100, 100))


def test_edge_shift_beyond_tolerance_does_not_match():
    assert _edge(_line(13, 0.9), _line(10))["odsF"] == 0.0


def test_edge_ods_picks_the_best_threshold():
    # thresholds 1/6 .. 5/6: at 1/6 the spurious 0.3 line is kept (P = 16/32, R = 1, F = 2/3); from 1/3 on only the
    # true line survives (F = 1)
    pred = _line(10, 0.9) + _line(3, 0.3)
    scores = _edge(pred, _line(10))
    assert scores["odsF"] == pytest.approx(100.0)
    assert scores["ods_threshold"] == pytest.approx(2 / 6)
    scores = _edge(pred, _line(10), thresholds=[0.1])
    assert (scores["odsF"], scores["odsP"], scores["odsR"]) == pytest.approx((100 * 2 * 0.5 / 1.5, 50.0, 100.0))


def test_edge_padding_is_cropped_before_matching():
    # a 2 px shift is beyond 0.05 x 28.3 px; padded to 40x40 the diagonal would allow 2.8 px if padding counted
    pred, label = torch.zeros(40, 40), torch.zeros(40, 40)
    pred[:SIZE, :SIZE], label[:SIZE, :SIZE] = _line(12, 0.9), _line(10)
    pred[30, 5:35] = 0.9  # a spurious edge inside the padding is ignored too
    valid = torch.zeros(1, 40, 40, dtype=torch.bool)
    valid[0, :SIZE, :SIZE] = True
    meter = EdgeMeter(max_dist=0.05, thresholds=5)
    meter.update(pred[None, None], label[None, None], valid)
    assert meter.compute()["odsF"] == 0.0
    meter = EdgeMeter(max_dist=0.05, thresholds=5)
    pred[:SIZE, :SIZE] = _line(11, 0.9)
    meter.update(pred[None, None], label[None, None], valid)
    assert meter.compute()["odsF"] == pytest.approx(100.0)


def test_edge_defaults():
    assert len(HED_THRESHOLDS) == 101 and HED_THRESHOLDS[:2] == (0.001, 0.01) and HED_THRESHOLDS[-1] == 0.999
    assert len(EdgeMeter(max_dist=0.011).thresholds) == 101
    assert EdgeMeter(max_dist=0.011, thresholds=99).thresholds[[0, -1]] == pytest.approx([0.01, 0.99])
    with pytest.raises(Mtl3dError):
        EdgeMeter(max_dist=3.0)


def test_edge_nms_keeps_the_crest_of_a_wide_ridge():
    ridge = _line(9, 0.4) + _line(10, 0.9) + _line(11, 0.4)
    # no NMS, no thinning: 48 edge pixels, 16 can be matched one-to-one -> P = 1/3, R = 1, F = 1/2
    assert _edge(ridge, _line(10), thresholds=[0.2], thin=False)["odsF"] == pytest.approx(50.0)
    # NMS keeps the centre column; its smoothing lowers the two line ends below 0.2 -> P = 1, R = 14/16
    scores = _edge(ridge, _line(10), thresholds=[0.2], thin=False, nms=True)
    assert (scores["odsP"], scores["odsR"]) == pytest.approx((100.0, 100 * 14 / 16))


# --- saliency --------------------------------------------------------------------------------------------------


def test_saliency_maxf_hand_value():
    pred = torch.tensor([0.92, 0.62, 0.32, 0.12, 0.99]).view(1, 1, 1, 5)
    label = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 5)
    valid = torch.tensor([True, True, True, True, False]).view(1, 1, 5)
    meter = SaliencyMeter()
    meter.update(pred, label, valid)
    scores = meter.compute()
    # best at t = 0.35 .. 0.60: predicted {0.92, 0.62}: P = 1, R = 2/3, F = 1.3 P R / (0.3 P + R)
    assert scores["maxF"] == pytest.approx(100 * 1.3 * (2 / 3) / (0.3 + 2 / 3))
    assert scores["maxF_threshold"] == pytest.approx(0.35)


# --- Delta_m, worker processes --------------------------------------------------------------------------


def test_delta_m_hand_value_with_a_lower_is_better_task():
    results = {"semseg": {"mIoU": 42.0}, "depth": {"rmse": 0.45}}
    references = {"semseg": {"mIoU": 40.0}, "depth": {"rmse": 0.50}}
    # semseg +5 %, depth (lower is better) +10 % -> 7.5
    assert delta_m(results, references, primary_metrics(parse_tasks("seg,depth"))) == pytest.approx(7.5)
    assert delta_m(results, references, primary_metrics(parse_tasks("seg"))) == pytest.approx(5.0)
    with pytest.raises(Mtl3dError, match="reference"):
        delta_m(results, {"semseg": {"mIoU": 40.0}}, primary_metrics(parse_tasks("semseg,depth")))


def _random_batches(kind: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(2, 12, 12, generator=g) > 0.1
    if kind == "seg":
        return torch.randint(0, 4, (2, 12, 12), generator=g), torch.randint(0, 4, (2, 12, 12), generator=g), valid
    if kind == "depth":
        return torch.rand(2, 1, 12, 12, generator=g) * 5, torch.rand(2, 1, 12, 12, generator=g) * 5, valid
    if kind == "normals":
        return torch.randn(2, 3, 12, 12, generator=g), torch.randn(2, 3, 12, 12, generator=g), valid
    if kind == "saliency":
        label = (torch.rand(2, 1, 12, 12, generator=g) > 0.8).float()
        return torch.rand(2, 1, 12, 12, generator=g), label, valid
    # boundaries: clean lines (the matching's random outlier graph makes cluttered maps vary between runs)
    shift, level = seed % 3, 0.2 + 0.3 * (seed % 2)
    pred = torch.stack([_line(9 + shift, 0.9) + _line(3, level), _line(10, 0.7) + _line(16 - shift, 0.45)])
    label = torch.stack([_line(10), _line(10) + _line(16)])
    return pred[:, None], label[:, None], torch.ones(2, SIZE, SIZE, dtype=torch.bool)


def test_edge_worker_processes_give_identical_counts():
    batch = _random_batches("edge", 3)
    serial, parallel = EdgeMeter(max_dist=0.05, thresholds=4), EdgeMeter(max_dist=0.05, thresholds=4, workers=2)
    serial.update(*batch)
    parallel.update(*batch)
    parallel.update(*batch)
    serial.update(*batch)
    assert parallel.compute() == serial.compute()
    assert all(torch.equal(v, parallel._stats[k]) for k, v in serial._stats.items())
    assert int(parallel._stats["images"]) == 4 and parallel._pool is None


def test_edge_counts_are_reproducible_on_cluttered_maps():
    # the matcher draws random outlier edges from a global generator: without reseeding, the count on this map
    # depends on how many matchings ran before it
    from pyEdgeEval._lib import correspond_pixels

    rng = np.random.default_rng(0)
    pred = torch.from_numpy(rng.random((1, 1, 30, 30)) > 0.6).float()
    label = torch.from_numpy(rng.random((1, 1, 30, 30)) > 0.7).float()
    states = []
    for calls_before in range(8):
        for _ in range(calls_before):
            correspond_pixels(rng.random((30, 30)) > 0.5, rng.random((30, 30)) > 0.5, max_dist=0.1)
        meter = EdgeMeter(max_dist=0.1, thresholds=[0.5], thin=False)
        meter.update(pred, label, torch.ones(1, 30, 30, dtype=torch.bool))
        meter.compute()
        states.append(meter._stats["counts"])
    assert all(torch.equal(states[0], s) for s in states)
