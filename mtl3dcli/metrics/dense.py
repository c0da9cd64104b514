"""Segmentation, depth, surface-normal and saliency meters with the standard MTL codebases' definitions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.meta import IGNORE_INDEX
from mtl3dcli.metrics.base import EPS, Meter, check_batch


# --- segmentation ----------------------------------------------------------------------------------------------

def confusion_matrix(prediction: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts (K, K) int64, rows = ground-truth class, columns = predicted class, from flat int64 ids in [0, K)."""
    index = label.long() * num_classes + prediction.long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """Per-class IoU (K,) = tp / max(tp + fp + fn, eps); a class absent from both prediction and label gets 0."""
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return tp / union.clamp_min(EPS)


class ConfusionMeter(Meter):
    """mIoU over all K classes of the dataset (an absent class counts 0, as MTL-PyTorch), pixel accuracy, mean class
    accuracy (over classes present in the labels) and per-class IoU "IoU/<name>", all in percent."""

    primary = "mIoU"
    higher_is_better = True
    protocol = "confusion matrix pooled over the split, ignore 255, mean IoU over all classes"

    def __init__(self, class_names: list[str]):
        if not class_names:
            raise Mtl3dError("a segmentation metric needs the dataset's class names (meta.json 'classes')")
        self.class_names = list(class_names)
        super().__init__()

    def _zeros(self) -> dict[str, torch.Tensor]:
        k = len(self.class_names)
        return {"confusion": torch.zeros(k, k, dtype=torch.int64)}

    def update(self, prediction: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> None:
        prediction, label, valid = check_batch(prediction, label, valid, None)
        k = len(self.class_names)
        keep = valid & (label != IGNORE_INDEX)
        pred, gt = prediction[keep], label[keep]
        if gt.numel() and (gt.min() < 0 or gt.max() >= k):
            bad = int(gt[(gt < 0) | (gt >= k)][0])
            raise Mtl3dError(f"label value {bad} is not a class id (0..{k - 1}) or {IGNORE_INDEX} (ignore)")
        if pred.numel() and (pred.min() < 0 or pred.max() >= k):
            raise ValueError(f"predicted class ids must lie in 0..{k - 1}")
        self._stats["confusion"] += confusion_matrix(pred, gt, k)

    def compute(self) -> dict[str, float]:
        confusion = self._stats["confusion"].double()
        iou = class_iou(confusion)
        per_class = confusion.sum(1)
        present = per_class > 0
        accuracy = confusion.diagonal()[present] / per_class[present]
        scores = {
            "mIoU": 100.0 * float(iou.mean()),
            "pixAcc": 100.0 * float(confusion.diagonal().sum() / confusion.sum().clamp_min(EPS)),
            "mAcc": 100.0 * float(accuracy.mean()) if present.any() else 0.0,
        }
        scores.update({f"IoU/{name}": 100.0 * float(v) for name, v in zip(self.class_names, iou)})
        return scores


# --- depth -----------------------------------------------------------------------------------------------------

class DepthMeter(Meter):
    """Depth errors pooled over every valid pixel of the split (label > 0): rmse = sqrt(sum sq err / n), not a mean of
    per-image RMSEs, plus log_rmse, abs_rel, sq_rel, log10 and delta1..3 (% with max(p/g, g/p) < 1.25^k).

    As MTL-PyTorch / InvPT, predictions are clamped to >= 1e-9 m before any error, so a zero prediction costs a large
    log error instead of being skipped."""

    primary = "rmse"
    higher_is_better = False
    protocol = "errors pooled over valid pixels of the split (label > 0), prediction clamped to >= 1e-9"

    def _zeros(self) -> dict[str, torch.Tensor]:
        zero = torch.zeros((), dtype=torch.float64)
        return {"pixels": torch.zeros((), dtype=torch.int64), "sq_err": zero.clone(), "log_sq_err": zero.clone(),
                "abs_rel": zero.clone(), "sq_rel": zero.clone(), "log10": zero.clone(),
                "within": torch.zeros(3, dtype=torch.int64)}

    def update(self, prediction: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> None:
        prediction, label, valid = check_batch(prediction, label, valid, 1)
        gt = label[:, 0].double()
        keep = valid & (gt > 0)
        gt = gt[keep]
        pred = prediction[:, 0].double()[keep].clamp_min(1e-9)
        err = pred - gt
        ratio = torch.maximum(pred / gt, gt / pred)
        s = self._stats
        s["pixels"] += gt.numel()
        s["sq_err"] += (err**2).sum()
        s["log_sq_err"] += ((pred.log() - gt.log()) ** 2).sum()
        s["abs_rel"] += (err.abs() / gt).sum()
        s["sq_rel"] += (err**2 / gt).sum()
        s["log10"] += (pred.log10() - gt.log10()).abs().sum()
        s["within"] += torch.stack([(ratio < 1.25**k).sum() for k in (1, 2, 3)])

    def compute(self) -> dict[str, float]:
        s = self._stats
        n = max(int(s["pixels"]), 1)
        within = s["within"].double() / n * 100.0
        return {
            "rmse": math.sqrt(float(s["sq_err"]) / n),
            "log_rmse": math.sqrt(float(s["log_sq_err"]) / n),
            "abs_rel": float(s["abs_rel"]) / n,
            "sq_rel": float(s["sq_rel"]) / n,
            "log10": float(s["log10"]) / n,
            "delta1": float(within[0]), "delta2": float(within[1]), "delta3": float(within[2]),
        }


# --- surface normals -------------------------------------------------------------------------------------------

def normal_angles(prediction: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Angles in degrees (N,) between vectors (N, 3); both are normalized first, the cosine clamped to [-1, 1]."""
    cos = (F.normalize(prediction.double(), dim=-1, eps=1e-12) * F.normalize(label.double(), dim=-1, eps=1e-12)).sum(-1)
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


class NormalsMeter(Meter):
    """Angular error in degrees pooled over valid pixels: mean, median, rmse and % below 11.25, 22.5, 30.

    mean, rmse and the % within are exact (running sums and counts). The median comes from a histogram of all angles
    with `bin_deg`-wide bins (default 0.01 degree, 18000 bins over 0..180) instead of storing every angle: it is the
    centre of the bin holding the middle rank (the mean of the two middle ranks' bins for an even count), so it is
    within bin_deg / 2 of numpy's median."""

    primary = "mean"
    higher_is_better = False
    protocol = "angles pooled over valid pixels; median from a 0.01-degree histogram"
    THRESHOLDS = (11.25, 22.5, 30.0)

    def __init__(self, bin_deg: float = 0.01):
        self.bin_deg = bin_deg
        self.bins = int(round(180.0 / bin_deg))
        super().__init__()

    def _zeros(self) -> dict[str, torch.Tensor]:
        zero = torch.zeros((), dtype=torch.float64)
        return {"pixels": torch.zeros((), dtype=torch.int64), "sum": zero.clone(), "sum_sq": zero.clone(),
                "within": torch.zeros(len(self.THRESHOLDS), dtype=torch.int64),
                "histogram": torch.zeros(self.bins, dtype=torch.int64)}

    def update(self, prediction: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> None:
        prediction, label, valid = check_batch(prediction, label, valid, 3)
        keep = valid & (label.norm(dim=1) > 0)
        angles = normal_angles(prediction.movedim(1, -1)[keep], label.movedim(1, -1)[keep])
        s = self._stats
        s["pixels"] += angles.numel()
        s["sum"] += angles.sum()
        s["sum_sq"] += (angles**2).sum()
        s["within"] += torch.stack([(angles < t).sum() for t in self.THRESHOLDS])
        index = (angles / self.bin_deg).floor().long().clamp(0, self.bins - 1)
        s["histogram"] += torch.bincount(index, minlength=self.bins)

    def _median(self) -> float:
        histogram = self._stats["histogram"]
        n = int(histogram.sum())
        if n == 0:
            return 0.0
        cumulative = histogram.cumsum(0)
        ranks = torch.tensor([(n - 1) // 2, n // 2])
        bins = torch.searchsorted(cumulative, ranks, right=True)
        return float(((bins.double() + 0.5) * self.bin_deg).mean())

    def compute(self) -> dict[str, float]:
        s = self._stats
        n = max(int(s["pixels"]), 1)
        scores = {
            "mean": float(s["sum"]) / n,
            "median": self._median(),
            "rmse": math.sqrt(float(s["sum_sq"]) / n),
        }
        scores.update({f"{t:g}": 100.0 * int(c) / n for t, c in zip(self.THRESHOLDS, s["within"])})
        return scores



# --- saliency --------------------------------------------------------------------------------------------------

SALIENCY_VARIANTS = ("invpt", "mtl-pytorch")


class SaliencyMeter(Meter):
    """maxF (percent) and the threshold where it is reached, with one of two published definitions (not comparable
    with each other), chosen by `variant` and named in `protocol`; labels are label > 0.5, invalid pixels ignored.

    "invpt" (InvPT / ATRC): 19 thresholds 0.05..0.95, predicted = prob >= t; true, predicted and actual positives
    pooled over the split; F_beta with beta^2 = 0.3 (0 where undefined); maxF = max over thresholds.
    "mtl-pytorch" (MTL-PyTorch / ASTMT's eval_sal): 15 thresholds linspace(0.2, 0.9), predicted = prob > t; per image
    precision tp / (tp + fp + 1e-12) and recall tp / (tp + fn + 1e-12), each averaged over the images; F1 of the
    two averages (2PR / (P + R + 1e-12)); maxF = max over thresholds.
    """

    primary = "maxF"
    higher_is_better = True

    def __init__(self, variant: str = "invpt"):
        if variant not in SALIENCY_VARIANTS:
            raise Mtl3dError(f"saliency variant must be one of {', '.join(SALIENCY_VARIANTS)}, got {variant!r}")
        self.variant = variant
        if variant == "invpt":
            self.thresholds = torch.arange(1, 20, dtype=torch.float64) / 20
            self.protocol = ("InvPT maxF: 19 thresholds 0.05..0.95, prob >= t, counts pooled over the split, "
                             "beta^2 = 0.3")
        else:
            self.thresholds = torch.linspace(0.2, 0.9, 15, dtype=torch.float64)
            self.protocol = ("MTL-PyTorch maxF: 15 thresholds 0.2..0.9, prob > t, per-image precision and recall "
                             "averaged over images, F1 of the averages")
        super().__init__()

    def _zeros(self) -> dict[str, torch.Tensor]:
        if self.variant == "invpt":
            zeros = torch.zeros(len(self.thresholds), dtype=torch.int64)
            return {"true_positive": zeros.clone(), "predicted_positive": zeros.clone(), "positive": zeros.clone()}
        zeros = torch.zeros(len(self.thresholds), dtype=torch.float64)
        return {"precision_sum": zeros.clone(), "recall_sum": zeros.clone(),
                "images": torch.zeros((), dtype=torch.int64)}

    def update(self, prediction: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> None:
        prediction, label, valid = check_batch(prediction, label, valid, 1)
        s = self._stats
        if self.variant == "invpt":
            pred = prediction[:, 0][valid].double()
            gt = label[:, 0][valid] > 0.5
            predicted = pred[None, :] >= self.thresholds[:, None]  # (T, N)
            s["true_positive"] += (predicted & gt).sum(1)
            s["predicted_positive"] += predicted.sum(1)
            s["positive"] += int(gt.sum())
            return
        pred = prediction[:, 0].double()  # (B, H, W)
        gt = (label[:, 0] > 0.5) & valid
        predicted = (pred[:, None] > self.thresholds[None, :, None, None]) & valid[:, None]  # (B, T, H, W)
        true_positive = (predicted & gt[:, None]).sum((2, 3)).double()
        s["precision_sum"] += (true_positive / (predicted.sum((2, 3)) + 1e-12)).sum(0)
        s["recall_sum"] += (true_positive / (gt.sum((1, 2))[:, None] + 1e-12)).sum(0)
        s["images"] += len(pred)

    def compute(self) -> dict[str, float]:
        s = {key: value.double() for key, value in self._stats.items()}
        if self.variant == "invpt":
            precision = s["true_positive"] / s["predicted_positive"]
            recall = s["true_positive"] / s["positive"]
            b2 = 0.3  # beta^2
            f = ((1 + b2) * precision * recall / (b2 * precision + recall)).nan_to_num(nan=0.0)
        else:
            images = s["images"].clamp_min(1)
            precision, recall = s["precision_sum"] / images, s["recall_sum"] / images
            f = 2 * precision * recall / (precision + recall + 1e-12)
        best = int(f.argmax())
        return {"maxF": 100.0 * float(f[best]), "maxF_threshold": float(self.thresholds[best])}
