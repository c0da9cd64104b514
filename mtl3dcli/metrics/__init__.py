"""Streaming evaluation metrics with the standard MTL codebases' definitions (MTI-Net / MTL-PyTorch, ATRC, InvPT),
so our numbers are comparable with the papers' tables.

Every meter accumulates sufficient statistics over a whole split (`update` per batch) and only turns them into
scores in `compute`; `state`/`merge` expose those statistics as tensors that add up, so data-parallel ranks (or
shards of a split) can be combined exactly. Scores that the papers print as percentages (mIoU, pixAcc, odsF, maxF,
% within a threshold) are in percent; errors (RMSE, angles) are in their natural units (metres, degrees).

Inputs (batched, as produced by `Task.activate` and `Task.to_tensor`):
  prediction  class ids (B, H, W) int64 | depth (B, 1, H, W) metres | normals (B, 3, H, W) | probs (B, 1, H, W)
  label       class ids (B, H, W) int64, 255 = ignore | depth (B, 1, H, W) | normals (B, 3, H, W) | (B, 1, H, W)
  valid       bool (B, H, W): the pixel carries a label and lies inside the image (not padding)
Everything is moved to the CPU and accumulated in float64 / int64.
"""

from mtl3dcli.metrics.base import EPS, Meter
from mtl3dcli.metrics.boundary import HED_THRESHOLDS, EdgeMeter, boundary_counts, image_boundary_counts, precision_recall_f
from mtl3dcli.metrics.dense import (ConfusionMeter, DepthMeter, NormalsMeter, SaliencyMeter, class_iou,
                                    confusion_matrix, normal_angles)
from mtl3dcli.metrics.summary import delta_m

__all__ = ["EPS", "HED_THRESHOLDS", "ConfusionMeter", "DepthMeter", "EdgeMeter", "Meter", "NormalsMeter",
           "SaliencyMeter", "boundary_counts", "class_iou", "confusion_matrix", "delta_m", "image_boundary_counts",
           "normal_angles", "precision_recall_f"]
