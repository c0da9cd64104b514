"""A network this project did not write, as an mtl3d host: torchvision's DeepLabV3 (MobileNetV3-Large backbone,
randomly initialized) with extra 1x1 heads for the tasks beyond segmentation, trained and used through the CLI.

The host contract (docs/library.md): `build(spec: HostSpec) -> Host`; the host takes images in [0, 1] (B, 3, H, W)
with H and W multiples of `size_divisor`, and returns a `HostOutput`: every task's raw output at the input size,
and `features`, the map the regularizer turns into a tri-plane (here the backbone's stride-16 output).

Run from the repository root (the CLI imports `custom_host` from PYTHONPATH):

    python docs/examples/custom_host.py --data data/synthetic --out runs/custom-host

which runs, with PYTHONPATH=docs/examples:
    mtl3d train --preset demo --set model.host=custom_host:build --set regularizer.plane_size=[12,16] ...
    mtl3d evaluate / predict / render-views --weights <run>/weights/last.safetensors
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from mtl3dcli import Host, HostOutput, HostSpec

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DeepLabMultiTask(nn.Module):
    """DeepLabV3-MobileNetV3: its ASPP decoder feeds the segmentation classifier and one 1x1 head per other task.
    forward(image in [0, 1]) -> ({task: raw output at the input size}, backbone features (B, 960, H/16, W/16))."""

    def __init__(self, channels: dict[str, int], segmentation: str | None = "semseg"):
        super().__init__()
        classes = channels.get(segmentation, 1)
        deeplab = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=classes)
        self.backbone = deeplab.backbone
        self.decoder = nn.Sequential(*list(deeplab.classifier)[:-1])  # ASPP, 3x3 conv, BN, ReLU: 256 channels
        self.heads = nn.ModuleDict({name: deeplab.classifier[-1] if name == segmentation else nn.Conv2d(256, c, 1)
                                    for name, c in channels.items()})
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.feature_channels = 960

    def forward(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        features = self.backbone((image - self.mean) / self.std)["out"]
        decoded = self.decoder(features)
        outputs = {name: F.interpolate(head(decoded), size=image.shape[-2:], mode="bilinear", align_corners=False)
                   for name, head in self.heads.items()}
        return outputs, features


class DeepLabHost(Host):
    """The network behind the Host contract."""

    size_divisor = 16  # the backbone's output stride

    def __init__(self, channels: dict[str, int]):
        super().__init__()
        self.network = DeepLabMultiTask(channels)
        self.feature_channels = self.network.feature_channels

    def forward(self, image: torch.Tensor) -> HostOutput:
        outputs, features = self.network(image)
        return HostOutput(outputs, features)


def build(spec: HostSpec) -> Host:
    """The factory `model.host: custom_host:build` names: spec.channels is {task: output channels}."""
    return DeepLabHost(spec.channels)


def mtl3d(*args: object) -> None:
    """One `mtl3d` command with this folder importable (the weights record `custom_host:build`)."""
    path = os.pathsep.join([str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")])
    print("$ mtl3d", " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, "-m", "mtl3dcli", *map(str, args)], check=True,
                   env={**os.environ, "PYTHONPATH": path})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train DeepLabV3-MobileNetV3 as an mtl3d host, then use it.")
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--out", type=Path, default=Path("runs/custom-host"))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--set", action="append", default=[], help="further config overrides")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--edge-thresholds", type=int, default=None, help="odsF sweep (default: the 101 of HED)")
    args = parser.parse_args(argv)
    sets = ["model.host=custom_host:build", "regularizer.plane_size=[12,16]", *args.set]
    mtl3d("train", "--preset", "demo", "--data", args.data, "--steps", args.steps, "--out", args.out,
          *(arg for value in sets for arg in ("--set", value)))
    weights = args.out / "weights" / "last.safetensors"
    thresholds = ["--edge-thresholds", args.edge_thresholds] if args.edge_thresholds else []
    mtl3d("evaluate", "--weights", weights, "--data", args.data, "--out", args.out / "evaluation.json", *thresholds)
    image = sorted((args.data / "images").iterdir())[-1]
    mtl3d("predict", image, "--weights", weights, "--out", args.out / "predictions")
    mtl3d("render-views", image, "--weights", weights, "--out", args.out / "views", "--frames", args.frames)


if __name__ == "__main__":
    main()
