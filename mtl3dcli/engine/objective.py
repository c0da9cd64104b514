"""The training objective: model forward plus every loss term. This is the module DDP wraps.

    L = sum_t w_t L_t(head_t, y_t)                                  (the multi-task baseline)
      + sum_{t rendered} alpha_t w_t L_t(up(render_t), y_t)          (3D-aware regularizer, Li et al. 2024)
      + sum_{t rendered} alpha'_t w_t L_t(up(render_t^{A->B}), y^B_t)  (cross-view, pairs with cameras only)

w_t is the task's multi-task weight (registry default or train.loss_weights), alpha_t the per-task regularizer
weight (regularizer.alpha, default regularizer.default_alpha) and alpha'_t = cross_alpha * alpha_t. Rendered maps
are upsampled (bilinear) to the label resolution before the loss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtl3dcli.config import Config
from mtl3dcli.models.build import MTL3DModel
from mtl3dcli.models.layers import upsample_maps
from mtl3dcli.models.regularizer import RenderCamera
from mtl3dcli.render.rays import relative_pose


class Objective(nn.Module):
    def __init__(self, model: MTL3DModel, config: Config):
        super().__init__()
        self.model = model
        self.weights = {t.name: config.train.loss_weights.get(t.name, t.loss_weight) for t in model.tasks}
        reg = config.regularizer
        self.alpha = {t.name: reg.alpha.get(t.name, reg.default_alpha) for t in model.tasks}
        self.cross_alpha = reg.cross_alpha
        self.cross_view = reg.cross_view

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns the total loss and each weighted term (for logging) keyed `task`, `render/task`, `cross/task`."""
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
        reg = model.regularizer
        if reg is not None:
            planes = reg.planes(out.features)
            rendered = reg.render(planes, reg.view_camera(batch["K"], size), stratified=self.training)
            up = upsample_maps({t.name: rendered[t.name] for t in reg.tasks}, size)
            for t in reg.tasks:
                weight = self.alpha[t.name] * self.weights[t.name]
                terms[f"render/{t.name}"] = weight * t.loss(up[t.name], labels[t.name], valid[t.name])
            if self.cross_view and "pair" in batch:
                pair = batch["pair"]
                cross = RenderCamera(K_src=batch["K"], image_size=size, K=pair["K"],
                                     transform=relative_pose(batch["pose"], pair["pose"]))
                rendered_b = reg.render(planes, cross, stratified=self.training)
                up_b = upsample_maps({t.name: rendered_b[t.name] for t in reg.tasks}, size)
                has_pair = batch["has_pair"].view(-1, 1, 1).bool()
                for t in reg.tasks:
                    weight = self.cross_alpha * self.alpha[t.name] * self.weights[t.name]
                    terms[f"cross/{t.name}"] = weight * t.loss(up_b[t.name], pair["labels"][t.name],
                                                               pair["valid"][t.name] & has_pair)
        total = torch.stack(list(terms.values())).sum()
        return total, terms
