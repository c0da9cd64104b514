"""What a dataset is, independent of any task code: its description (meta.json) and the label conventions.

Sits below the task registry and the metrics so both can use it without an import loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mtl3dcli.errors import Mtl3dError

FORMAT_VERSION = 1
IGNORE_INDEX = 255  # class label of pixels without a label (segmentation, human parts)


@dataclass
class DatasetMeta:
    """Dataset-level facts every consumer needs: tasks present, class names and palettes, depth range."""

    name: str
    tasks: list[str]
    classes: dict[str, list[str]] = field(default_factory=dict)  # per class task, names indexed by train id
    palettes: dict[str, list[list[int]]] = field(default_factory=dict)
    depth_range: tuple[float, float] = (0.0, 10.0)  # metres: display range and default near/far for rendering
    edge_max_dist: float = 0.011  # boundary matching tolerance as a fraction of the image diagonal
    version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # provenance: source archive, generator options, ...

    def palette(self, task: str) -> list[list[int]]:
        """The class colours of `task`: the dataset's own, else the VOC scheme for its class count."""
        from mtl3dcli.colors import default_palette  # numpy: kept out of the CLI's start-up imports

        if task in self.palettes:
            return self.palettes[task]
        return default_palette(len(self.classes.get(task, [])) or 256)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["depth_range"] = list(self.depth_range)
        return data

    @classmethod
    def from_json(cls, data: Any, source: str = "meta.json") -> DatasetMeta:
        if not isinstance(data, dict) or "name" not in data or "tasks" not in data:
            raise Mtl3dError(f"{source}: not a mtl3d dataset description (needs at least 'name' and 'tasks')")
        known = set(cls.__dataclass_fields__)
        meta = cls(**{k: v for k, v in data.items() if k in known})
        if meta.version > FORMAT_VERSION:
            raise Mtl3dError(f"{source}: dataset format version {meta.version} is newer than this mtl3d supports")
        meta.depth_range = (float(meta.depth_range[0]), float(meta.depth_range[1]))
        return meta
