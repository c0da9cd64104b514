"""The training objective: model forward plus every loss term. This is the module DDP wraps.

    L = sum_t w_t L_t(head_t, y_t)                                  (the multi-task baseline)
      + sum_{t rendered} alpha_t w_t L_t(up(render_t), y_t)          (3D-aware regularizer, Li et al. 2024)
      + sum_{t rendered} alpha'_t w_t L_t(up(render_t^{A->B}), y^B_t)  (cross-view, pairs with cameras only)

w_t is the task's multi-task weight (registry default or train.loss_weights), alpha_t the per-task regularizer
weight (regularizer.alpha, default regularizer.default_alpha) and alpha'_t = cross_alpha * alpha_t. Rendered maps
are upsampled (bilinear) to the label resolution before the loss.

Cross-view: view A's tri-plane (in A's camera frame) is rendered from its partner camera B (`Regularizer.
partner_camera`); normals come out in B's frame, and only B's pixels that A also sees are supervised: B's depth
label back-projected, moved into A, inside A's image and agreeing with A's depth label within
regularizer.cross_tolerance (`geometry.covisible`). The covisible fraction of B's pixels with a known depth is
returned as the term "cross/visible": a diagnostic, not part of the total.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtl3dcli.config import Config
from mtl3dcli.models.build import MTL3DModel
from mtl3dcli.models.layers import upsample_maps
from mtl3dcli.models.regularizer import Regularizer
from mtl3dcli.render.cameras import Camera
from mtl3dcli.geometry import covisible, relative_pose


def rendered_losses(reg: Regularizer, planes: torch.Tensor, camera: Camera, size: tuple[int, int],
                    labels: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                    stratified: bool) -> dict[str, torch.Tensor]:
    """The unweighted task loss of every rendered task: the tri-plane rendered from `camera`, each map upsampled
    (bilinear) to the labels' `size` and scored against them where `valid`. {task: loss} in the regularizer's order;
    the training step and `benchmarks/regularizer_step.py` share it."""
    rendered = reg.render(planes, camera, stratified=stratified)
    up = upsample_maps(rendered.tasks, size)
    return {t.name: t.loss(up[t.name], labels[t.name], valid[t.name]) for t in reg.tasks}


class Objective(nn.Module):
    def __init__(self, model: MTL3DModel, config: Config):
        super().__init__()
        self.model = model
        self.weights = {t.name: config.train.loss_weights.get(t.name, t.loss_weight) for t in model.tasks}
        reg = config.regularizer
        self.alpha = {t.name: reg.alpha.get(t.name, reg.default_alpha) for t in model.tasks}
        self.cross_alpha = reg.cross_alpha
        self.cross_view = reg.cross_view
        self.cross_tolerance = reg.cross_tolerance

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns the total loss and each weighted term (for logging) keyed `task`, `aux/<group>/task`,
        `render/task`, `cross/task`, plus the diagnostic `cross/visible` (not in the total)."""
        model = self.model
        image, labels, valid = batch["image"], batch["labels"], batch["valid"]
        size = tuple(image.shape[-2:])
        out = model.net(image)
        terms = {t.name: self.weights[t.name] * t.loss(out.outputs[t.name], labels[t.name], valid[t.name])
                 for t in model.tasks}
        for group, maps in out.aux.items():  # deep supervision, weighted like the final outputs
            up_aux = upsample_maps(maps, size)
            for t in model.tasks:
                if t.name in up_aux:
                    terms[f"aux/{group}/{t.name}"] = self.weights[t.name] * t.loss(up_aux[t.name], labels[t.name],
                                                                                   valid[t.name])
        diagnostics = {}
        reg = model.regularizer
        if reg is not None:
            planes = reg.planes(out.features)
            losses = rendered_losses(reg, planes, reg.view_camera(batch["K"], size), size, labels, valid,
                                     self.training)
            for name, loss in losses.items():
                terms[f"render/{name}"] = self.alpha[name] * self.weights[name] * loss
            if self.cross_view and "pair" in batch:
                self._cross_view(reg, planes, batch, size, terms, diagnostics)
        total = torch.stack(list(terms.values())).sum()
        return total, {**terms, **diagnostics}

    def _cross_view(self, reg, planes: torch.Tensor, batch: dict[str, Any], size: tuple[int, int],
                    terms: dict[str, torch.Tensor], diagnostics: dict[str, torch.Tensor]) -> None:
        """Render A's tri-plane from partner B and add `cross/<task>` on B's pixels that A sees."""
        pair = batch["pair"]
        depth_task = reg.depth_labels
        pair_size = tuple(pair["valid"][depth_task].shape[-2:])
        with torch.autocast(device_type=planes.device.type, enabled=False):  # camera math in float32
            b_to_a = relative_pose(batch["pose"].float(), pair["pose"].float())

            def known_depth(labels, valid):
                return torch.where(valid[depth_task], labels[depth_task][:, 0].float(), 0.0)

            seen = covisible(known_depth(pair["labels"], pair["valid"]), pair["K"].float(),
                             known_depth(batch["labels"], batch["valid"]), batch["K"].float(), b_to_a,
                             self.cross_tolerance)
        has_pair = batch["has_pair"].view(-1, 1, 1).bool()
        labelled = pair["valid"][depth_task] & has_pair
        diagnostics["cross/visible"] = ((seen & labelled).sum() / labelled.sum().clamp_min(1)).detach().float()
        camera = reg.partner_camera(batch["K"], size, pair["K"], pair_size, b_to_a)
        mask = seen & has_pair
        seen_valid = {t.name: pair["valid"][t.name] & mask for t in reg.tasks}
        losses = rendered_losses(reg, planes, camera, pair_size, pair["labels"], seen_valid, self.training)
        for name, loss in losses.items():
            terms[f"cross/{name}"] = self.cross_alpha * self.alpha[name] * self.weights[name] * loss
