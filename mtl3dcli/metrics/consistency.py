"""Multi-view consistency: do a model's predictions for two overlapping views agree about the same surfaces?

For every ordered pair of views (B, A) of one scene, B's pixels are moved into A with the ground-truth geometry (B's
depth label, both intrinsics, the relative pose; `geometry.covisible`). A pixel of B counts where A sees the same
surface (inside A's frustum, not occluded: A's depth label agrees within `rel_tol`) and where the labels of the two
views agree there too (same class; normals within `angle_tol` after rotating B's into A's frame), so ground truth
used as the prediction scores exactly 100%. On those pixels, per task kind:

    label    % of pixels whose predicted classes agree
    depth    % whose predicted depths agree within rel_tol (B's prediction moved into A's frame against A's
             prediction at the nearest pixel); also the mean relative disagreement
    normal   % whose predicted normals agree within angle_tol after rotating B's into A's frame; also the mean angle

Pairs that share less than `min_covisible` of B's pixels are skipped. No peer codebase reports this; it applies to
any model, with or without the regularizer (the regularizer is meant to make predictions 3D-consistent).
Views of a scene are buffered until the scene changes, so a split should list a scene's views together (the
synthetic splits do); the statistics are pooled over all pairs of the split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.geometry import covisible, relative_pose, reproject, transform_vectors

KINDS = ("label", "depth", "normal")


class ConsistencyMeter:
    """Streaming multi-view consistency of the tasks in `kinds` ({task: "label" | "depth" | "normal"}); `depth_task`
    names the task whose labels give the geometry."""

    primary = "agree"
    higher_is_better = True
    slow = False

    def __init__(self, kinds: Mapping[str, str], depth_task: str, rel_tol: float = 0.05, angle_tol: float = 11.25,
                 min_covisible: float = 0.1):
        unknown = set(kinds.values()) - set(KINDS)
        if unknown:
            raise Mtl3dError(f"unknown consistency kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
        self.kinds, self.depth_task = dict(kinds), depth_task
        self.rel_tol, self.angle_tol, self.min_covisible = rel_tol, angle_tol, min_covisible
        self.protocol = (f"pairs of views of a scene, pixels co-visible by the depth labels (within {rel_tol:g} "
                         f"relative) whose labels agree across the views; depth within {rel_tol:g} relative, normals "
                         f"within {angle_tol:g} deg after rotation; pairs sharing < {min_covisible:g} skipped")
        self._scene: str | None = None
        self._views: list[dict] = []
        self._stats = {name: torch.zeros(3, dtype=torch.float64) for name in self.kinds}  # pixels, agree, sum
        self.pairs = 0

    def update(self, scenes: list[str], predictions: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor],
               valid: Mapping[str, torch.Tensor], K: torch.Tensor, pose: torch.Tensor) -> None:
        """One batch: scene names (B,), predictions and labels per task as the meters take them, valid (B, H, W),
        K (B, 3, 3) and camera-to-world poses (B, 4, 4) at the label resolution."""
        for i, scene in enumerate(scenes):
            if scene != self._scene:
                self._flush()
                self._scene = scene
            self._views.append({
                "K": K[i].double().cpu(), "pose": pose[i].double().cpu(),
                "prediction": {t: predictions[t][i].cpu() for t in self.kinds},
                "label": {t: labels[t][i].cpu() for t in self.kinds},
                "valid": {t: valid[t][i].cpu() for t in self.kinds},
            })

    def _flush(self) -> None:
        views, self._views = self._views, []
        for b, view_b in enumerate(views):
            for a, view_a in enumerate(views):
                if a != b:
                    self._pair(view_b, view_a)

    def _pair(self, view_b: dict, view_a: dict) -> None:
        depth_b = _depth(view_b["label"][self.depth_task], view_b["valid"][self.depth_task])
        depth_a = _depth(view_a["label"][self.depth_task], view_a["valid"][self.depth_task])
        b_to_a = relative_pose(view_a["pose"][None], view_b["pose"][None])
        seen = covisible(depth_b[None], view_b["K"][None], depth_a[None], view_a["K"][None], b_to_a,
                         self.rel_tol)[0]
        if seen.double().mean() < self.min_covisible:
            return
        uv, _ = reproject(depth_b[None], view_b["K"][None], view_a["K"][None], b_to_a)
        height, width = depth_a.shape
        q = (uv[0, ..., 1].floor().clamp(0, height - 1).long() * width
             + uv[0, ..., 0].floor().clamp(0, width - 1).long())[seen]  # A's pixel for each counted pixel of B
        self.pairs += 1
        for task, kind in self.kinds.items():
            pick_b = lambda x: _pixels(x)[..., seen.reshape(-1)]  # noqa: E731  (C, N) at B's counted pixels
            pick_a = lambda x: _pixels(x)[..., q]  # noqa: E731  (C, N) at their pixels in A
            keep = pick_b(view_b["valid"][task])[0] & pick_a(view_a["valid"][task])[0]
            args = (view_b["label"][task], view_a["label"][task], view_b["prediction"][task],
                    view_a["prediction"][task])
            gt_b, gt_a, pred_b, pred_a = (pick_b(args[0]), pick_a(args[1]), pick_b(args[2]), pick_a(args[3]))
            if kind == "label":
                keep &= (gt_b == gt_a)[0]
                agree, amount = (pred_b == pred_a)[0].double(), torch.zeros(keep.shape, dtype=torch.float64)
            elif kind == "depth":
                agree, amount = self._depth_agreement(view_b, depth_b, seen, b_to_a, pred_b, pred_a, gt_a)
            else:
                rotate = lambda n: transform_vectors(b_to_a[0], n.double().T).T  # noqa: E731
                keep &= _angle(rotate(gt_b), gt_a) <= self.angle_tol
                amount = _angle(rotate(pred_b), pred_a)
                agree = (amount <= self.angle_tol).double()
            self._stats[task] += torch.stack([keep.sum().double(), agree[keep].sum(), amount[keep].sum()])

    def _depth_agreement(self, view_b, depth_b, seen, b_to_a, pred_b, pred_a, gt_a):
        """B's predicted depth moved into A's frame against A's prediction: (agree 0/1, relative disagreement)."""
        moved = torch.zeros_like(depth_b)
        moved[seen] = pred_b[0].double()
        _, z = reproject(moved[None], view_b["K"][None], view_b["K"][None] * 0 + view_b["K"][None], b_to_a)
        relative = (z[0][seen] - pred_a[0].double()).abs() / gt_a[0].double().clamp_min(1e-6)
        return (relative <= self.rel_tol).double(), relative

    def compute(self) -> dict[str, float]:
        """{task: % agreeing, "<task>_rel" (depth) / "<task>_deg" (normals): mean disagreement, "pairs": n}."""
        self._flush()
        self._scene = None
        out: dict[str, float] = {}
        for task, kind in self.kinds.items():
            pixels, agree, amount = (float(v) for v in self._stats[task])
            out[task] = 100.0 * agree / pixels if pixels else math.nan
            if kind != "label":
                out[f"{task}_{'rel' if kind == 'depth' else 'deg'}"] = amount / pixels if pixels else math.nan
        out["pairs"] = float(self.pairs)
        return out


def _depth(label: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """A depth label (1, H, W) as (H, W) float64 with invalid pixels 0 (unknown)."""
    return torch.where(valid, label[0].double(), torch.zeros_like(label[0], dtype=torch.float64))


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """(H, W) or (C, H, W) -> (C, H * W)."""
    return x.reshape(1 if x.dim() == 2 else x.shape[0], -1)


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Degrees between column vectors (3, N) and (3, N)."""
    cos = (F.normalize(a.double(), dim=0) * F.normalize(b.double(), dim=0)).sum(0)
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))
