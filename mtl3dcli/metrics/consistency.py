"""Multi-view consistency: do a model's predictions for two overlapping views agree about the same surfaces?

For every ordered pair of views (B, A) of one scene, B's pixels are moved into A with the ground-truth geometry (B's
depth label, both intrinsics, the relative pose; `geometry.covisible`). A pixel of B counts where A sees the same
surface (inside A's frustum, not occluded: A's depth label agrees within `rel_tol`) and where the two views' labels
agree there too (the same class; normals within `angle_tol` after rotating B's into A's frame), so ground truth used
as the prediction scores exactly 100%. On those pixels, per kind of task:

    label    % of pixels whose predicted classes agree (A's prediction at the nearest pixel)
    depth    % whose predicted depths agree within rel_tol (B's prediction moved into A's frame against A's
             prediction); also the mean relative disagreement "<task>_rel"
    normal   % whose predicted normals agree within angle_tol after rotating B's into A's frame; also the mean
             angle "<task>_deg"

Pairs that share less than `min_covisible` of B's pixels are skipped. No peer codebase reports this; it applies to
any model, with or without the regularizer (whose 3D structure is meant to make predictions consistent). Views of a
scene are buffered until the scene changes, so a split should list a scene's views together (the synthetic splits
do); the counts are pooled over all pairs of the split.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.geometry import backproject, covisible_uv, relative_pose, transform_points, transform_vectors

KINDS = ("label", "depth", "normal")
GROUP = "consistency"  # the results group (beside the tasks) that holds these scores in an evaluation report


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Degrees between the columns of (3, N) and (3, N)."""
    cos = (F.normalize(a.double(), dim=0) * F.normalize(b.double(), dim=0)).sum(0)
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(H, W) or (C, H, W) -> (C, H * W)."""
    return x.reshape(1 if x.dim() == 2 else x.shape[0], -1)


class ConsistencyMeter:
    """Streaming multi-view consistency of the tasks in `kinds` ({task: "label" | "depth" | "normal"}), with the
    geometry from the labels of `depth_task`."""

    slow = False

    def __init__(self, kinds: Mapping[str, str], depth_task: str, rel_tol: float = 0.05, angle_tol: float = 11.25,
                 min_covisible: float = 0.1):
        unknown = set(kinds.values()) - set(KINDS)
        if unknown:
            raise Mtl3dError(f"unknown consistency kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
        self.kinds, self.depth_task = dict(kinds), depth_task
        self.rel_tol, self.angle_tol, self.min_covisible = rel_tol, angle_tol, min_covisible
        self.protocol = (f"ordered pairs of views of a scene; B's pixels co-visible in A by the depth labels (within "
                         f"{rel_tol:g} relative) whose labels agree across the views; depths agree within {rel_tol:g} "
                         f"relative, normals within {angle_tol:g} deg after rotation; pairs sharing < "
                         f"{min_covisible:g} skipped")
        self._scene: str | None = None
        self._views: list[dict] = []
        self._stats = {name: torch.zeros(3, dtype=torch.float64) for name in self.kinds}  # pixels, agreeing, sum
        self.pairs = 0

    def update(self, scenes: list[str], predictions: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor],
               valid: Mapping[str, torch.Tensor], K: torch.Tensor, pose: torch.Tensor) -> None:
        """One batch: scene names (B,); predictions, labels and valid per task as the task meters take them; K
        (B, 3, 3) and camera-to-world poses (B, 4, 4) at the label resolution."""
        for i, scene in enumerate(scenes):
            if scene != self._scene:
                self._flush()
                self._scene = scene
            self._views.append({"K": K[i].double().cpu(), "pose": pose[i].double().cpu(),
                                **{key: {t: source[t][i].cpu() for t in self.kinds}
                                   for key, source in (("prediction", predictions), ("label", labels),
                                                       ("valid", valid))}})

    def _flush(self) -> None:
        views, self._views = self._views, []
        for b, view_b in enumerate(views):
            for a, view_a in enumerate(views):
                if a != b:
                    self._pair(view_b, view_a)

    def _depth(self, view: dict) -> torch.Tensor:
        """The view's depth label (H, W) in float64, unknown pixels 0."""
        label, valid = view["label"][self.depth_task], view["valid"][self.depth_task]
        return torch.where(valid, label[0].double(), torch.zeros((), dtype=torch.float64))

    def _pair(self, view_b: dict, view_a: dict) -> None:
        """Add the pixels of B that A sees to every task's counts."""
        depth_b, depth_a = self._depth(view_b), self._depth(view_a)
        K_b, K_a = view_b["K"][None], view_a["K"][None]
        b_to_a = relative_pose(view_a["pose"][None], view_b["pose"][None])
        seen, uv = covisible_uv(depth_b[None], K_b, depth_a[None], K_a, b_to_a, self.rel_tol)
        seen = seen[0]
        if seen.double().mean() < self.min_covisible:
            return
        self.pairs += 1
        height, width = depth_a.shape
        at_b = seen.reshape(-1).nonzero()[:, 0]  # the counted pixels of B (flat indices, row-major)
        at_a = (uv[0, ..., 1].floor().clamp(0, height - 1).long() * width
                + uv[0, ..., 0].floor().clamp(0, width - 1).long()).reshape(-1)[at_b]  # A's pixel for each
        for task, kind in self.kinds.items():
            keep = _flat(view_b["valid"][task])[0, at_b] & _flat(view_a["valid"][task])[0, at_a]
            gt_b, gt_a = _flat(view_b["label"][task])[:, at_b], _flat(view_a["label"][task])[:, at_a]
            pred_b = _flat(view_b["prediction"][task])[:, at_b]
            pred_a = _flat(view_a["prediction"][task])[:, at_a]
            if kind == "label":
                keep &= gt_b[0] == gt_a[0]
                agree, amount = pred_b[0] == pred_a[0], torch.zeros(keep.shape, dtype=torch.float64)
            elif kind == "depth":
                amount, agree = self._depth_agreement(pred_b[0], seen, K_b, b_to_a, pred_a[0], gt_a[0])
            else:
                rotation = b_to_a[0]
                keep &= _angle(transform_vectors(rotation, gt_b.double().T).T, gt_a) <= self.angle_tol
                amount = _angle(transform_vectors(rotation, pred_b.double().T).T, pred_a)
                agree = amount <= self.angle_tol
            self._stats[task] += torch.stack([keep.sum().double(), agree[keep].sum().double(), amount[keep].sum()])

    def _depth_agreement(self, pred_b: torch.Tensor, seen: torch.Tensor, K_b: torch.Tensor, b_to_a: torch.Tensor,
                         pred_a: torch.Tensor, gt_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B's predicted depths moved into A's frame against A's predictions: (relative disagreement, agrees), with
        the same comparison as the co-visibility test, so ground truth agrees exactly. Only A's z-depth of the
        moved points is needed, which does not depend on A's intrinsics."""
        moved = torch.zeros(seen.shape, dtype=torch.float64)
        moved[seen] = pred_b.double()
        z = transform_points(b_to_a, backproject(moved[None], K_b))[0, ..., 2]
        difference = (z[seen] - pred_a.double()).abs()
        return difference / gt_a.double().clamp_min(1e-9), difference <= self.rel_tol * gt_a.double()

    def compute(self) -> dict[str, float]:
        """{task: % of pixels agreeing, "<task>_rel" (depth) / "<task>_deg" (normals): mean disagreement, "pairs"};
        a task without any counted pixel (e.g. a split with one view per scene) has no entry."""
        self._flush()
        self._scene = None
        out: dict[str, float] = {}
        for task, kind in self.kinds.items():
            pixels, agree, amount = (float(v) for v in self._stats[task])
            if pixels:
                out[task] = 100.0 * agree / pixels
                if kind != "label":
                    out[f"{task}_{'rel' if kind == 'depth' else 'deg'}"] = amount / pixels
        out["pairs"] = float(self.pairs)
        return out
