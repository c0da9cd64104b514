"""A scene's description: the classes, materials and their solid textures (evaluated at 3D points, so a
surface looks the same from every view), primitives, wall items, the room's walls as segments, and the array
view of a scene's solids used by camera placement and ray casting."""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np



SYNTHETIC_CLASSES: list[str] = ["bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture",
                                "sofa", "table", "tv", "wall", "window"]  # the NYUv2 13-class names, in order


SYNTHETIC_PALETTE: list[list[int]] = [
    [31, 119, 180], [255, 127, 14], [174, 199, 232], [44, 160, 44], [140, 86, 75], [148, 103, 189],
    [214, 39, 40], [227, 119, 194], [188, 189, 34], [23, 190, 207], [40, 40, 40], [199, 199, 199], [255, 221, 120],
]


CLASS_ID = {name: index for index, name in enumerate(SYNTHETIC_CLASSES)}


_EPS = 1e-6


@dataclass(frozen=True)
class Material:
    """A solid procedural texture: albedo = base * (1 - w) + second * w with a pattern weight w(point) in [0, 1]."""

    base: np.ndarray  # (3,) linear RGB albedo
    second: np.ndarray  # (3,) albedo of the pattern's other phase
    pattern: str  # plain | stripes | checker | noise | wood
    scale: float  # metres per pattern period
    axis: np.ndarray  # (3,) unit direction of stripes and wood grain
    waves: np.ndarray  # (4, 4) sine-noise waves: direction * frequency (3) and phase (1), per period


@dataclass(frozen=True)
class Primitive:
    """A solid in its local frame (centred at `center`, rotated by `yaw` about world z)."""

    kind: str  # box | cylinder | sphere (cylinders are vertical)
    label: int
    center: np.ndarray  # (3,) world position
    half: np.ndarray  # (3,) half extents: box sides; cylinder (r, r, half height); sphere (r, r, r)
    yaw: float
    material: Material


@dataclass(frozen=True)
class WallItem:
    """A flat rectangle on wall `wall` (0: x=0, 1: x=W, 2: y=0, 3: y=D); `rect` = (s0, s1, z0, z1) in metres,
    s running along y for walls 0/1 and along x for walls 2/3. It changes class and appearance, never geometry."""

    label: int
    wall: int
    rect: tuple[float, float, float, float]
    material: Material  # picture content or window frame
    frame: np.ndarray  # (3,) frame albedo
    frame_width: float
    mullions: tuple[int, int] = (0, 0)  # window grid: vertical and horizontal bars


@dataclass
class Scene:
    size: np.ndarray  # (3,) room W, D, H in metres
    primitives: list[Primitive]
    wall_items: list[WallItem]
    floor: Material
    walls: Material
    ceiling: Material
    lights: np.ndarray  # (L, 3) point light positions
    light_power: np.ndarray  # (L,)
    ambient: float
    tint: np.ndarray  # (3,) light colour
    glass: np.ndarray = field(default_factory=lambda: np.array([0.8, 0.88, 0.95]))  # self-lit window glass


# per class: hue, saturation and value ranges (overlapping on purpose), allowed patterns, pattern period range (m)
_LOOKS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[str, ...],
                        tuple[float, float]]] = {
    "wall": ((0.0, 1.0), (0.02, 0.25), (0.55, 0.92), ("plain", "plain", "noise", "stripes"), (0.15, 0.5)),
    "floor": ((0.04, 0.12), (0.2, 0.6), (0.3, 0.75), ("wood", "wood", "checker", "noise"), (0.12, 0.5)),
    "ceiling": ((0.0, 1.0), (0.0, 0.1), (0.75, 0.97), ("plain", "noise"), (0.5, 1.5)),
    "bed": ((0.0, 1.0), (0.1, 0.6), (0.4, 0.9), ("plain", "stripes", "noise", "checker"), (0.08, 0.3)),
    "sofa": ((0.0, 1.0), (0.15, 0.6), (0.25, 0.8), ("plain", "noise"), (0.1, 0.4)),
    "table": ((0.04, 0.12), (0.2, 0.6), (0.2, 0.8), ("wood", "wood", "plain"), (0.08, 0.2)),
    "furniture": ((0.04, 0.12), (0.05, 0.6), (0.25, 0.9), ("wood", "plain", "stripes"), (0.1, 0.3)),
    "chair": ((0.0, 1.0), (0.1, 0.6), (0.2, 0.8), ("wood", "plain", "noise"), (0.08, 0.2)),
    "tv": ((0.0, 1.0), (0.0, 0.2), (0.03, 0.18), ("plain", "noise"), (0.2, 0.5)),
    "books": ((0.0, 1.0), (0.3, 0.8), (0.3, 0.9), ("stripes", "plain"), (0.03, 0.08)),
    "objects": ((0.0, 1.0), (0.1, 0.8), (0.2, 0.95), ("plain", "noise", "checker", "stripes"), (0.05, 0.2)),
    "picture": ((0.0, 1.0), (0.2, 0.8), (0.2, 0.9), ("noise",), (0.15, 0.4)),
    # looks of parts whose class is another one's: rugs are floor, doors wall, curtains window, shades objects
    "rug": ((0.0, 1.0), (0.15, 0.7), (0.2, 0.85), ("checker", "stripes", "noise", "plain"), (0.1, 0.5)),
    "door": ((0.04, 0.12), (0.05, 0.5), (0.3, 0.95), ("wood", "plain", "plain"), (0.1, 0.3)),
    "curtain": ((0.0, 1.0), (0.05, 0.6), (0.35, 0.95), ("stripes", "stripes", "plain", "noise"), (0.05, 0.15)),
    "counter": ((0.0, 1.0), (0.0, 0.2), (0.2, 0.95), ("noise", "plain", "checker"), (0.05, 0.3)),
    "board": ((0.5, 0.65), (0.0, 0.08), (0.8, 0.97), ("plain",), (0.5, 1.0)),
    "shade": ((0.05, 0.15), (0.0, 0.4), (0.6, 0.98), ("plain", "noise"), (0.1, 0.3)),
    "plant": ((0.22, 0.4), (0.4, 0.8), (0.15, 0.55), ("noise",), (0.05, 0.15)),
}


def _random_colour(rng: np.random.Generator, look: str) -> np.ndarray:
    hue, sat, val = (rng.uniform(*r) for r in _LOOKS[look][:3])
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, val))


def make_material(rng: np.random.Generator, look: str) -> Material:
    """A random material of a class look (see _LOOKS); the second colour is a darker or contrasting variant."""
    patterns, periods = _LOOKS[look][3], _LOOKS[look][4]
    pattern = patterns[rng.integers(len(patterns))]
    base = _random_colour(rng, look)
    if pattern in ("checker", "stripes") and rng.random() < 0.5:
        second = _random_colour(rng, look)
    else:
        second = base * rng.uniform(0.45, 0.8)
    axis = rng.normal(size=3)
    if rng.random() < 0.7:  # mostly axis-aligned grain and stripes, like real furniture and fabrics
        axis = np.eye(3)[rng.integers(3)]
    directions = rng.normal(size=(4, 3))
    directions *= rng.uniform(0.5, 2.0, size=(4, 1)) / np.linalg.norm(directions, axis=1, keepdims=True)
    waves = np.concatenate([directions, rng.uniform(0, 2 * np.pi, size=(4, 1))], axis=1)
    return Material(base, second, pattern, float(rng.uniform(*periods)), axis / np.linalg.norm(axis), waves)


def texture(points: np.ndarray, material: Material) -> np.ndarray:
    """Albedo (N, 3) of `material` at points (N, 3) in the surface's local frame (metres).

    Solid textures depend on the 3D point only, so one surface point has one colour in every view.
    """
    p = points.astype(np.float32) / np.float32(material.scale)  # float32: sin is several times faster
    waves = material.waves.astype(np.float32)
    phase = np.float32(2 * np.pi) * (p @ waves[:, :3].T) + waves[:, 3]
    noise = np.sin(phase) @ np.full(len(waves), 1.0 / len(waves), dtype=np.float32)  # (N,) smooth, in [-1, 1]
    if material.pattern == "stripes":
        w = ((p @ material.axis.astype(np.float32)) % 1.0 < 0.5) * np.float32(0.85) + 0.08 * noise
    elif material.pattern == "checker":
        w = np.floor(p + np.float32(0.25)) @ np.ones(3, np.float32) % 2 * np.float32(0.85) + 0.08 * noise
    elif material.pattern == "noise":
        w = 0.5 + 0.5 * np.tanh(2.0 * noise)
    elif material.pattern == "wood":
        w = ((p @ material.axis.astype(np.float32)) * 2.0 + 0.7 * noise) % 1.0
        w = w * w
    else:  # plain: a gentle low-frequency variation
        w = 0.15 + 0.12 * noise
    w = w[:, None]
    return material.base * (1.0 - w) + material.second * w


def _rotate_z(vectors: np.ndarray, yaw: float) -> np.ndarray:
    """Rotate vectors (..., 3) by `yaw` radians about z (local -> world; pass -yaw for world -> local)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.asarray(vectors, dtype=np.float64) @ np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # v R^T


@dataclass(frozen=True)
class _Solids:
    """The primitives of a scene as arrays, for vectorized tests: centers (P, 3), halves (P, 3), yaws (P,), kind
    codes (P,) 0 box / 1 cylinder / 2 sphere."""

    centers: np.ndarray
    halves: np.ndarray
    yaws: np.ndarray
    kinds: np.ndarray

    @staticmethod
    def of(primitives: list[Primitive]) -> _Solids:
        codes = {"box": 0, "cylinder": 1, "sphere": 2}
        return _Solids(np.array([p.center for p in primitives]).reshape(-1, 3),
                       np.array([p.half for p in primitives]).reshape(-1, 3),
                       np.array([p.yaw for p in primitives]), np.array([codes[p.kind] for p in primitives]))

    def inside(self, points: np.ndarray, margin: float) -> np.ndarray:
        """Whether points (M, 3) lie inside each solid grown by `margin` metres: (P, M) bool."""
        d = points[None] - self.centers[:, None]  # (P, M, 3)
        c, s = np.cos(self.yaws)[:, None], np.sin(self.yaws)[:, None]
        x, y, z = c * d[..., 0] + s * d[..., 1], c * d[..., 1] - s * d[..., 0], d[..., 2]  # world -> local
        hx, hy, hz = (self.halves[:, axis, None] + margin for axis in range(3))
        box = (np.abs(x) < hx) & (np.abs(y) < hy) & (np.abs(z) < hz)
        cylinder = (x * x + y * y < hx * hx) & (np.abs(z) < hz)
        sphere = x * x + y * y + z * z < hx * hx
        kinds = self.kinds[:, None]
        return np.where(kinds == 0, box, np.where(kinds == 1, cylinder, sphere))

    def corners(self) -> np.ndarray:
        """World corners (P, 8, 3) of every solid's oriented bounding box."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        local = signs[None] * self.halves[:, None]  # (P, 8, 3)
        c, s = np.cos(self.yaws)[:, None], np.sin(self.yaws)[:, None]
        world = np.stack([c * local[..., 0] - s * local[..., 1], s * local[..., 0] + c * local[..., 1],
                          local[..., 2]], axis=-1)
        return world + self.centers[:, None]


@dataclass(frozen=True)
class _Segment:
    """A straight vertical face furniture can stand against: floor points origin + s * along (0 <= s <= length),
    `normal` (unit, 2D) pointing into the room."""

    origin: np.ndarray
    along: np.ndarray
    normal: np.ndarray
    length: float

    def point(self, s: float, inward: float) -> np.ndarray:
        p = self.origin + self.along * s + self.normal * inward
        return np.array([p[0], p[1], 0.0])

    @property
    def yaw(self) -> float:
        """The yaw that turns an object's front (+y) along `normal`."""
        return math.atan2(-self.normal[0], self.normal[1])


def _room_segments(size: np.ndarray) -> list[_Segment]:
    """The four walls in face order: 0 x = 0, 1 x = W, 2 y = 0, 3 y = D."""
    e0, e1 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    return [_Segment(np.zeros(2), e1, e0, size[1]), _Segment(np.array([size[0], 0.0]), e1, -e0, size[1]),
            _Segment(np.zeros(2), e0, e1, size[0]), _Segment(np.array([0.0, size[1]]), e0, -e1, size[0])]


def _wall_point(size: np.ndarray, wall: int, s: float, inward: float) -> np.ndarray:
    """Floor point at coordinate s along room wall `wall`, `inward` metres into the room."""
    return _room_segments(size)[wall].point(s, inward)
