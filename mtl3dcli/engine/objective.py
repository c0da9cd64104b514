"""The training objective: model forward plus every loss term. This is the module DDP wraps.

    L = sum_t w_t L_t(head_t, y_t)                                  (the multi-task baseline)
      + sum_{t rendered} alpha_t w_t L_t(up(render_t), y_t)          (3D-aware regularizer, Li et al. 2024)
      + sum_{t rendered} alpha'_t w_t L_t(up(render_t^{A->B}), y^B_t)  (cross-view, pairs with cameras only)

w_t is the task's multi-task weight (registry default or train.loss_weights), alpha_t the per-task regularizer
weight (regularizer.alpha, default regularizer.default_alpha) and alpha'_t = cross_alpha * alpha_t. Rendered maps
are upsampled (bilinear) to the label resolution before the loss.

Cross-view: view A's tri-plane (in A's camera frame) is rendered from its partner camera B and supervised on B's
pixels that A also sees (`models/crossview.py`, within regularizer.cross_tolerance). The covisible fraction of B's
pixels with a known depth is returned as the term "cross/visible": a diagnostic, not part of the total.
The rendered terms are computed by the same functions as the public API's (`mtl3dcli.api`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtl3dcli.config import Config
from mtl3dcli.models.build import MTL3DModel
from mtl3dcli.models.crossview import PartnerView, partner_losses
from mtl3dcli.models.layers import upsample_maps
from mtl3dcli.models.regularizer import Regularizer, rendered_losses


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
            planes = reg.planes(out.features, out.scales)
            losses = rendered_losses(reg, planes, reg.view_camera(batch["K"], size), size, labels, valid,
                                     self.training)
            for name, loss in losses.items():
                terms[f"render/{name}"] = self.alpha[name] * self.weights[name] * loss
            if self.cross_view and "pair" in batch:
                self._cross_view(reg, planes, batch, size, terms, diagnostics)
        total = torch.stack(list(terms.values())).sum()
        return total, {**terms, **diagnostics}

    def _cross_view(self, reg: Regularizer, planes: torch.Tensor, batch: dict[str, Any], size: tuple[int, int],
                    terms: dict[str, torch.Tensor], diagnostics: dict[str, torch.Tensor]) -> None:
        """Render A's tri-plane from partner B and add `cross/<task>` on B's pixels that A sees."""
        pair = batch["pair"]
        partner = PartnerView(pair["K"], pair["pose"], pair["labels"], pair["valid"], batch["has_pair"])
        losses, diagnostics["cross/visible"] = partner_losses(
            reg, planes, batch["K"], size, batch["pose"], batch["labels"], batch["valid"], partner,
            self.cross_tolerance, self.training)
        for name, loss in losses.items():
            terms[f"cross/{name}"] = self.cross_alpha * self.alpha[name] * self.weights[name] * loss
