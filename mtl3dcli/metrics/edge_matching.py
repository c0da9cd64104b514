"""One-to-one matching of predicted to ground-truth boundary pixels, kept maximum while the predicted set changes.

BSDS's correspondPixels (what SEISM and pyEdgeEval call) solves a min-cost assignment in which leaving a pixel
unmatched costs 100 x maxDist, more than any real pair: its matched count is a maximum-cardinality matching of the
pixel pairs within maxDist, computed approximately (a sparse random outlier graph). We compute that maximum exactly.
Sweeping thresholds from high to low changes the predicted set a little at a time, so the matching is updated by
augmenting paths instead of being recomputed (scipy's Hopcroft-Karp can take minutes on these layered graphs:
scipy issue #26147).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


class IncrementalMatching:
    """Maximum matching between predicted pixels (rows of a CSR adjacency, (P, G)) and ground-truth pixels
    (columns), for a set of present predicted pixels that `add` and `remove` change; `size` is the matched count.

    Each call restores a maximum matching with one augmenting-path search. Three kinds of marks prune the searches:
    - dead predicted pixel: no alternating path from it reaches a free ground-truth pixel (set by a failed `add`);
    - closed ground-truth pixel: no alternating path from it reaches a free predicted pixel (a failed `remove`);
    - lookahead position per predicted pixel: its neighbours before it are matched (Pothen & Fan).
    Why marks stay true (Gallai-Edmonds): for a maximum matching, the pixels that some maximum matching leaves free
    do not depend on the matching, and a predicted (ground-truth) pixel is alive (open) iff it neighbours such a
    ground-truth (predicted) pixel. An `add` never enlarges the ground-truth set, and enlarges the predicted set only
    when the size stays, so it expires the closed marks then; a `remove` never enlarges the predicted set, and
    enlarges the ground-truth set only when the size drops, so it expires the dead marks then (an epoch counter
    expires a whole kind at once) and rewinds the lookahead of the freed pixel's neighbours.
    """

    def __init__(self, adjacency: sparse.csr_matrix):
        count, targets = adjacency.shape
        indices, indptr = adjacency.indices.tolist(), adjacency.indptr.tolist()
        self.neighbours = [indices[start:end] for start, end in zip(indptr, indptr[1:])]
        # the transpose, with each pair's position in the predicted pixel's list (to rewind its lookahead)
        positions = np.arange(len(indices)) - np.repeat(adjacency.indptr[:-1], np.diff(adjacency.indptr))
        transposed = sparse.csr_matrix((positions, adjacency.indices, adjacency.indptr), shape=adjacency.shape)
        transposed = transposed.T.tocsr()
        transposed.sort_indices()
        indices, indptr, data = transposed.indices.tolist(), transposed.indptr.tolist(), transposed.data.tolist()
        self.sources = [indices[start:end] for start, end in zip(indptr, indptr[1:])]
        self.source_positions = [data[start:end] for start, end in zip(indptr, indptr[1:])]
        self.targets = targets
        self.mate = [-1] * count  # predicted pixel -> matched ground-truth pixel
        self.target_mate = [-1] * targets
        self.present = [False] * count
        self.lookahead = [0] * count
        self.dead, self.dead_epoch = [-1] * count, 0
        self.closed, self.closed_epoch = [-1] * targets, 0
        self.size = 0  # matched pairs
        self.count = 0  # present predicted pixels
        self.highest = 0  # above every pixel ever present (the sources lists are sorted: scans stop there)

    def _free_neighbour(self, pixel: int) -> int:
        """A free ground-truth neighbour of `pixel`, or -1, advancing its lookahead past matched ones."""
        neighbours, target_mate = self.neighbours[pixel], self.target_mate
        k, end = self.lookahead[pixel], len(neighbours)
        while k < end:
            if target_mate[neighbours[k]] < 0:
                self.lookahead[pixel] = k
                return neighbours[k]
            k += 1
        self.lookahead[pixel] = k
        return -1

    def add(self, pixel: int) -> None:
        """Make `pixel` present and match it through an augmenting path (breadth first) if one exists."""
        self.present[pixel] = True
        self.count += 1
        self.highest = max(self.highest, pixel + 1)
        dead, epoch = self.dead, self.dead_epoch
        if self.size == self.targets:  # every ground-truth pixel is taken
            dead[pixel] = epoch
            self.closed_epoch += 1
            return
        dead[pixel] = -1
        free = self._free_neighbour(pixel)
        if free >= 0:
            self.mate[pixel], self.target_mate[free] = free, pixel
            self.size += 1
            return
        neighbours, target_mate = self.neighbours, self.target_mate
        parent = {pixel: -1}  # the search tree; every target met is matched (the lookaheads found no free one)
        queue = [pixel]
        for p in queue:
            for target in neighbours[p]:
                next_pixel = target_mate[target]
                if next_pixel in parent or dead[next_pixel] == epoch:
                    continue
                parent[next_pixel] = p
                free = self._free_neighbour(next_pixel)
                if free >= 0:
                    self._flip(next_pixel, free, parent)
                    return
                queue.append(next_pixel)
        for p in queue:
            dead[p] = epoch
        self.closed_epoch += 1

    def _flip(self, pixel: int, free: int, parent: dict[int, int]) -> None:
        """Augment along the breadth-first tree: `pixel` takes the free target, each ancestor its child's old one."""
        mate, target_mate = self.mate, self.target_mate
        while pixel >= 0:
            mate[pixel], target_mate[free], free = free, pixel, mate[pixel]
            pixel = parent[pixel]
        self.size += 1

    def remove(self, pixel: int) -> None:
        """Make `pixel` absent; if it was matched, rematch its partner through an augmenting path (breadth first)."""
        self.present[pixel] = False
        self.count -= 1
        freed = self.mate[pixel]
        if freed < 0:
            return
        mate, target_mate, present = self.mate, self.target_mate, self.present
        mate[pixel] = target_mate[freed] = -1
        self.size -= 1
        if self.count > self.size:  # some present pixel is unmatched: it may reach `freed`
            closed, epoch = self.closed, self.closed_epoch
            reached_from: dict[int, int] = {}  # predicted pixel -> the target it was reached from
            queue, highest = [freed], self.highest
            for target in queue:
                for p in self.sources[target]:
                    if p >= highest:
                        break
                    if not present[p] or p in reached_from:
                        continue
                    reached_from[p] = target
                    if mate[p] < 0:
                        self._flip_back(p, reached_from, freed)
                        return
                    if closed[mate[p]] != epoch:
                        queue.append(mate[p])
            for target in queue:
                closed[target] = epoch
        self.dead_epoch += 1
        lookahead, highest = self.lookahead, self.highest
        for p, position in zip(self.sources[freed], self.source_positions[freed]):
            if p >= highest:
                break
            if lookahead[p] > position:
                lookahead[p] = position

    def _flip_back(self, pixel: int, reached_from: dict[int, int], root: int) -> None:
        """Augment along the breadth-first tree from the free `pixel` back to the free target `root`."""
        mate, target_mate = self.mate, self.target_mate
        while True:
            target = reached_from[pixel]
            previous = target_mate[target]
            mate[pixel], target_mate[target] = target, pixel
            if target == root:
                break
            pixel = previous
        self.size += 1


def neighbour_graph(candidates: np.ndarray, boundary: np.ndarray, radius: float,
                    block: int = 4096) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Pairs of candidate edge pixels and ground-truth pixels at most `radius` apart (BSDS: u^2 + v^2 <= r^2).

    candidates: (N,) flat indices into the (H, W) bool `boundary`. Returns the adjacency (R, G) bool CSR over the R
    candidates that have a ground-truth pixel within reach (the others can never match) and their positions (R,) in
    `candidates`; columns follow np.flatnonzero(boundary). Ground-truth pixels are taken `block` at a time."""
    height, width = boundary.shape
    reach = int(np.ceil(radius))
    dv, du = np.mgrid[-reach:reach + 1, -reach:reach + 1]
    inside = dv * dv + du * du <= radius * radius
    stride = width + 2 * reach
    offsets = (dv * stride + du)[inside]
    index = np.full((height + 2 * reach) * stride, -1, dtype=np.int64)
    rows, cols = np.divmod(candidates, width)
    index[(rows + reach) * stride + cols + reach] = np.arange(len(candidates))
    gt_rows, gt_cols = np.divmod(np.flatnonzero(boundary), width)
    centres = (gt_rows + reach) * stride + gt_cols + reach
    sources, targets = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for start in range(0, len(centres), block):
        near = index[centres[start:start + block, None] + offsets[None, :]]
        target, slot = np.nonzero(near >= 0)
        sources.append(near[target, slot])
        targets.append(target + start)
    source, target = np.concatenate(sources), np.concatenate(targets)
    reachable = np.unique(source)
    adjacency = sparse.csr_matrix((np.ones(len(source), dtype=bool), (np.searchsorted(reachable, source), target)),
                                  shape=(len(reachable), len(centres)))
    return adjacency, reachable
