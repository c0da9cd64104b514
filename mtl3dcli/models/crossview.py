"""The cross-view term: view A's tri-plane rendered from a partner camera B and supervised by B's labels.

A's tri-plane lives in A's camera frame; `Regularizer.partner_camera` renders it from B, so normals come out in B's
frame. Only B's pixels that A also sees are supervised: B's depth label back-projected, moved into A, inside A's
image and agreeing with A's depth label within `tolerance` (`geometry.covisible`). The training objective and the
public API share `partner_losses`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mtl3dcli.geometry import covisible, relative_pose
from mtl3dcli.models.regularizer import Regularizer, rendered_losses


@dataclass
class PartnerView:
    """A partner view B of a batch: K (B, 3, 3) at its labels' size, camera-to-world pose (B, 4, 4), labels
    {task: ...} in the tasks' layout; valid {task: (B, H, W) bool} (None: the tasks' own validity) and has_pair
    (B,) bool, which samples have a partner at all (None: all)."""

    K: torch.Tensor
    pose: torch.Tensor
    labels: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor] | None = None
    has_pair: torch.Tensor | None = None


def partner_losses(reg: Regularizer, planes: torch.Tensor, K: torch.Tensor, size: tuple[int, int],
                   pose: torch.Tensor, labels: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                   partner: PartnerView, tolerance: float,
                   stratified: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The unweighted loss {task: L_t} of A's tri-plane (`planes`, A's K (B, 3, 3) at `size`, pose (B, 4, 4),
    depth `labels`/`valid`) rendered from `partner` on B's covisible pixels, and the covisible fraction of B's
    pixels with a known depth (a detached diagnostic)."""
    depth_task = reg.depth_labels
    partner_size = tuple(partner.valid[depth_task].shape[-2:])
    with torch.autocast(device_type=planes.device.type, enabled=False):  # camera math in float32
        b_to_a = relative_pose(pose.float(), partner.pose.float())

        def known_depth(labels: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> torch.Tensor:
            return torch.where(valid[depth_task], labels[depth_task][:, 0].float(), 0.0)

        seen = covisible(known_depth(partner.labels, partner.valid), partner.K.float(), known_depth(labels, valid),
                         K.float(), b_to_a, tolerance)
    has_pair = partner.has_pair.view(-1, 1, 1).bool()
    labelled = partner.valid[depth_task] & has_pair
    visible = ((seen & labelled).sum() / labelled.sum().clamp_min(1)).detach().float()
    camera = reg.partner_camera(K, size, partner.K, partner_size, b_to_a)
    mask = seen & has_pair
    seen_valid = {t.name: partner.valid[t.name] & mask for t in reg.tasks}
    return rendered_losses(reg, planes, camera, partner_size, partner.labels, seen_valid, stratified), visible
