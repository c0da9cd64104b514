"""Colours for visualization: the class palette scheme and the depth colour ramp."""

from __future__ import annotations

import numpy as np


def default_palette(n: int) -> list[list[int]]:
    """A deterministic, well-separated palette (the PASCAL VOC bit-interleaving scheme)."""
    palette = []
    for index in range(n):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append([r, g, b])
    return palette


_COLORMAP = np.array(  # a perceptually ordered dark-blue -> yellow ramp (9 anchors, linearly interpolated)
    [[48, 18, 59], [65, 69, 171], [57, 125, 239], [27, 180, 213], [51, 223, 142],
     [149, 250, 61], [224, 217, 46], [251, 148, 31], [212, 61, 10]], dtype=np.float32)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (clipped; NaN -> 0) to uint8 RGB with a fixed dark-to-bright ramp."""
    x = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0).clip(0.0, 1.0) * (len(_COLORMAP) - 1)
    lo = np.floor(x).astype(np.int64).clip(0, len(_COLORMAP) - 2)
    frac = (x - lo)[..., None]
    return np.round(_COLORMAP[lo] * (1 - frac) + _COLORMAP[lo + 1] * frac).astype(np.uint8)
