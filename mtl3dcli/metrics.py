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

from __future__ import annotations

import abc
import functools
import math
import multiprocessing
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from mtl3dcli.errors import Mtl3dError

if TYPE_CHECKING:
    from mtl3dcli.data.layout import DatasetMeta
    from mtl3dcli.tasks import Task

IGNORE_INDEX = 255
EPS = 1e-8  # the denominators' floor in MTL-PyTorch's eval (IoU = tp / max(tp + fp + fn, 1e-8))

# SEISM's parameters/HED.txt, the boundary thresholds MTL-PyTorch, ATRC and InvPT evaluate with (101 values).
HED_THRESHOLDS: tuple[float, ...] = (0.001, *(k / 100 for k in range(1, 100)), 0.999)


class Meter(abc.ABC):
    """A streaming metric over one split; its statistics are a dict of tensors that add up across meters."""

    primary: str  # key of the headline score in `compute()`
    higher_is_better: bool
    protocol: str  # one line naming the definition, for reports

    def __init__(self) -> None:
        self._stats = self._zeros()

    @abc.abstractmethod
    def _zeros(self) -> dict[str, torch.Tensor]:
        """Empty statistics (CPU, int64 or float64)."""

    @abc.abstractmethod
    def update(self, prediction: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> None:
        """Add one batch."""

    @abc.abstractmethod
    def compute(self) -> dict[str, float]:
        """All scores as plain floats, the primary one included."""

    def state(self) -> dict[str, torch.Tensor]:
        """Copies of the sufficient statistics (sum them across ranks, then `merge` or `load`)."""
        return {key: value.clone() for key, value in self._stats.items()}

    def merge(self, other_state: Mapping[str, torch.Tensor]) -> None:
        """Add another meter's `state()` (same class and options) to this one."""
        if set(other_state) != set(self._stats):
            raise ValueError(f"cannot merge {sorted(other_state)} into {type(self).__name__} {sorted(self._stats)}")
        for key, value in other_state.items():
            mine = self._stats[key]
            if value.shape != mine.shape:
                raise ValueError(f"{type(self).__name__}.{key}: shape {tuple(value.shape)} != {tuple(mine.shape)}")
            mine += value.detach().to(device="cpu", dtype=mine.dtype)

    def reset(self) -> None:
        self._stats = self._zeros()


def _batch(prediction: torch.Tensor, label: torch.Tensor, valid: torch.Tensor,
           channels: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check shapes and move to the CPU. channels None: class maps (B, H, W); else (B, C, H, W) with C = channels."""
    prediction, label, valid = (t.detach().cpu() for t in (prediction, label, valid))
    expected = valid.shape if channels is None else (valid.shape[0], channels, *valid.shape[1:])
    if valid.ndim != 3 or prediction.shape != expected or label.shape != expected:
        raise ValueError(f"expected prediction and label of shape {tuple(expected)} with valid (B, H, W), got "
                         f"{tuple(prediction.shape)}, {tuple(label.shape)}, {tuple(valid.shape)}")
    return prediction, label, valid.bool()


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
        prediction, label, valid = _batch(prediction, label, valid, None)
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
        prediction, label, valid = _batch(prediction, label, valid, 1)
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
        prediction, label, valid = _batch(prediction, label, valid, 3)
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


# --- boundaries ------------------------------------------------------------------------------------------------

MATCH_SEED = 1  # any non-zero value; 0 would make the matcher seed itself from the clock


@functools.cache
def _matcher_reseed() -> Callable[[], None] | None:
    """A function that reseeds the random generator of pyEdgeEval's correspondPixels port, or None if unavailable.

    BSDS's matcher adds random sparse outlier edges to its assignment graph from a C++ generator seeded from the
    clock, so counts on a cluttered map can vary by a pixel or two between runs and processes (in SEISM too).
    Reseeding before every call makes each image's counts a pure function of its maps: runs are reproducible and
    worker processes agree with in-process evaluation. The generator is a global object of the compiled module,
    reached through its exported C++ symbols."""
    import ctypes

    import pyEdgeEval._lib  # noqa: F401  (loads the extension module)

    try:
        library = ctypes.CDLL(sys.modules["pyEdgeEval._lib.correspond_pixels"].__file__)
        generator = ctypes.addressof(ctypes.c_char.in_dll(library, "_ZN6Random4randE"))
        reseed = library._ZN6Random6reseedEm  # Random::reseed(u_int64_t), `this` first
    except (AttributeError, KeyError, OSError, ValueError):
        return None
    reseed.argtypes, reseed.restype = [ctypes.c_void_p, ctypes.c_uint64], None
    return lambda: reseed(generator, MATCH_SEED)


def boundary_counts(probability: np.ndarray, boundary: np.ndarray, thresholds: np.ndarray, max_dist: float,
                    thin: bool = True) -> np.ndarray:
    """SEISM's per-image boundary counts at each threshold: (T, 4) int64 columns (cntR, sumR, cntP, sumP).

    probability (H, W) float, boundary (H, W) bool ground truth, thresholds (T,) ascending. At threshold t the edge
    map is `probability > t` (strict, as SEISM's read_one_cont_png), thinned to one pixel (pyEdgeEval's binary_thin,
    the same Guo-Hall thinning as MATLAB's bwmorph 'thin' Inf) and matched one-to-one to the ground truth with
    pyEdgeEval's port of correspondPixels (max_dist a fraction of the image diagonal, outlier cost 100), its random
    generator reseeded to MATCH_SEED before each call (see `_matcher_reseed`).
    cntR = matched ground-truth pixels, sumR = ground-truth pixels, cntP = matched edge pixels, sumP = edge pixels.
    """
    from pyEdgeEval._lib import correspond_pixels
    from pyEdgeEval.preprocess import binary_thin

    reseed = _matcher_reseed()
    counts = np.zeros((len(thresholds), 4), dtype=np.int64)
    sum_r = int(boundary.sum())
    previous_size, previous = -1, counts[0]
    for i, threshold in enumerate(thresholds):
        edges = probability > threshold
        size = int(edges.sum())
        if size == previous_size:  # ascending thresholds give nested maps: the same size means the same map
            counts[i] = previous
            continue
        if thin and size:
            edges = binary_thin(edges)
        sum_p = int(edges.sum())
        if sum_p == 0 or sum_r == 0:
            counts[i] = (0, sum_r, 0, sum_p)
        else:
            if reseed is not None:
                reseed()
            match_edges, match_boundary, _, _ = correspond_pixels(edges, boundary, max_dist=max_dist)
            counts[i] = (int((match_boundary > 0).sum()), sum_r, int((match_edges > 0).sum()), sum_p)
        previous_size, previous = size, counts[i]
    return counts


def image_boundary_counts(probability: np.ndarray, boundary: np.ndarray, valid: np.ndarray, thresholds: np.ndarray,
                          max_dist: float, thin: bool = True, nms: bool = False) -> np.ndarray | None:
    """`boundary_counts` for one image restricted to its valid pixels (H, W) bool: both maps are cropped to the
    valid bounding box (so padding does not enlarge the diagonal) and zeroed elsewhere; NMS (optional) runs on the
    crop. None when no pixel is valid."""
    rows, cols = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
    if rows.size == 0:
        return None
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    valid = valid[box]
    probability = np.where(valid, probability[box], 0.0).astype(np.float64)
    if nms:
        from pyEdgeEval.preprocess import fast_nms

        probability = np.where(valid, fast_nms(probability), 0.0)
    return boundary_counts(probability, boundary[box] & valid, thresholds, max_dist, thin)


def _worker_context() -> multiprocessing.context.BaseContext:
    """Processes forked from a clean server that has imported this module once (no fork of a CUDA/threaded parent,
    no torch import per worker)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "pyEdgeEval._lib", "pyEdgeEval.preprocess"])
    return context


def precision_recall_f(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(..., 4) counts (cntR, sumR, cntP, sumP) -> precision, recall, F1 (0 where undefined), pyEdgeEval's formulas."""
    from pyEdgeEval.common.metrics import compute_rec_prec_f1

    counts = np.asarray(counts, dtype=np.float64)
    recall, precision, f = compute_rec_prec_f1(counts[..., 0], counts[..., 1], counts[..., 2], counts[..., 3])
    return precision, recall, f


class EdgeMeter(Meter):
    """Boundary detection scores with SEISM's protocol (what MTL-PyTorch, ATRC and InvPT run in MATLAB):

    per image, for each threshold t (default: SEISM's HED list, 101 values 0.001, 0.01..0.99, 0.999): edges =
    probability > t, thinned, matched to the ground truth (label > 0.5) within `max_dist` x image diagonal
    (0.011 NYUD, 0.0075 PASCAL-Context); counts pooled over the split per threshold. odsF = max over thresholds of
    the F-measure of the pooled counts (no interpolation between thresholds, as SEISM's general_ods), odsP / odsR at
    that threshold, oisF from the counts at each image's own best threshold. All in percent.

    thresholds: a sequence of values in [0, 1), or an int n for pyEdgeEval/BSDS's n evenly spaced values
    linspace(1/(n+1), 1 - 1/(n+1), n) (99 -> 0.01..0.99). nms: first apply pyEdgeEval's fast_nms (the structured
    edges NMS: triangle smoothing, orientation from second derivatives, suppression), as done before SEISM for
    some hosts. Pixels outside `valid` are dropped by cropping to their bounding box (so padding does not enlarge
    the diagonal) and zeroing both maps elsewhere.

    The matching (BSDS's min-cost assignment) costs 0.1..5 s per threshold on a 448x576 image, i.e. minutes per
    image with noisy predictions, as SEISM in MATLAB: `workers` > 0 evaluates images in that many processes
    (results are identical; `state`/`compute` wait for them).
    """

    primary = "odsF"
    higher_is_better = True

    def __init__(self, max_dist: float, thresholds: int | Sequence[float] = HED_THRESHOLDS, nms: bool = False,
                 thin: bool = True, workers: int = 0):
        if not 0 < max_dist < 1:
            raise Mtl3dError(f"boundary max_dist must be a fraction of the image diagonal in (0, 1), got {max_dist}")
        if isinstance(thresholds, int):
            if thresholds < 1:
                raise Mtl3dError(f"number of boundary thresholds must be >= 1, got {thresholds}")
            values = np.linspace(1.0 / (thresholds + 1), 1.0 - 1.0 / (thresholds + 1), thresholds)
        else:
            values = np.asarray(sorted(float(t) for t in thresholds), dtype=np.float64)
            if values.size == 0 or values.min() < 0 or values.max() >= 1:
                raise Mtl3dError(f"boundary thresholds must be a non-empty list of values in [0, 1), got {thresholds}")
        self.max_dist, self.thresholds, self.nms, self.thin = float(max_dist), values, nms, thin
        self.workers = max(int(workers), 0)
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[Future] = deque()
        self.protocol = (f"SEISM odsF: {len(values)} thresholds, prob > t, {'NMS, ' if nms else ''}"
                         f"{'thinning, ' if thin else ''}maxDist {max_dist:g} of the diagonal, counts pooled")
        super().__init__()

    def _zeros(self) -> dict[str, torch.Tensor]:
        return {"counts": torch.zeros(len(self.thresholds), 4, dtype=torch.int64),
                "ois_counts": torch.zeros(4, dtype=torch.int64), "images": torch.zeros((), dtype=torch.int64)}

    def update(self, prediction: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> None:
        prediction, label, valid = _batch(prediction, label, valid, 1)
        options = (self.thresholds, self.max_dist, self.thin, self.nms)
        for image in zip(prediction[:, 0].float().numpy(), (label[:, 0] > 0.5).numpy(), valid.numpy()):
            if not self.workers:
                self._add(image_boundary_counts(*image, *options))
                continue
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=_worker_context())
            while len(self._pending) >= 4 * self.workers:  # bound the images held in memory
                self._add(self._pending.popleft().result())
            self._pending.append(self._pool.submit(image_boundary_counts, *image, *options))

    def _add(self, counts: np.ndarray | None) -> None:
        if counts is None:
            return
        best = int(np.argmax(precision_recall_f(counts)[2]))
        self._stats["counts"] += torch.from_numpy(counts)
        self._stats["ois_counts"] += torch.from_numpy(counts[best])
        self._stats["images"] += 1

    def _collect(self) -> None:
        """Wait for the images still in the worker pool, add them, and release the pool."""
        while self._pending:
            self._add(self._pending.popleft().result())
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def state(self) -> dict[str, torch.Tensor]:
        self._collect()
        return super().state()

    def reset(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._collect()
        super().reset()

    def compute(self) -> dict[str, float]:
        self._collect()
        precision, recall, f = precision_recall_f(self._stats["counts"].numpy())
        best = int(np.argmax(f))
        ois = precision_recall_f(self._stats["ois_counts"].numpy())[2]
        return {"odsF": 100.0 * float(f[best]), "odsP": 100.0 * float(precision[best]),
                "odsR": 100.0 * float(recall[best]), "ods_threshold": float(self.thresholds[best]),
                "oisF": 100.0 * float(ois)}


# --- saliency --------------------------------------------------------------------------------------------------

class SaliencyMeter(Meter):
    """maxF as InvPT / ATRC: for 19 thresholds 0.05..0.95, prediction >= t against label > 0.5, TP / predicted /
    actual positives pooled over the split; F_beta with beta^2 = 0.3 (0 where undefined); maxF = max over thresholds,
    in percent. (MTL-PyTorch instead averages per-image F with beta^2 = 1: a different protocol, not comparable.)"""

    primary = "maxF"
    higher_is_better = True

    def __init__(self, beta_squared: float = 0.3, steps: int = 20):
        self.beta_squared = beta_squared
        self.thresholds = torch.arange(1, steps, dtype=torch.float64) / steps
        self.protocol = (f"InvPT maxF: {len(self.thresholds)} thresholds, counts pooled over the split, "
                         f"beta^2 = {beta_squared:g}")
        super().__init__()

    def _zeros(self) -> dict[str, torch.Tensor]:
        zeros = torch.zeros(len(self.thresholds), dtype=torch.int64)
        return {"true_positive": zeros.clone(), "predicted_positive": zeros.clone(), "positive": zeros.clone()}

    def update(self, prediction: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> None:
        prediction, label, valid = _batch(prediction, label, valid, 1)
        pred = prediction[:, 0][valid].double()
        gt = label[:, 0][valid] > 0.5
        predicted = pred[None, :] >= self.thresholds[:, None]  # (T, N)
        s = self._stats
        s["true_positive"] += (predicted & gt).sum(1)
        s["predicted_positive"] += predicted.sum(1)
        s["positive"] += int(gt.sum())

    def compute(self) -> dict[str, float]:
        s = {key: value.double() for key, value in self._stats.items()}
        precision = s["true_positive"] / s["predicted_positive"]
        recall = s["true_positive"] / s["positive"]
        b2 = self.beta_squared
        f = ((1 + b2) * precision * recall / (b2 * precision + recall)).nan_to_num(nan=0.0)
        best = int(f.argmax())
        return {"maxF": 100.0 * float(f[best]), "maxF_threshold": float(self.thresholds[best])}


# --- sets of meters and multi-task summaries -------------------------------------------------------------------

def build_meters(tasks: Iterable[Task], meta: DatasetMeta) -> dict[str, Meter]:
    """One fresh meter per task, keyed by task name (the task's registry entry decides which meter)."""
    return {task.name: task.metric(meta) for task in tasks}


def summarize(meters: Mapping[str, Meter]) -> dict[str, dict[str, float]]:
    """{task name: {metric: value}} for every meter."""
    return {name: meter.compute() for name, meter in meters.items()}


def delta_m(results: Mapping[str, Mapping[str, float]], references: Mapping[str, Mapping[str, float]],
            tasks: Iterable[Task | str]) -> float:
    """Multi-task gain in percent: mean over tasks of s * (M_mt - M_st) / M_st * 100 on each task's primary metric,
    s = +1 if higher is better else -1 (Maninis et al. 2019; Vandenhende et al. 2021).

    results / references: {task name: {metric: value}} of the multi-task model and the single-task baselines."""
    from mtl3dcli.tasks import get_task

    terms = []
    for task in tasks:
        task = get_task(task) if isinstance(task, str) else task
        key = task.primary_metric
        if key not in results.get(task.name, {}):
            raise Mtl3dError(f"Delta_m: no {key!r} result for task {task.name}")
        if key not in references.get(task.name, {}):
            raise Mtl3dError(f"Delta_m: no single-task reference {key!r} for task {task.name}")
        reference = float(references[task.name][key])
        if reference == 0:
            raise Mtl3dError(f"Delta_m: the single-task reference {key!r} of task {task.name} is 0")
        sign = 1.0 if task.higher_is_better else -1.0
        terms.append(sign * (float(results[task.name][key]) - reference) / reference * 100.0)
    if not terms:
        raise Mtl3dError("Delta_m needs at least one task")
    return sum(terms) / len(terms)
