"""The 2d-control: an auxiliary branch in the regularizer's place, of its size and inputs, with no 3D at all.

Does the 3D-aware regularizer help because of its 3D structure (rays through a tri-plane, a shared density,
volume rendering) or only because it is one more training-only branch on the encoder features, supervised by
extra low-resolution losses? This control answers that. It projects the host features with the same 1x1 projector
(3 x C channels, which the regularizer splits into planes), resizes them straight to the render size and decodes
every rendered task, depth included, with a small 2D conv net: a 1x1 and a 3x3 conv, then one 1x1-conv head per
task of the regularizer's task width. Its trunk width is chosen so its parameter count matches the regularizer's
(`matched_width`); it is supervised by the same `render/<task>` terms, is training-only like the regularizer, and
is dropped from the inference model the same way (it sits in the regularizer's slot).
"""

from __future__ import annotations

import torch
from torch import nn

from mtl3dcli.config import RegularizerConfig
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.layers import resize_bilinear
from mtl3dcli.models.regularizer import Renders, TriplaneProjector
from mtl3dcli.tasks import Task


def decoder_parameters(in_channels: int, width: int, task_hidden: int, channels: dict[str, int]) -> int:
    """Parameters of the 2D decoder: 1x1 conv in -> width, 3x3 conv width -> width, per task 1x1 width -> hidden
    -> C_t (all with biases). Example: in 48, width 15, hidden 32, tasks (13, 1, 3, 1): 5,417."""
    trunk = (in_channels * width + width) + (9 * width * width + width)
    heads = sum(width * task_hidden + task_hidden + task_hidden * c + c for c in channels.values())
    return trunk + heads


def matched_width(in_channels: int, task_hidden: int, channels: dict[str, int], target: int) -> int:
    """The trunk width whose decoder parameter count is closest to `target` (the regularizer's field)."""
    counts = {w: decoder_parameters(in_channels, w, task_hidden, channels) for w in range(1, 2049)}
    return min(counts, key=lambda w: abs(counts[w] - target))


class Control2D(nn.Module):
    """Same interface as the regularizer where training and evaluation use it: `tasks`, `planes`, `view_camera`,
    `render` (Renders at the render size; the camera is ignored: a 2D map has no viewpoint)."""

    def __init__(self, config: RegularizerConfig, in_channels: int, tasks: list[Task], channels: dict[str, int],
                 field_parameters: int):
        super().__init__()
        self.config, self.tasks = config, tasks
        self.depth_labels = None
        self.projector = TriplaneProjector(in_channels, config.plane_channels, config.plane_size)
        rendered = {t.name: channels[t.name] for t in tasks}
        planes = 3 * config.plane_channels
        self.width = matched_width(planes, config.task_hidden, rendered, field_parameters)
        self.trunk = nn.Sequential(nn.Conv2d(planes, self.width, 1), nn.ReLU(inplace=True),
                                   nn.Conv2d(self.width, self.width, 3, padding=1), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({name: nn.Sequential(nn.Conv2d(self.width, config.task_hidden, 1),
                                                        nn.ReLU(inplace=True), nn.Conv2d(config.task_hidden, c, 1))
                                    for name, c in rendered.items()})

    perspective = False

    def planes(self, features: torch.Tensor, scales: list[torch.Tensor] | None = None) -> torch.Tensor:
        return self.projector(features)

    def view_camera(self, K: torch.Tensor, image_size: tuple[int, int], transform: torch.Tensor | None = None) -> None:
        if transform is not None:
            raise Mtl3dError("the 2d-control branch has no 3D field: it cannot be seen from another viewpoint")
        return None

    def render(self, planes: torch.Tensor, camera: None = None, size: tuple[int, int] | None = None,
               stratified: bool = False) -> Renders:
        """The projected planes (B, 3, C, Hp, Wp), stacked as 3C channels and resized to `size` (default the render
        size), decoded per task. depth: the depth task's map where there is one (else zeros); opacity: ones."""
        b, _, c, hp, wp = planes.shape
        stacked = resize_bilinear(planes.reshape(b, 3 * c, hp, wp), size or self.config.render_size)
        feature = self.trunk(stacked)
        tasks = {name: head(feature) for name, head in self.heads.items()}
        depth_names = tuple(t.name for t in self.tasks if t.rendered_as_depth)
        depth = tasks[depth_names[0]] if depth_names else feature.new_zeros(b, 1, *feature.shape[-2:])
        return Renders(tasks=tasks, depth=depth, opacity=torch.ones_like(depth), feature=feature,
                       depth_tasks=depth_names)
