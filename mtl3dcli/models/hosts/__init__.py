"""Host networks: the multi-task architectures the 3D-aware regularizer plugs into.

A host maps an image in [0, 1] (B, 3, H, W) to a `HostOutput`: the final raw output of every task at the input
resolution, the shared feature map that the regularizer projects to a tri-plane (`features`, declared once per host
as `feature_channels`), and optional auxiliary predictions that get their own loss terms (deep supervision). The
objective, evaluation, predict and render-views only read `HostOutput`, so they work unchanged for every host; the
regularizer reads `features` while training and is never part of the host, so inference costs the same with or
without it.

    baseline  backbone -> fused scales -> one head per task (the standard MTL baseline)
    mti-net   HRNet -> per-scale initial predictions, feature propagation, multi-modal distillation, aggregation
    invpt     ViT -> preliminary decoder -> UP-Transformer with joint task attention -> multi-scale aggregation

Hosts from outside the package: `model.host: "package.module:factory"` imports the module (the working directory
is on the import path, as for `uvicorn app:main`) and calls `factory(spec)`; a factory decorated with
`@register_host("name")` is also reachable as `model.host: name` once its module is imported. The weights file
records the factory's import path (`host_import_path`), so a fresh process finds it again.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from mtl3dcli.config import ModelConfig
from mtl3dcli.errors import Mtl3dError


@dataclass
class HostOutput:
    """outputs: {task: raw output (B, C_t, H, W)} at the input resolution (what `Task.activate` takes).
    features: (B, feature_channels, h, w), the shared encoder features the regularizer projects.
    aux: {group: {task: raw output (B, C_t, h', w')}} at any resolution (e.g. MTI-Net's "scale_0".."scale_3",
    InvPT's "inter"); the objective upsamples them to the label size and weighs them like the final outputs.
    scales: when `features` is `fuse_scales(scales)` (multi-scale maps, finest first), those maps: the training
    regularizer then projects each scale at its own resolution, the same planes for less work (optional)."""

    outputs: dict[str, torch.Tensor]
    features: torch.Tensor
    aux: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    scales: list[torch.Tensor] | None = None


@dataclass(frozen=True)
class HostSpec:
    """What a host builder needs. channels: {task: output channels} in task order; image_size: the training input
    (H, W), for hosts whose token grid is sized for it (InvPT); pretrained: None, "imagenet" or a local file (None
    when rebuilding from a weights file, which holds every tensor)."""

    model: ModelConfig
    channels: dict[str, int]
    image_size: tuple[int, int]
    pretrained: str | None = None


class Host(nn.Module):
    """Base class: subclasses set `feature_channels` and `size_divisor` (input sides must be multiples of it; the
    inference session pads other sizes) and implement `forward(image) -> HostOutput`."""

    feature_channels: int
    size_divisor: int = 32

    def forward(self, image: torch.Tensor) -> HostOutput:  # pragma: no cover - abstract
        raise NotImplementedError


HostFactory = Callable[[HostSpec], Host]
HOSTS: dict[str, HostFactory] = {}


def register_host(name: str) -> Callable[[HostFactory], HostFactory]:
    """Decorator: make `factory(spec) -> Host` available as `model.host: name` (as timm's `register_model`).
    A name registered twice by different factories is an error, so a plug-in cannot shadow a host silently."""

    def register(factory: HostFactory) -> HostFactory:
        if HOSTS.get(name, factory) is not factory:
            raise Mtl3dError(f"host {name!r} is already registered (by {host_import_path(name)})")
        HOSTS[name] = factory
        return factory

    return register


@register_host("baseline")
def _baseline(spec: HostSpec) -> Host:
    from mtl3dcli.models.hosts.baseline import build_baseline

    return build_baseline(spec)


@register_host("mti-net")
def _mtinet(spec: HostSpec) -> Host:
    from mtl3dcli.models.hosts.mtinet import build_mtinet

    return build_mtinet(spec)


@register_host("invpt")
def _invpt(spec: HostSpec) -> Host:
    from mtl3dcli.models.hosts.invpt import build_invpt

    return build_invpt(spec)


BUILT_IN = ("baseline", "mti-net", "invpt")


def check_host_name(host: str) -> None:
    """A registered host or the form of an import path "package.module:factory", else one clear error (with the
    closest registered name): a misspelt host fails when the config is read, before any data is."""
    module_name, _, attribute = host.partition(":")
    if host in HOSTS or (module_name and attribute):
        return
    close = difflib.get_close_matches(host, list(HOSTS), n=1)
    raise Mtl3dError(f"model.host {host!r} is neither a registered host ({', '.join(HOSTS)}) nor an import path "
                     f"package.module:factory" + (f"; did you mean {close[0]!r}?" if close else ""))


def import_host(path: str) -> HostFactory:
    """"package.module:factory" -> the factory; a module that cannot be imported or lacks the factory is one
    clear error naming it. The working directory is importable, as it is for `python -m`."""
    check_host_name(path)
    module_name, _, attribute = path.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise Mtl3dError(f"cannot import host module {module_name!r} (model.host {path!r}): {exc}") from None
    factory = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise Mtl3dError(f"host module {module_name!r} has no factory {attribute!r} (model.host {path!r})")
    return factory


def resolve_host(host: str) -> HostFactory:
    """The factory of `model.host`: a registered name or an import path."""
    return HOSTS[host] if host in HOSTS else import_host(host)


def host_import_path(host: str) -> str | None:
    """Where a host comes from, for the weights file: "package.module:factory" of a host from outside the package
    (named by its import path or registered by name), None for the built-in hosts."""
    if host in BUILT_IN:
        return None
    factory = resolve_host(host)
    return f"{factory.__module__}:{factory.__qualname__}"


def build_host(spec: HostSpec) -> Host:
    """The host `spec.model.host` names, checked against the Host contract."""
    host = resolve_host(spec.model.host)(spec)
    if not isinstance(host, nn.Module) or not isinstance(getattr(host, "feature_channels", None), int):
        raise Mtl3dError(f"model.host {spec.model.host!r} did not return a Host (an nn.Module with an int "
                         f"feature_channels and forward(image) -> HostOutput)")
    return host
