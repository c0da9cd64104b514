"""Each loss against values worked out by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from mtl3dcli import losses


def _all(shape) -> torch.Tensor:
    return torch.ones(shape, dtype=torch.bool)


def test_cross_entropy_hand_value_and_ignored_pixels():
    # two pixels, two classes: logits (0, 0) -> -log(1/2); logits (ln 3, 0) with target 0 -> -log(3/4)
    logits = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[1, 0]]])
    expected = (math.log(2.0) + math.log(4.0 / 3.0)) / 2
    assert losses.cross_entropy(logits, target, _all((1, 1, 2))).item() == pytest.approx(expected)
    valid = torch.tensor([[[True, False]]])  # the second pixel is ignored: its (here invalid) class never matters
    assert losses.cross_entropy(logits, torch.tensor([[[1, 255]]]), valid).item() == pytest.approx(math.log(2.0))


def test_l1_is_mean_absolute_error_over_valid_pixels():
    pred = torch.tensor([[[[1.0, 2.0, 10.0]]]])
    target = torch.tensor([[[[1.5, 0.0, 0.0]]]])
    assert losses.l1(pred, target, _all((1, 1, 3))).item() == pytest.approx((0.5 + 2.0 + 10.0) / 3)
    valid = torch.tensor([[[True, True, False]]])
    assert losses.l1(pred, target, valid).item() == pytest.approx(1.25)


def test_normals_l1_normalizes_the_prediction_and_sums_over_xyz():
    pred = torch.tensor([[[[3.0]], [[0.0]], [[4.0]]]])  # unit: (0.6, 0, 0.8)
    target = torch.tensor([[[[0.0]], [[0.0]], [[1.0]]]])
    assert losses.normals_l1(pred, target, _all((1, 1, 1))).item() == pytest.approx(0.6 + 0.0 + 0.2)
    assert losses.normals_l1(5 * target, target, _all((1, 1, 1))).item() == pytest.approx(0.0, abs=1e-7)


def test_balanced_binary_cross_entropy_weights_positives_and_negatives():
    logits = torch.zeros(1, 1, 1, 2)  # p = 0.5 everywhere: plain BCE is ln 2 per pixel
    target = torch.tensor([[[[1.0, 0.0]]]])
    assert losses.binary_cross_entropy(logits, target, _all((1, 1, 2))).item() == pytest.approx(math.log(2.0))
    # pos_weight 0.95: the positive weighs 0.95, the negative 0.05 -> mean (0.95 + 0.05) ln 2 / 2
    balanced = losses.binary_cross_entropy(logits, target, _all((1, 1, 2)), pos_weight=0.95)
    assert balanced.item() == pytest.approx(0.5 * math.log(2.0))


def test_self_balanced_weight_is_the_negative_fraction_of_valid_pixels():
    target = torch.tensor([[[[1.0, 0.0, 0.0, 1.0]]]])
    valid = torch.tensor([[[True, True, True, False]]])  # 1 positive, 2 negatives counted
    assert losses.negative_fraction(target, valid).item() == pytest.approx(2 / 3)
    logits = torch.zeros(1, 1, 1, 4)
    value = losses.binary_cross_entropy(logits, target, valid, losses.negative_fraction(target, valid))
    assert value.item() == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) * math.log(2.0) / 3)


@pytest.mark.parametrize("loss", [losses.l1, losses.normals_l1])
def test_no_valid_pixel_gives_zero_with_a_zero_gradient(loss):
    pred = torch.randn(1, 3, 2, 2, requires_grad=True)
    value = loss(pred, torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool))
    value.backward()
    assert value.item() == 0.0 and torch.count_nonzero(pred.grad) == 0
