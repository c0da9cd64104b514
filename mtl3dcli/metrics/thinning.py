"""Guo-Hall thinning with MATLAB's `bwmorph(mask, 'thin', Inf)` semantics, the thinning SEISM applies to every
thresholded edge map, evaluated only at foreground pixels (NMS maps are sparse).

Hand-written because no installed library has it right: pyEdgeEval's `binary_thin` stops after the first
sub-iteration that deletes nothing (MATLAB stops after a whole round without change), which also makes it depend on
other connected components; its `bwmorph_thin` fails on numpy 2; OpenCV's thinning is in the contrib build only.
"""

from __future__ import annotations

import numpy as np

# Neighbour k of a pixel sets bit k of its code: x1..x8 of Guo & Hall, counter-clockwise from east.
NEIGHBOURS: tuple[tuple[int, int], ...] = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _deletion_table(second: bool) -> np.ndarray:
    """(256,) bool: whether a foreground pixel with that neighbour code is deleted in sub-iteration 1 (G1, G2, G3) or
    2 (G1, G2, G3') of Guo & Hall's algorithm A1 (CACM 32(3), 1989), as MATLAB's lutthin1 / lutthin2."""
    table = np.zeros(256, dtype=bool)
    for code in range(256):
        x = [(code >> k) & 1 for k in range(8)]  # x[0] = x1 ... x[7] = x8
        crossings = sum(not x[i] and (x[i + 1] or x[(i + 2) % 8]) for i in (0, 2, 4, 6))
        n1 = sum(x[k] or x[k - 1] for k in (1, 3, 5, 7))
        n2 = sum(x[k] or x[(k + 1) % 8] for k in (1, 3, 5, 7))
        if second:  # G3': (x6 | x7 | ~x4) & x5 == 0
            g3 = not ((x[5] or x[6] or not x[3]) and x[4])
        else:  # G3: (x2 | x3 | ~x8) & x1 == 0
            g3 = not ((x[1] or x[2] or not x[7]) and x[0])
        table[code] = crossings == 1 and 2 <= min(n1, n2) <= 3 and g3
    return table


DELETE_TABLES = (_deletion_table(False), _deletion_table(True))


def neighbour_offsets(width: int) -> np.ndarray:
    """Flat-index offsets (8,) of the NEIGHBOURS in a row-major image `width` pixels wide."""
    return np.array([dy * width + dx for dy, dx in NEIGHBOURS], dtype=np.int64)


def thin_pixels(image: np.ndarray, pixels: np.ndarray, offsets: np.ndarray) -> None:
    """Thin, in place, the foreground `pixels` (flat indices, int64) of a flat bool `image` whose border is
    background (so every neighbour index exists); `offsets` = neighbour_offsets(padded width).

    Sub-iterations 1 and 2 alternate, each deleting in parallel the pixels whose code the table marks, until a whole
    round deletes nothing (MATLAB's stopping rule). Only `pixels` are examined: thinning only deletes, and a pixel's
    decision depends on its 8-connected component alone, so `pixels` may be any union of whole components.
    """
    while True:
        deleted = False
        for table in DELETE_TABLES:
            code = image[pixels + offsets[0]].view(np.uint8).copy()
            for bit in range(1, 8):
                code |= image[pixels + offsets[bit]].view(np.uint8) << bit
            delete = table[code]
            if delete.any():
                deleted = True
                image[pixels[delete]] = False
                pixels = pixels[~delete]
        if not deleted:
            return


def thin(mask: np.ndarray) -> np.ndarray:
    """MATLAB's bwmorph(mask, 'thin', Inf) of a (H, W) bool mask, as a new (H, W) bool array.

    Example: a 3 x 10 bar thins to the middle 8 pixels of its middle row; a one-pixel line is left unchanged."""
    height, width = mask.shape
    padded = np.zeros((height + 2, width + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask
    flat = padded.reshape(-1)
    thin_pixels(flat, np.flatnonzero(flat), neighbour_offsets(width + 2))
    return padded[1:-1, 1:-1].copy()
