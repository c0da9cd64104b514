"""A study's grid and request: variants and their controls, `StudySpec` (study.yaml), the run folders."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from mtl3dcli.config import Config, load_config
from mtl3dcli.errors import Mtl3dError

CONTROL = "noreg"
RESOLUTION = 1.0  # the Delta_m half-width (percentage points) `seeds_needed` plans for, unless the study sets one
DATA_MODIFIERS = ("low-data",)
RUN_FIELDS = ("preset", "data", "overrides", "steps")  # what every run of a study folder shares


@dataclass(frozen=True)
class Variant:
    """A named list of config overrides; `data` holds the modifiers that also apply to its control."""

    name: str
    overrides: tuple[str, ...]
    data: tuple[str, ...] = ()

    @property
    def control(self) -> str:
        return "+".join([CONTROL, *self.data])


def _modifier(text: str) -> tuple[list[str], bool]:
    """One modifier -> (overrides, is a data modifier)."""
    key, _, value = text.partition("=")
    if ":" in text:
        return [item for item in text.split(":", 1)[1].split(";") if item], False
    simple = {"noreg": ["regularizer.enabled=false"], "reg": ["regularizer.enabled=true"],
              "crossview": ["regularizer.enabled=true", "regularizer.camera=perspective", "regularizer.cross_view=true"],
              "2d-control": ["regularizer.enabled=true", "regularizer.kind=2d-control"]}
    if text in simple:
        return simple[text], False
    if key == "reg-alpha" and value:
        return ["regularizer.enabled=true", f"regularizer.default_alpha={value}", "regularizer.alpha={}"], False
    if key == "low-data" and value:
        return [f"data.train_fraction={value}"], True
    raise Mtl3dError(f"unknown study variant {text!r}: use noreg, reg, reg-alpha=X, crossview, 2d-control, "
                     f"low-data=F or NAME:KEY=VALUE (combine with +)")


def parse_variant(text: str) -> Variant:
    """'noreg+low-data=0.25' -> Variant('noreg+low-data=0.25', overrides, data=('low-data=0.25',))."""
    text = text.strip()
    overrides, data = [], []
    for part in text.split("+"):
        found, is_data = _modifier(part.strip())
        overrides += found
        if is_data:
            data.append(part.strip())
    name = text.split(":", 1)[0] if ":" in text and "+" not in text else text
    return Variant(name, tuple(overrides), tuple(data))


def study_grid(names: list[str]) -> list[Variant]:
    """The variants asked for plus every control they need, controls first, no duplicates."""
    variants = {v.name: v for v in map(parse_variant, names)}
    if not variants:
        raise Mtl3dError("a study needs at least one variant")
    controls = {v.control: parse_variant(v.control) for v in variants.values()}
    return list({**controls, **variants}.values())


LAUNCHERS = ("local", "submitit")
CLUSTERS = ("slurm", "local")  # submitit's executors a study may use


@dataclass
class LauncherSpec:
    """Where a study's runs train: `local`, in this process (or --jobs worker processes), or `submitit`, each run
    as its own job (`cluster.py`): on SLURM, or with submitit's local executor on this machine. The limits are
    per run (one job); `slurm` holds further sbatch options (e.g. {"account": "...", "qos": "..."})."""

    name: str = "local"
    cluster: str | None = None  # submitit's executor: slurm or local (default: slurm where it is installed)
    partition: str | None = None
    gpus_per_run: int | None = None
    cpus_per_run: int | None = None  # also the run's CPU threads (a run's numbers depend on them)
    time_min: int = 240  # a job's time limit; a run that needs longer is requeued from its checkpoint
    mem_gb: float | None = None
    slurm: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.name not in LAUNCHERS:
            raise Mtl3dError(f"unknown launcher {self.name!r} (--launcher): use {' or '.join(LAUNCHERS)}")
        if self.cluster is not None and self.cluster not in CLUSTERS:
            raise Mtl3dError(f"unknown cluster {self.cluster!r} (--cluster): use {' or '.join(CLUSTERS)}")
        for name in ("gpus_per_run", "cpus_per_run", "time_min", "mem_gb"):
            value = getattr(self, name)
            if value is not None and not value >= (0 if name == "gpus_per_run" else 1):
                raise Mtl3dError(f"launcher {name} (--{name.replace('_', '-')}) must be positive, got {value}")


@dataclass
class StudySpec:
    """What `mtl3d study` runs; saved as study.yaml so a rerun continues the same grid."""

    preset: str
    seeds: int
    variants: list[str]
    data: str | None = None  # dataset root (default: the preset's)
    eval_data: list[str] = field(default_factory=list)  # further datasets every run is scored on (camera shift)
    overrides: list[str] = field(default_factory=list)  # `--set` for every run
    steps: int | None = None
    half_width: float | None = None  # sequential seeds: add seeds until every paired Delta_m is within +/- this
    max_seeds: int | None = None  # ... or this many seeds are reached
    pooled: bool = False  # ... where a variant has one, its pooled interval (stats.pooled_paired) decides
    launcher: LauncherSpec = field(default_factory=LauncherSpec)

    def __post_init__(self):
        if isinstance(self.launcher, (str, dict)):  # from study.yaml: a name, or a mapping of LauncherSpec's fields
            try:
                self.launcher = LauncherSpec(**(self.launcher if isinstance(self.launcher, dict)
                                                else {"name": self.launcher}))
            except TypeError as exc:
                raise Mtl3dError(f"launcher: {exc}") from None
        self._check_seed_rule()

    def _check_seed_rule(self) -> None:
        if self.seeds < 1:
            raise Mtl3dError(f"a study needs at least 1 seed, got {self.seeds}")
        if self.half_width is None:
            for name, flag, given in (("max_seeds", "--max-seeds", self.max_seeds is not None),
                                      ("pooled", "--pooled", self.pooled)):
                if given:
                    raise Mtl3dError(f"{name} ({flag}) applies to a sequential study: give half_width "
                                     "(--half-width) too")
            return
        if not self.half_width > 0:
            raise Mtl3dError(f"half_width (--half-width) must be positive, got {self.half_width}")
        if self.seeds < 2:
            raise Mtl3dError("a sequential study starts from 2 or more seeds (an interval needs two; 3 is usual)")
        if self.max_seeds is None or self.max_seeds < self.seeds:
            raise Mtl3dError(f"a sequential study needs max_seeds (--max-seeds) of at least seeds ({self.seeds}), got "
                             f"{self.max_seeds}")

    @property
    def resolution(self) -> float:
        """The paired Delta_m half-width the study plans seeds for."""
        return self.half_width if self.half_width is not None else RESOLUTION

    def config(self, variant: Variant, seed: int) -> Config:
        values = {"train.seed": seed, "data.root": self.data, "train.steps": self.steps}
        return load_config(self.preset, [*self.overrides, *variant.overrides],
                           {k: v for k, v in values.items() if v is not None})


def with_launcher(spec: StudySpec, **flags: Any) -> StudySpec:
    """`spec` with the launcher settings of the command line (`LauncherSpec` fields; None keeps the spec's)."""
    given = {key: value for key, value in flags.items() if value is not None}
    return replace(spec, launcher=LauncherSpec(**{**asdict(spec.launcher), **given})) if given else spec


def load_spec(path: Path) -> StudySpec:
    """A study YAML file: preset, seeds, variants (list), and optionally data, eval_data, overrides, steps, the seed
    rule (half_width, max_seeds, pooled) and launcher (a name, or a mapping of `LauncherSpec`'s fields)."""
    if not path.is_file():
        raise Mtl3dError(f"study file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise Mtl3dError(f"cannot read study file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise Mtl3dError(f"study file {path} must be a YAML mapping with preset, seeds and variants")
    try:
        return StudySpec(**data)
    except (TypeError, Mtl3dError) as exc:
        raise Mtl3dError(f"study file {path}: {exc}") from None



def run_dir(out: Path, variant: Variant, seed: int) -> Path:
    return out / "runs" / variant.name.replace(":", "_").replace("=", "") / f"seed{seed}"


def run_datasets(spec: StudySpec, config: Config) -> list[str]:
    return [config.data.root, *spec.eval_data]


def dataset_names(spec: StudySpec) -> list[str]:
    """The metric-key prefix of each of `_datasets`: "" for the study's own data, the folder name of an eval_data
    set (its keys read "<name>:<task>/<metric>")."""
    return ["", *(Path(data).name for data in spec.eval_data)]

