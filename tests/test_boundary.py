"""Boundary odsF: hand-worked maps, the threshold-sweep shortcuts against a direct computation, the exact matching
against pyEdgeEval's port of BSDS's correspondPixels, thinning and NMS."""

from __future__ import annotations

import math
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch
from scipy import ndimage, sparse
from scipy.sparse.csgraph import maximum_flow

from mtl3dcli.derive import boundaries_from_segmentation
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.metrics import HED_THRESHOLDS, EdgeMeter, boundary_counts, precision_recall_f
from mtl3dcli.metrics.boundary import _worker_context, edge_nms
from mtl3dcli.metrics.edge_matching import IncrementalMatching
from mtl3dcli.metrics.thinning import thin

SIZE = 20  # diagonal 28.28 px; max_dist 0.05 -> 1.41 px tolerance


def _line(col: int, value: float = 1.0, size: int = SIZE) -> torch.Tensor:
    image = torch.zeros(size, size)
    image[2:18, col] = value
    return image


def _edge(pred: torch.Tensor, label: torch.Tensor, thresholds=5, **options) -> dict[str, float]:
    meter = EdgeMeter(max_dist=0.05, thresholds=thresholds, **options)
    meter.update(pred[None, None], label[None, None], torch.ones(1, *pred.shape, dtype=torch.bool))
    return meter.compute()


def _scene(height: int, width: int, regions: int, seed: int) -> np.ndarray:
    """Ground-truth boundaries (bool) of a random Voronoi partition, 2 px thick as NYUD's."""
    rng = np.random.default_rng(seed)
    centres = rng.random((regions, 2)) * (height, width)
    rows, cols = np.mgrid[:height, :width]
    regions_map = ((rows[..., None] - centres[:, 0]) ** 2 + (cols[..., None] - centres[:, 1]) ** 2).argmin(-1)
    return boundaries_from_segmentation(regions_map) > 0


def _trained_looking(boundary: np.ndarray, seed: int, noise: float, sigma: float = 2.0) -> np.ndarray:
    """A plausible network output: the ground truth blurred (peak 1) plus uniform noise, clipped to [0, 1]."""
    blurred = ndimage.gaussian_filter(boundary.astype(np.float64), sigma)
    noisy = blurred / blurred.max() + noise * np.random.default_rng(seed).random(boundary.shape)
    return np.clip(noisy, 0.0, 1.0)


# --- hand-worked maps (no NMS: the answers count raw pixels) ---------------------------------------------------


def test_edge_shift_within_tolerance_matches():
    scores = _edge(_line(11, 0.9), _line(10), nms=False)
    assert (scores["odsF"], scores["odsP"], scores["odsR"], scores["oisF"]) == pytest.approx((100, 100, 100, 100))


def test_edge_shift_beyond_tolerance_does_not_match():
    assert _edge(_line(13, 0.9), _line(10), nms=False)["odsF"] == 0.0


def test_edge_ods_picks_the_best_threshold():
    # thresholds 1/6 .. 5/6: at 1/6 the spurious 0.3 line is kept (P = 16/32, R = 1, F = 2/3); from 1/3 on only the
    # true line survives (F = 1)
    pred = _line(10, 0.9) + _line(3, 0.3)
    scores = _edge(pred, _line(10), nms=False)
    assert scores["odsF"] == pytest.approx(100.0)
    assert scores["ods_threshold"] == pytest.approx(2 / 6)
    scores = _edge(pred, _line(10), thresholds=[0.1], nms=False)
    assert (scores["odsF"], scores["odsP"], scores["odsR"]) == pytest.approx((100 * 2 * 0.5 / 1.5, 50.0, 100.0))


def test_edge_matching_is_one_to_one():
    # two predicted lines 1 px either side of one true line: each true pixel matches one predicted pixel only
    scores = _edge(_line(9, 0.9) + _line(11, 0.9), _line(10), thresholds=[0.5], nms=False)
    assert (scores["odsP"], scores["odsR"]) == pytest.approx((50.0, 100.0))


def test_edge_padding_is_cropped_before_matching():
    # a 2 px shift is beyond 0.05 x 28.3 px; padded to 40x40 the diagonal would allow 2.8 px if padding counted
    pred, label = torch.zeros(40, 40), torch.zeros(40, 40)
    pred[:SIZE, :SIZE], label[:SIZE, :SIZE] = _line(12, 0.9), _line(10)
    pred[30, 5:35] = 0.9  # a spurious edge inside the padding is ignored too
    valid = torch.zeros(1, 40, 40, dtype=torch.bool)
    valid[0, :SIZE, :SIZE] = True
    meter = EdgeMeter(max_dist=0.05, thresholds=5, nms=False)
    meter.update(pred[None, None], label[None, None], valid)
    assert meter.compute()["odsF"] == 0.0
    meter = EdgeMeter(max_dist=0.05, thresholds=5, nms=False)
    pred[:SIZE, :SIZE] = _line(11, 0.9)
    meter.update(pred[None, None], label[None, None], valid)
    assert meter.compute()["odsF"] == pytest.approx(100.0)


def test_edge_defaults_follow_the_hosts_protocol():
    assert len(HED_THRESHOLDS) == 101 and HED_THRESHOLDS[:2] == (0.001, 0.01) and HED_THRESHOLDS[-1] == 0.999
    meter = EdgeMeter(max_dist=0.011)
    assert meter.nms and meter.thin and len(meter.thresholds) == 101
    assert meter.protocol == (
        "SEISM odsF: NMS (fast_nms), the 101 HED thresholds, prob > t, thinning (bwmorph thin), maxDist 0.011 x "
        "diagonal, exact maximum one-to-one matching, counts pooled over the split")
    old = EdgeMeter(max_dist=0.0075, thresholds=99, nms=False)
    assert old.thresholds[[0, -1]] == pytest.approx([0.01, 0.99])
    assert old.protocol.startswith("SEISM odsF: no NMS, 99 evenly spaced thresholds,")
    assert "maxDist 0.0075" in old.protocol
    with pytest.raises(Mtl3dError):
        EdgeMeter(max_dist=3.0)


# --- NMS and thinning -------------------------------------------------------------------------------------------


def test_nms_leaves_a_one_pixel_line_on_the_ridge():
    ridge = np.zeros((30, 30))
    ridge[2:28, 9], ridge[2:28, 10], ridge[2:28, 11] = 0.4, 0.9, 0.4
    suppressed = edge_nms(ridge)
    assert set(np.flatnonzero(suppressed.any(0))) == {10}
    # away from the 5 px border ramp, the crest keeps its [1, 2, 1] / 4 smoothing: (0.4 + 2 * 0.9 + 0.4) / 4
    assert suppressed[7:23, 10] == pytest.approx(np.full(16, 0.65))
    assert not edge_nms(np.zeros((8, 8))).any()
    strip = np.full((1, 6), 0.5)  # one pixel wide: no gradient, nothing to suppress across
    assert (edge_nms(strip) == strip).all()


def test_nms_keeps_the_crest_of_a_wide_ridge_in_the_meter():
    ridge = _line(9, 0.4) + _line(10, 0.9) + _line(11, 0.4)
    # no NMS, no thinning: 48 edge pixels, 16 can be matched one-to-one -> P = 1/3, R = 1, F = 1/2
    assert _edge(ridge, _line(10), thresholds=[0.2], thin=False, nms=False)["odsF"] == pytest.approx(50.0)
    # NMS keeps the centre column; the border ramp lowers its two end pixels below 0.2 -> P = 1, R = 14/16
    scores = _edge(ridge, _line(10), thresholds=[0.2], thin=False)
    assert (scores["odsP"], scores["odsR"]) == pytest.approx((100.0, 100 * 14 / 16))


def test_thinning_hand_shapes():
    bar = np.zeros((7, 12), dtype=bool)
    bar[2:5, 1:11] = True
    expected = np.zeros_like(bar)
    expected[3, 2:10] = True
    assert (thin(bar) == expected).all()
    line = np.zeros((6, 6), dtype=bool)
    line[np.arange(6), np.arange(6)] = True
    assert (thin(line) == line).all()


def test_thinning_matches_pyedgeeval_on_nms_maps():
    from pyEdgeEval.preprocess import binary_thin

    boundary = _scene(96, 128, 10, seed=0)
    suppressed = edge_nms(_trained_looking(boundary, seed=0, noise=0.3))
    for threshold in (0.01, 0.1, 0.3, 0.6):
        assert (thin(suppressed > threshold) == binary_thin(suppressed > threshold)).all()


# --- the threshold sweep against a direct computation -----------------------------------------------------------


def _bipartite_maximum(adjacency: np.ndarray) -> int:
    """Maximum matching of a dense bool (n, m) bipartite adjacency, as a unit-capacity max flow (an independent
    algorithm)."""
    if not adjacency.any():
        return 0
    n, m = adjacency.shape
    source, sink = n + m, n + m + 1
    pairs = np.nonzero(adjacency)
    rows = np.concatenate([np.full(n, source), pairs[0], n + np.arange(m)])
    cols = np.concatenate([np.arange(n), n + pairs[1], np.full(m, sink)])
    graph = sparse.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(n + m + 2, n + m + 2))
    return int(maximum_flow(graph, source, sink, method="dinic").flow_value)


def _maximum_matching(edges: np.ndarray, boundary: np.ndarray, radius: float) -> int:
    """Maximum one-to-one matching of edge and boundary pixels at most `radius` px apart."""
    (er, ec), (gr, gc) = np.nonzero(edges), np.nonzero(boundary)
    return _bipartite_maximum((er[:, None] - gr) ** 2 + (ec[:, None] - gc) ** 2 <= radius * radius)


def _direct_counts(probability, boundary, thresholds, max_dist, thin_maps):
    radius = max_dist * math.hypot(*probability.shape)
    counts = []
    for threshold in thresholds:
        edges = probability > threshold
        if thin_maps:
            edges = thin(edges)
        matched = _maximum_matching(edges, boundary, radius)
        counts.append((matched, boundary.sum(), matched, edges.sum()))
    return np.array(counts, dtype=np.int64)


def test_threshold_sweep_equals_direct_per_threshold_counts():
    rng = np.random.default_rng(0)
    thresholds = np.linspace(0.05, 0.95, 19)
    for trial in range(16):
        height, width = rng.integers(12, 40, 2)
        probability = rng.random((height, width))
        if trial % 2:
            probability = ndimage.gaussian_filter(probability, 1.0)
            probability = (probability - probability.min()) / np.ptp(probability)
        if trial % 4 >= 2:
            probability = edge_nms(probability)
        boundary = rng.random((height, width)) > rng.uniform(0.5, 0.95)
        max_dist = rng.uniform(0.02, 0.15)
        for thin_maps in (True, False):
            assert (boundary_counts(probability, boundary, thresholds, max_dist, thin_maps)
                    == _direct_counts(probability, boundary, thresholds, max_dist, thin_maps)).all(), (trial, thin_maps)


def test_incremental_matching_stays_maximum_under_additions_and_removals():
    rng = np.random.default_rng(1)
    for _ in range(40):
        rows, cols = rng.integers(1, 30, 2)
        adjacency = sparse.csr_matrix(rng.random((rows, cols)) < rng.uniform(0.03, 0.3))
        matching, present = IncrementalMatching(adjacency), np.zeros(rows, dtype=bool)
        dense = adjacency.toarray()
        for pixel in rng.integers(0, rows, 30):
            (matching.remove if present[pixel] else matching.add)(int(pixel))
            present[pixel] = not present[pixel]
            pairs = [(p, g) for p, g in enumerate(matching.mate) if g >= 0]
            assert all(present[p] and dense[p, g] and matching.target_mate[g] == p for p, g in pairs)
            edges = np.zeros((rows, cols), dtype=bool)
            edges[present] = dense[present]
            assert matching.size == len(pairs) == _bipartite_maximum(edges)


# --- against pyEdgeEval's SEISM matching (BSDS correspondPixels) ------------------------------------------------


def _pyedgeeval_counts(probability, boundary, thresholds, max_dist):
    from pyEdgeEval._lib import correspond_pixels
    from pyEdgeEval.preprocess import binary_thin

    counts = []
    for threshold in thresholds:
        edges = probability > threshold
        edges = binary_thin(edges) if edges.any() else edges
        if edges.any() and boundary.any():
            match_edges, match_boundary, _, _ = correspond_pixels(edges, boundary, max_dist=max_dist)
            counts.append(((match_boundary > 0).sum(), boundary.sum(), (match_edges > 0).sum(), edges.sum()))
        else:
            counts.append((0, boundary.sum(), 0, edges.sum()))
    return np.array(counts, dtype=np.int64)


def _ods_f(counts: np.ndarray) -> float:
    return 100.0 * float(precision_recall_f(counts.sum(0))[2].max())


def _compare_with_pyedgeeval(maps, thresholds, max_dist=0.011) -> tuple[float, float]:
    thresholds = np.asarray(thresholds)
    ours = [boundary_counts(edge_nms(p), b, thresholds, max_dist) for p, b in maps]
    theirs = [_pyedgeeval_counts(edge_nms(p), b, thresholds, max_dist) for p, b in maps]
    return _ods_f(np.array(ours)), _ods_f(np.array(theirs))


@pytest.mark.slow
def test_odsf_within_a_tenth_of_pyedgeeval_on_demo_maps():
    # every 5th HED threshold: the property holds threshold by threshold, the full list only costs time
    maps = []
    for seed in range(3):
        boundary = _scene(96, 128, 10, seed)
        maps += [(_trained_looking(boundary, seed, noise=0.2 + 0.1 * seed, sigma=1.5), boundary),
                 (np.random.default_rng(seed).random(boundary.shape), boundary)]
    for pair in (maps[0::2], maps[1::2]):  # trained-looking, uniform noise
        ours, theirs = _compare_with_pyedgeeval(pair, HED_THRESHOLDS[::5])
        assert abs(ours - theirs) <= 0.1, (ours, theirs)


@pytest.mark.slow
def test_odsf_within_a_tenth_of_pyedgeeval_on_nyuv2_size_maps():
    # BSDS's matcher needs 3-10 s per 480x640 threshold: a few thresholds around each map's optimum
    boundary = _scene(480, 640, 40, seed=0)
    ours, theirs = _compare_with_pyedgeeval([(_trained_looking(boundary, 0, noise=0.1), boundary)], [0.06, 0.2, 0.5])
    assert abs(ours - theirs) <= 0.1, (ours, theirs)
    ours, theirs = _compare_with_pyedgeeval([(np.random.default_rng(0).random(boundary.shape), boundary)], [0.66, 0.7])
    assert abs(ours - theirs) <= 0.1, (ours, theirs)


# --- worker processes -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_edge_worker_processes_give_identical_counts():
    boundary = _scene(40, 48, 4, seed=3)
    probability = torch.from_numpy(np.stack([_trained_looking(boundary, s, noise=0.4) for s in range(3)])).float()
    label = torch.from_numpy(np.stack([boundary] * 3)).float()
    batch = probability[:, None], label[:, None], torch.ones(3, 40, 48, dtype=torch.bool)
    serial, parallel = EdgeMeter(max_dist=0.05, thresholds=9), EdgeMeter(max_dist=0.05, thresholds=9, workers=2)
    for meter in (serial, parallel):
        meter.update(*batch)
        meter.update(*batch)
    assert parallel.compute() == serial.compute()
    assert all(torch.equal(v, parallel._stats[k]) for k, v in serial._stats.items())
    assert int(parallel._stats["images"]) == 6 and parallel._pool is None


@pytest.mark.slow
def test_an_interrupted_evaluation_stops_the_edge_worker_pool(tiny_weights, monkeypatch):
    # Ctrl-C in the middle of an evaluation used to leave the pool to the interpreter's exit (a "Bad file descriptor"
    # traceback after the right error line, now and then): every meter is closed however the loop ends
    from mtl3dcli.inference import InferenceSession

    session = InferenceSession.from_weights(tiny_weights, device="cpu")
    meters = session.meters({"edge_workers": 1})
    monkeypatch.setattr(session, "meters", lambda *args: meters)
    boundary = _scene(40, 48, 4, seed=3)
    image = torch.from_numpy(np.stack([_trained_looking(boundary, 0, noise=0.4)] * 2)).float()

    def batches():
        meters["edge"].update(image[:, None], image[:, None] > 0.5, torch.ones(2, 40, 48, dtype=torch.bool))
        assert meters["edge"]._pool is not None and meters["edge"]._pending
        yield from ()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        session.evaluate(batches())
    assert meters["edge"]._pool is None and not meters["edge"]._pending
    meters["edge"].close()  # twice is harmless


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the signal mask from /proc")
@pytest.mark.slow
def test_edge_workers_leave_ctrl_c_to_the_parent():
    # Ctrl-C used to reach the fork server and its workers too, each printing a traceback (one while importing):
    # they now ignore SIGINT, and the parent (a training run saving its checkpoint, or evaluate) handles it.
    with ProcessPoolExecutor(1, mp_context=_worker_context()) as pool:
        worker = pool.submit(os.getpid).result()
        status = dict(line.split(":", 1) for line in open(f"/proc/{worker}/status") if ":" in line)
    assert int(status["SigIgn"], 16) & (1 << (signal.SIGINT - 1))
