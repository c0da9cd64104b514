"""Metrics against answers worked out by hand on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.metrics import (
    ConfusionMeter,
    DepthMeter,
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
    assert meter.protocol.startswith("InvPT maxF")


def test_saliency_mtl_pytorch_averages_precision_and_recall_over_images():
    pred = torch.tensor([[0.95, 0.57, 0.62, 0.10, 0.99], [0.37, 0.28, 0.10, 0.10, 0.99]]).view(2, 1, 1, 5)
    label = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 1.0]]).view(2, 1, 1, 5)
    valid = torch.tensor([True, True, True, True, False]).expand(2, 5).reshape(2, 1, 5)
    meter = SaliencyMeter("mtl-pytorch")
    meter.update(pred, label, valid)
    # thresholds 0.2, 0.25, ..., 0.9 with prob > t; per image (P, R), then F1 of the means over the two images:
    #   t = 0.2, 0.25: image 1 (2/3, 1), image 2 (1/2, 1) -> F1(7/12, 1) = 14/19
    #   t = 0.3, 0.35: image 1 (2/3, 1), image 2 (1, 1)   -> F1(5/6, 1)  = 10/11  <- max
    #   t = 0.4..0.55: image 2 predicts nothing, (0, 0)    -> F1(1/3, 1/2) = 2/5
    scores = meter.compute()
    assert scores["maxF"] == pytest.approx(100 * 10 / 11)
    assert scores["maxF_threshold"] == pytest.approx(0.3)
    assert meter.protocol.startswith("MTL-PyTorch maxF")
    with pytest.raises(Mtl3dError):
        SaliencyMeter("astmt")


# --- Delta_m ---------------------------------------------------------------------------------------------------


def test_delta_m_hand_value_with_a_lower_is_better_task():
    results = {"semseg": {"mIoU": 42.0}, "depth": {"rmse": 0.45}}
    references = {"semseg": {"mIoU": 40.0}, "depth": {"rmse": 0.50}}
    # semseg +5 %, depth (lower is better) +10 % -> 7.5
    assert delta_m(results, references, primary_metrics(parse_tasks("seg,depth"))) == pytest.approx(7.5)
    assert delta_m(results, references, primary_metrics(parse_tasks("seg"))) == pytest.approx(5.0)
    with pytest.raises(Mtl3dError, match="reference"):
        delta_m(results, {"semseg": {"mIoU": 40.0}}, primary_metrics(parse_tasks("semseg,depth")))
