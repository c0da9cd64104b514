"""Boundary detection scores with SEISM's protocol (odsF, oisF), as the hosts' papers report them."""

from __future__ import annotations

import functools
import multiprocessing
import sys
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import torch

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.metrics.base import Meter, check_batch

# SEISM's parameters/HED.txt, the boundary thresholds MTL-PyTorch, ATRC and InvPT evaluate with (101 values).
HED_THRESHOLDS: tuple[float, ...] = (0.001, *(k / 100 for k in range(1, 100)), 0.999)

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
    slow = True

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
        prediction, label, valid = check_batch(prediction, label, valid, 1)
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

    def compute(self) -> dict[str, float]:
        self._collect()
        precision, recall, f = precision_recall_f(self._stats["counts"].numpy())
        best = int(np.argmax(f))
        ois = precision_recall_f(self._stats["ois_counts"].numpy())[2]
        return {"odsF": 100.0 * float(f[best]), "odsP": 100.0 * float(precision[best]),
                "odsR": 100.0 * float(recall[best]), "ods_threshold": float(self.thresholds[best]),
                "oisF": 100.0 * float(ois)}
