"""Typed run configuration: YAML preset -> dataclasses, with dotted command-line overrides.

A preset is a YAML file with the sections below; `base: NAME` inherits another preset and overrides only what it
lists (the `-noreg` baselines are two lines). Unknown keys and wrongly typed values are errors that name the key,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mtl3dcli.errors import Mtl3dError


# Closed choices are Literal types: `_coerce` checks them when a config is built, the one place they are validated.
EvalMode = Literal["resize", "pad"]
Head = Literal["hrnet", "light"]
CameraModel = Literal["orthographic", "perspective"]
Spacing = Literal["depth", "disparity"]
RegularizerKind = Literal["triplane", "2d-control"]
DensityActivation = Literal["softplus", "trunc_exp"]
Aggregation = Literal["sum", "mean", "product", "concat"]
Decode = Literal["point", "ray"]
Optimizer = Literal["adamw", "adam", "sgd"]
Schedule = Literal["poly", "cosine", "constant"]
SaliencyProtocol = Literal["invpt", "mtl-pytorch"]


@dataclass
class DataConfig:
    root: str = "data/synthetic"
    tasks: list[str] = field(default_factory=lambda: ["semseg", "depth", "normals", "edge"])
    train_split: str = "train"
    train_fraction: float = 1.0  # train on this fraction of the split's scenes (fixed subset, the same for every seed)
    val_split: str = "val"
    size: tuple[int, int] = (96, 128)  # training crop (H, W)
    eval_size: tuple[int, int] | None = None  # evaluation input size; None keeps the stored size
    eval_mode: EvalMode = "resize"  # labels follow the image either way
    scale: tuple[float, float] = (0.75, 1.5)  # random rescale range before the crop
    flip: bool = True
    jitter: float = 0.2  # photometric jitter strength (0 = off)
    rotate: float = 0.0  # random rotation in [-rotate, rotate] degrees about the principal point (0 = off)
    crop_max_class: float = 1.0  # redraw crops where one class covers this fraction of the labels or more (1 = off)
    batch_size: int = 8
    workers: int = 2
    cache: bool = False  # keep decoded samples in memory (in every loader process): for datasets that fit in RAM
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {edge: {pos_weight: 0.95}}


@dataclass
class ModelConfig:
    host: str = "baseline"  # a registered host (baseline, mti-net, invpt, ...) or an import path "pkg.module:factory"
    backbone: str = "tiny"  # see mtl3dcli.models.backbones.BACKBONES
    pretrained: str | None = None  # null | imagenet (timm's download and cache) | path of a local weights file
    backbone_options: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model kwargs
    width: int = 32  # channels of the tiny backbone's first stage (ignored by the others)
    head: Head = "light"  # baseline heads: light (head_channels wide) | hrnet (upstream HighResolutionHead)
    head_channels: int = 64  # hidden channels of each light head
    host_options: dict[str, Any] = field(default_factory=dict)  # host-specific settings (see each host module)


@dataclass
class RegularizerConfig:
    enabled: bool = True
    kind: RegularizerKind = "triplane"  # triplane: the 3D-aware regularizer | 2d-control: same size, no 3D
    camera: CameraModel = "orthographic"  # orthographic (the paper) | perspective (pixel-aligned cube of each K)
    spacing: Spacing = "depth"  # perspective: samples and cube z uniform in depth | disparity (finer near the camera)
    plane_channels: int = 32  # C: channels of each of the three planes
    plane_size: tuple[int, int] | None = None  # tri-plane resolution; None = the fused feature map's size
    render_size: tuple[int, int] = (24, 32)  # rendered (H, W); the paper renders NYUv2 at 56x72
    samples: int = 32  # points per ray
    near: float | None = None  # perspective near/far in metres; None = dataset depth range (near >= 0.1)
    far: float | None = None
    density_hidden: int = 64
    task_hidden: int = 32
    density_activation: DensityActivation = "softplus"
    aggregation: Aggregation = "sum"  # how the three plane features combine; sum is the paper's
    decode: Decode = "point"  # point: task MLPs on every sample, then composite | ray: composite the feature, then decode
    tasks: list[str] | None = None  # tasks to render; None = all model tasks
    alpha: dict[str, float] = field(default_factory=dict)  # per-task weight of the rendered loss
    default_alpha: float = 1.0
    cross_view: bool = False  # also render view A's tri-plane into a partner camera B (needs cameras)
    cross_alpha: float = 0.5  # weight of the cross-view loss relative to alpha_t
    cross_tolerance: float = 0.05  # relative depth agreement for a partner pixel to count as seen by the input view
    min_overlap: float = 0.3  # partner views must see at least this fraction of the anchor view
    chunk: int = 2048  # rays per render chunk (all images): bounds memory; keeps CPU buffers under malloc's mmap size
    fused: bool = True  # the exact speed rewrites (models/regularizer_fused.py); false: the plain per-sample path


@dataclass
class TrainConfig:
    steps: int = 2000
    optimizer: Optimizer = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    schedule: Schedule = "poly"
    poly_power: float = 0.9
    warmup_steps: int = 0
    clip_grad: float | None = 10.0
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    sync_bn: bool = False  # BatchNorm statistics over all GPUs under multi-GPU DDP (InvPT's SyncBatchNorm)
    ema: float | None = None  # EMA decay of the weights used for eval/best, e.g. 0.999
    loss_weights: dict[str, float] = field(default_factory=dict)  # per-task weights; default from the task registry
    eval_every: int = 500
    save_every: int = 250
    log_every: int = 20
    best_metric: str | None = None  # "task/metric" to pick `best`; None = first task's primary metric
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class EvalConfig:
    edge_thresholds: int | None = None  # None: the hosts' protocol (SEISM's 101 HED thresholds); n: n evenly spaced
    edge_nms: bool = True  # non-maximum suppression before matching (the hosts' protocol); false: plain thresholding
    edge_workers: int = 0  # processes for boundary matching (the slow part); 0 = one per CPU core, at most 8
    saliency_protocol: SaliencyProtocol = "invpt"  # invpt: pooled maxF, beta^2 0.3 | mtl-pytorch: per image, beta^2 1
    val_subset: int = 64  # while training, slow metrics (boundaries) score this many fixed validation images (0 = all)
    val_edge_thresholds: int | None = 25  # ... with this many thresholds; the last validation and `evaluate` use all
    references: dict[str, dict[str, float]] = field(default_factory=dict)  # single-task numbers for Delta_m

    def metric_options(self, full: bool = True) -> dict[str, Any]:
        """Keyword options for Task.metric (see mtl3dcli.tasks); `full` False gives the bounded training protocol."""
        workers = self.edge_workers or min(8, os.cpu_count() or 1)
        thresholds = self.edge_thresholds if full or self.val_edge_thresholds is None else self.val_edge_thresholds
        return {"edge_thresholds": thresholds, "edge_nms": self.edge_nms, "edge_workers": workers if workers > 1 else 0,
                "saliency_protocol": self.saliency_protocol}

    def validation_subset(self, size: int) -> set[int] | None:
        """Indices of the fixed validation images that slow metrics use while training: evenly spaced over the
        split, so every scene type is represented; None = all."""
        if self.val_subset <= 0 or self.val_subset >= size:
            return None
        return {int(i * size / self.val_subset) for i in range(self.val_subset)}


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> Config:
        try:
            return _build(cls, data, "")
        except Mtl3dError as exc:
            raise Mtl3dError(f"{source}: {exc}") from None


# --- presets ------------------------------------------------------------------------------------------------------
def presets_dir() -> Path:
    """Presets ship inside the wheel (mtl3dcli/presets); in a source checkout they live at the repository top."""
    packaged = Path(__file__).parent / "presets"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "presets"


def list_presets() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def preset_description(name: str) -> str:
    """The first comment line of a bundled preset: what it trains, and the paper's numbers it is compared with."""
    first = (presets_dir() / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[0]
    return first.lstrip("# ").strip()


def _preset_file(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or os.sep in name:
        if not path.is_file():
            raise Mtl3dError(f"preset file not found: {path}")
        return path
    path = presets_dir() / f"{name}.yaml"
    if not path.is_file():
        raise Mtl3dError(f"unknown preset {name!r}; available: {', '.join(list_presets())} (or pass a .yaml path)")
    return path


def _read_preset(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = _preset_file(name)
    if str(path.resolve()) in seen:
        raise Mtl3dError(f"preset {path} inherits from itself (base chain: {' -> '.join(seen)})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise Mtl3dError(f"cannot read preset {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise Mtl3dError(f"preset {path} must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    base = str(base)
    if Path(base).suffix in (".yaml", ".yml") or os.sep in base:
        base = str(path.parent / base)  # a relative base path is relative to the file naming it, not the cwd
    return merge(_read_preset(base, (*seen, str(path.resolve()))), data)


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; values of `update` win, nested mappings merge key by key."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """'train.lr=1e-4' -> {'train': {'lr': 0.0001}}; the value is parsed as YAML (lists, null, numbers)."""
    if "=" not in text:
        raise Mtl3dError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return _nest(key, value)


def _nest(key: str, value: Any) -> dict[str, Any]:
    """'train.lr', 1e-4 -> {'train': {'lr': 1e-4}}."""
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise Mtl3dError(f"override {key!r}={value!r} has an empty key")
    out: dict[str, Any] = {}
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(preset: str | None = None, overrides: list[str] | None = None,
                values: dict[str, Any] | None = None) -> Config:
    """Preset name or path (None = defaults), then `section.key=value` text overrides (parsed as YAML), then typed
    `values` {"section.key": value} (command-line options) -> validated Config."""
    data = _read_preset(preset) if preset else {}
    for text in overrides or []:
        data = merge(data, parse_override(text))
    for key, value in (values or {}).items():
        data = merge(data, _nest(key, value))
    config = Config.from_dict(data, source=f"preset {preset}" if preset else "config")
    validate(config)
    from mtl3dcli.models.hosts import check_host_name  # the host registry imports this module

    check_host_name(config.model.host)
    return config


def validate(config: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    positive = {"train.steps": config.train.steps, "data.batch_size": config.data.batch_size,
                "regularizer.samples": config.regularizer.samples, "regularizer.chunk": config.regularizer.chunk,
                "regularizer.plane_channels": config.regularizer.plane_channels}
    for key, value in positive.items():
        if value <= 0:
            raise Mtl3dError(f"{key} must be positive, got {value}")
    if config.train.lr <= 0:
        raise Mtl3dError(f"train.lr must be positive, got {config.train.lr}")
    if config.regularizer.cross_tolerance <= 0:
        raise Mtl3dError(f"regularizer.cross_tolerance must be positive, got {config.regularizer.cross_tolerance}")
    if config.regularizer.cross_view and config.regularizer.kind != "triplane":
        raise Mtl3dError("regularizer.cross_view needs regularizer.kind=triplane (the 2d-control has no 3D field)")
    if config.regularizer.cross_view and config.regularizer.camera != "perspective":
        raise Mtl3dError("regularizer.cross_view needs regularizer.camera=perspective (a partner camera is a pinhole)")
    if config.train.ema is not None and not 0.0 < config.train.ema < 1.0:
        raise Mtl3dError(f"train.ema must be in (0, 1), got {config.train.ema}")


# --- dict <-> dataclass ------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise Mtl3dError(f"{where or 'the config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise Mtl3dError(f"unknown key(s) {', '.join(unknown)} in {where or 'the top level'} "
                         f"(allowed: {', '.join(sorted(names))})")
    kwargs = {key: _coerce(hints[key], value, f"{where}.{key}" if where else key)
              for key, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against a type hint, converting YAML-natural forms (int for float, list for tuple)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value, key)
            except Mtl3dError as exc:
                errors.append(str(exc))
        raise Mtl3dError(errors[0])
    if hint is Any:
        return value
    if origin is Literal:
        if value in args:
            return value
        raise Mtl3dError(f"{key} must be one of {', '.join(map(str, args))}, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise Mtl3dError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise Mtl3dError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        value = _number(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise Mtl3dError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise Mtl3dError(f"{key} must be a string, got {value!r}")
    if origin is tuple:
        if isinstance(value, str) and "x" in value:  # "448x576"
            value = value.split("x")
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise Mtl3dError(f"{key} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, _number(v) if a in (int, float) else v, key) for a, v in zip(args, value))
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise Mtl3dError(f"{key} must be a list, got {value!r}")
        return [_coerce(args[0], v, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise Mtl3dError(f"{key} must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    raise Mtl3dError(f"{key}: unsupported config type {hint}")


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value
