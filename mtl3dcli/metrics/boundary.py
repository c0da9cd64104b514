"""Boundary detection scores with SEISM's protocol (odsF, oisF), as the hosts' papers report them."""

from __future__ import annotations

import contextlib
import gc
import math
import multiprocessing
import multiprocessing.forkserver
import signal
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import torch
from scipy import ndimage

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.metrics.base import Meter, check_batch
from mtl3dcli.metrics.edge_matching import IncrementalMatching, neighbour_graph
from mtl3dcli.metrics.thinning import neighbour_offsets, thin_pixels

# SEISM's parameters/HED.txt (101 values), the thresholds of the hosts' SEISM runs after HED's nms_process
# (MTL-PyTorch's own eval_edge.py writes 0.01..0.99 instead: EdgeMeter(thresholds=99)).
HED_THRESHOLDS: tuple[float, ...] = (0.001, *(k / 100 for k in range(1, 100)), 0.999)


def boundary_counts(probability: np.ndarray, boundary: np.ndarray, thresholds: np.ndarray, max_dist: float,
                    thin: bool = True) -> np.ndarray:
    """SEISM's per-image boundary counts at each threshold: (T, 4) int64 columns (cntR, sumR, cntP, sumP).

    probability (H, W) float, boundary (H, W) bool ground truth, thresholds (T,) ascending. At threshold t the edge
    map is `probability > t` (strict, as SEISM's read_one_cont_png), thinned to one pixel (MATLAB's bwmorph 'thin'
    Inf, see `thinning`) and matched one-to-one to the ground truth within max_dist x image diagonal, a maximum
    matching (see `edge_matching`; cntR = cntP = its size). sumR = ground-truth pixels, sumP = edge pixels.

    The edge maps come as changes from `edge_map_changes`; the matching is built once on the pixels that ever appear
    and updated for each change. The counts equal a direct computation per threshold (tests/test_boundary.py).
    """
    height, width = probability.shape
    counts = np.zeros((len(thresholds), 4), dtype=np.int64)
    counts[:, 1] = sum_r = int(boundary.sum())
    candidates, counts[:, 3], changes = edge_map_changes(probability, thresholds, thin)
    if not sum_r or not changes:
        return counts
    used = np.unique(np.concatenate([added for _, added, _ in changes]))
    adjacency, reachable = neighbour_graph(candidates[used], boundary, max_dist * math.hypot(height, width))
    vertex = np.full(len(candidates), -1, dtype=np.int64)  # candidate -> matching vertex, -1 if out of reach
    vertex[used[reachable]] = np.arange(len(reachable))
    change = {i: (added, removed) for i, added, removed in changes}
    with _garbage_collection_paused():
        matching = IncrementalMatching(adjacency)
        for i in range(len(thresholds) - 1, -1, -1):
            if i in change:
                added, removed = (vertex[pixels] for pixels in change[i])
                for v in added[added >= 0].tolist():
                    matching.add(v)
                for v in removed[removed >= 0].tolist():
                    matching.remove(v)
            counts[i, 0] = counts[i, 2] = matching.size
    return counts


@contextlib.contextmanager
def _garbage_collection_paused() -> Iterator[None]:
    """Pause Python's cycle collector: the matching builds ~10^5 lists that hold no cycles, and each collection
    pass would walk them all (half the build time, a tenth of the matching)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def edge_map_changes(probability: np.ndarray, thresholds: np.ndarray,
                     thin: bool = True) -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray, np.ndarray]]]:
    """The edge maps `probability > t` (thinned if `thin`) for ascending thresholds, swept from high to low (where
    they grow), as changes.

    Returns the candidate pixels (P,) (flat indices of probability > thresholds[0], by decreasing probability), the
    edge pixel count of each map (T,), and for each threshold index i whose map differs from the one above it (in
    decreasing i) the candidates (indices into the P) that its map adds and removes. A threshold that adds no pixel
    keeps the map. Thinning is redone only on the 8-connected components (of the lowest threshold's map) that
    gained pixels: it only deletes, and each component thins independently (see `thin_pixels`).
    """
    height, width = probability.shape
    values = probability.reshape(-1)
    candidates = np.flatnonzero(values > thresholds[0])
    candidates = candidates[np.argsort(-values[candidates], kind="stable")]
    above = np.searchsorted(-values[candidates], -np.asarray(thresholds), side="left")  # pixels > t per threshold
    if thin:
        rows, cols = np.divmod(candidates, width)
        position = (rows + 1) * (width + 2) + cols + 1  # in the zero-padded flat image `kept`
        kept = np.zeros((height + 2) * (width + 2), dtype=bool)
        offsets = neighbour_offsets(width + 2)
        labels, n_components = ndimage.label(values.reshape(height, width) > thresholds[0], np.ones((3, 3), bool))
        component = labels.reshape(-1)[candidates]
        dirty = np.zeros(n_components + 1, dtype=bool)
    sizes = np.zeros(len(thresholds), dtype=np.int64)
    changes: list[tuple[int, np.ndarray, np.ndarray]] = []
    done, size = 0, 0
    for i in range(len(thresholds) - 1, -1, -1):
        n = int(above[i])
        if n > done:
            if thin:
                dirty[component[done:n]] = True
                region = np.flatnonzero(dirty[component[:n]])
                dirty[:] = False
                pixels = position[region]
                before = kept[pixels]
                kept[pixels] = True
                thin_pixels(kept, pixels, offsets)
                after = kept[pixels]
                changes.append((i, region[after & ~before], region[before & ~after]))
                size += int(after.sum()) - int(before.sum())
            else:
                changes.append((i, np.arange(done, n), np.arange(0)))
                size = n
            done = n
        sizes[i] = size
    return candidates, sizes, changes


def image_boundary_counts(probability: np.ndarray, boundary: np.ndarray, valid: np.ndarray, thresholds: np.ndarray,
                          max_dist: float, thin: bool = True, nms: bool = True) -> np.ndarray | None:
    """`boundary_counts` for one image restricted to its valid pixels (H, W) bool: both maps are cropped to the
    valid bounding box (so padding does not enlarge the diagonal) and zeroed elsewhere; `edge_nms` (optional) runs
    on the crop. None when no pixel is valid."""
    rows, cols = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
    if rows.size == 0:
        return None
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    valid = valid[box]
    probability = np.where(valid, probability[box], 0.0).astype(np.float64)
    if nms:
        probability = np.where(valid, edge_nms(probability), 0.0)
    return boundary_counts(probability, boundary[box] & valid, thresholds, max_dist, thin)


def edge_nms(probability: np.ndarray) -> np.ndarray:
    """Non-maximum suppression of a (H, W) float64 edge map across the edge direction, as HED's nms_process before
    SEISM (pyEdgeEval's fast_nms: triangle smoothing r=1, orientation from second derivatives of an r=4
    smoothing, suppression radius 1, border suppression 5 px, multiplier 1.01). A blank map, or one a single pixel
    wide (no gradient), is returned as is."""
    if not probability.any() or min(probability.shape) < 2:
        return probability
    from pyEdgeEval.preprocess import fast_nms

    return fast_nms(probability)


def _worker_context() -> multiprocessing.context.BaseContext:
    """Processes forked from a clean server that has imported this module once (no fork of a CUDA/threaded parent,
    no torch import per worker). The server starts with Ctrl-C ignored, which it and every worker it forks inherit:
    Ctrl-C stops the parent (a training run saves its checkpoint), not each worker with a traceback."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "pyEdgeEval.preprocess"])
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: the server starts with the process's own handling
        return context
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)
    return context


def precision_recall_f(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(..., 4) counts (cntR, sumR, cntP, sumP) -> precision, recall, F1 (0 where undefined), pyEdgeEval's formulas."""
    from pyEdgeEval.common.metrics import compute_rec_prec_f1

    counts = np.asarray(counts, dtype=np.float64)
    recall, precision, f = compute_rec_prec_f1(counts[..., 0], counts[..., 1], counts[..., 2], counts[..., 3])
    return precision, recall, f


class EdgeMeter(Meter):
    """Boundary detection scores with SEISM's protocol as MTI-Net, ATRC and InvPT run it (in MATLAB):

    per image, NMS first (pyEdgeEval's fast_nms, the structured-edge NMS of their pipelines), then for each threshold
    t (default: SEISM's HED list, 101 values 0.001, 0.01..0.99, 0.999): edges = probability > t, thinned, matched
    one-to-one to the ground truth (label > 0.5) within `max_dist` x image diagonal (0.011 NYUD, 0.0075
    PASCAL-Context); counts pooled over the split per threshold. odsF = max over thresholds of the F-measure of the
    pooled counts (no interpolation between thresholds, as SEISM's general_ods), odsP / odsR at that threshold, oisF
    from the counts at each image's own best threshold. All in percent. `protocol` names the variant.

    thresholds: a sequence of values in [0, 1), or an int n for pyEdgeEval/BSDS's n evenly spaced values
    linspace(1/(n+1), 1 - 1/(n+1), n) (99 -> 0.01..0.99). nms=False thresholds the raw probabilities (the older
    variant): on 2-pixel-thick ground truth (NYUD, the synthetic demo) it can score several points higher, since
    NMS leaves one pixel across each boundary, of which at most half can then be matched (benchmarks/edge_eval.py
    prints both). Pixels outside `valid` are dropped by cropping to their bounding box (so padding does not enlarge
    the diagonal) and zeroing both maps elsewhere. The matched count is the exact maximum that BSDS's
    correspondPixels approximates (see `edge_matching`): odsF within 0.02 of pyEdgeEval's port of it in our tests,
    and about 1-2 CPU-seconds per 480x640 image instead of minutes; `workers` > 0 evaluates images in that many
    processes (identical results; `compute` waits for them).
    """

    primary = "odsF"
    higher_is_better = True
    slow = True

    def __init__(self, max_dist: float, thresholds: int | Sequence[float] = HED_THRESHOLDS, nms: bool = True,
                 thin: bool = True, workers: int = 0):
        if not 0 < max_dist < 1:
            raise Mtl3dError(f"boundary max_dist must be a fraction of the image diagonal in (0, 1), got {max_dist}")
        if isinstance(thresholds, int):
            if thresholds < 1:
                raise Mtl3dError(f"number of boundary thresholds must be >= 1, got {thresholds}")
            values = np.linspace(1.0 / (thresholds + 1), 1.0 - 1.0 / (thresholds + 1), thresholds)
            named = f"{thresholds} evenly spaced thresholds"
        else:
            values = np.asarray(sorted(float(t) for t in thresholds), dtype=np.float64)
            if values.size == 0 or values.min() < 0 or values.max() >= 1:
                raise Mtl3dError(f"boundary thresholds must be a non-empty list of values in [0, 1), got {thresholds}")
            named = "the 101 HED thresholds" if tuple(values) == HED_THRESHOLDS else f"{len(values)} thresholds"
        self.max_dist, self.thresholds, self.nms, self.thin = float(max_dist), values, nms, thin
        self.workers = max(int(workers), 0)
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[Future] = deque()
        self.protocol = (f"SEISM odsF: {'NMS (fast_nms)' if nms else 'no NMS'}, {named}, prob > t, "
                         f"{'thinning (bwmorph thin)' if thin else 'no thinning'}, maxDist {max_dist:g} x diagonal, "
                         "exact maximum one-to-one matching, counts pooled over the split")
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

    def close(self) -> None:
        """Drop the images still queued and stop the worker pool (waiting for the few images the workers are on), so
        an interrupted evaluation leaves no pool for the interpreter's exit to trip over."""
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def compute(self) -> dict[str, float]:
        self._collect()
        precision, recall, f = precision_recall_f(self._stats["counts"].numpy())
        best = int(np.argmax(f))
        ois = precision_recall_f(self._stats["ois_counts"].numpy())[2]
        return {"odsF": 100.0 * float(f[best]), "odsP": 100.0 * float(precision[best]),
                "odsR": 100.0 * float(recall[best]), "ods_threshold": float(self.thresholds[best]),
                "oisF": 100.0 * float(ois)}
