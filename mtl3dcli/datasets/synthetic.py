"""Procedural multi-view indoor scenes: the embedded default dataset (no download, deterministic for a seed).

A scene is a room of one of five types (bedroom, living room, kitchen, office, mixed): a box, sometimes L-shaped or
split by a partition wall, with a column or ceiling beams; furniture built from boxes, vertical cylinders and
spheres (beds with nightstands and pillows, sofas, cabinets with door and drawer fronts, bookshelves, wardrobes,
kitchen counters with wall cabinets, desks with monitors and chairs, dining and coffee tables with chairs,
armchairs), clutter on surfaces and on the floor (books, boxes, bins, plants, lamps), rugs, hanging lamps, and
flat wall items (pictures, windows with curtains, doors, whiteboards) that change appearance but not geometry.
Every view is ray cast exactly, vectorized over all pixels (nearest analytic hit wins), so depth, normals, classes
and boundaries are exact and consistent across views. RGB uses solid procedural textures evaluated at 3D hit points
(so a surface looks the same from every view), Lambertian shading from ceiling point lights plus ambient, and mild
sensor noise. Class colour ranges overlap (wood floors, tables and furniture; pale walls and ceilings), and some
parts look like another class than theirs (rugs are floor, doors wall, curtains window), so segmentation needs
shape and context, not a colour lookup.

The cameras of a scene spread over a wide arc (`arc_degrees`, 90 by default) around what they look at, at
different distances, heights and rolls: wide baselines with a shared region. Intrinsics are NYUv2's, or drawn per
view (`fov_range`, `principal_jitter`) from a random stream of their own, so they never change the scene.

World frame: metres, z up; the room fills [0, W] x [0, D] x [0, H]. Cameras follow DESIGN.md (OpenCV camera frame,
z-depth, pixel centres at (u + 0.5, v + 0.5), pose = camera-to-world). Written by hand because no maintained library
renders exactly labelled multi-view scenes this cheaply on a CPU.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtl3dcli.derive import boundaries_from_segmentation
from mtl3dcli.data.layout import LayoutWriter
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.tasks import TASKS

SYNTHETIC_CLASSES: list[str] = ["bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture",
                                "sofa", "table", "tv", "wall", "window"]  # the NYUv2 13-class names, in order
SYNTHETIC_PALETTE: list[list[int]] = [
    [31, 119, 180], [255, 127, 14], [174, 199, 232], [44, 160, 44], [140, 86, 75], [148, 103, 189],
    [214, 39, 40], [227, 119, 194], [188, 189, 34], [23, 190, 207], [40, 40, 40], [199, 199, 199], [255, 221, 120],
]
CLASS_ID = {name: index for index, name in enumerate(SYNTHETIC_CLASSES)}
NYU_FOCAL = (518.8579, 519.4696)  # NYUv2 RGB focal lengths (pixels) at 640x480
_EPS = 1e-6
GENERATOR_VERSION = 2  # 1: box rooms, +-25 degree arcs (before --fov-range); 2: this file
_SPLITS = ("train", "val")


DEFAULT_ARC_DEGREES = 90.0
FOV_LIMITS = (20.0, 120.0)  # allowed horizontal fields of view (degrees) for --fov-range
MAX_PRINCIPAL_JITTER = 0.2


@dataclass
class SyntheticOptions:
    train_scenes: int = 80
    val_scenes: int = 180  # 1,080 views: with 30 scenes, which scenes are scored widened every study interval
    views: int = 6
    height: int = 96
    width: int = 128
    seed: int = 0
    arc_degrees: float = DEFAULT_ARC_DEGREES  # yaw span of a scene's cameras around their look-at region
    fov_range: tuple[float, float] | None = None  # horizontal FoV drawn per view (degrees); None: NYUv2 intrinsics
    principal_jitter: float = 0.0  # principal point offset drawn per view, up to this fraction of width / height


# --- scene description --------------------------------------------------------------------------------------------
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


# --- appearance -------------------------------------------------------------------------------------------------
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


# --- ray intersections (pure, vectorized) -------------------------------------------------------------------------
def _rotate_z(vectors: np.ndarray, yaw: float) -> np.ndarray:
    """Rotate vectors (..., 3) by `yaw` radians about z (local -> world; pass -yaw for world -> local)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.asarray(vectors, dtype=np.float64) @ np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # v R^T


# Ray directions are component-first here, dirs = (dx, dy, dz) with arrays of any one shape (...): an image block
# of a (3, H, W) array slices into three 2-D views, so no ray is copied before its intersection tests.
def intersect_box(origin: np.ndarray, dirs, half: np.ndarray) -> np.ndarray:
    """Ray parameter t (...) of the first hit of rays origin (3,) + t * dirs (3, ...) with the box [-half, half]
    (slab method: entry = latest slab entry, exit = earliest slab exit); inf where missed or where the box is
    behind or around the origin."""
    near = far = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            inv = 1.0 / dirs[axis]
            t1 = (-half[axis] - origin[axis]) * inv
            t2 = (half[axis] - origin[axis]) * inv
            lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
            near = lo if near is None else np.maximum(near, lo)
            far = hi if far is None else np.minimum(far, hi)
    return np.where((near <= far) & (near > _EPS), near, np.inf)


def intersect_cylinder(origin: np.ndarray, dirs, radius: float, half_height: float) -> np.ndarray:
    """First hit t (...) with the capped vertical cylinder x^2 + y^2 <= r^2, |z| <= h centred at the local origin:
    the side from the quadratic a t^2 + 2 b t + c = 0, plus the cap that faces the origin."""
    ox, oy, oz = origin
    dx, dy, dz = dirs
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - radius * radius
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        side = (-b - np.sqrt(disc)) / a
        side_ok = (disc >= 0) & (a > 0) & (side > _EPS) & (np.abs(oz + side * dz) <= half_height)
        t = np.where(side_ok, side, np.inf)
        if abs(oz) > half_height:
            cap = (math.copysign(half_height, oz) - oz) / dz
            x, y = ox + cap * dx, oy + cap * dy
            cap_ok = (cap > _EPS) & (x * x + y * y <= radius * radius)
            t = np.where(cap_ok & (cap < t), cap, t)
    return t


def intersect_sphere(origin: np.ndarray, dirs, radius: float) -> np.ndarray:
    """First hit t (...) with the sphere |x| <= r centred at the local origin."""
    dx, dy, dz = dirs
    a = dx * dx + dy * dy + dz * dz
    b = origin[0] * dx + origin[1] * dy + origin[2] * dz
    c = float(origin @ origin) - radius * radius
    disc = b * b - a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def intersect_primitive(primitive: Primitive, origin: np.ndarray, dirs) -> np.ndarray:
    """First hit t (...) of world rays origin (3,) + t * dirs (3, ...) with `primitive` (t in units of dirs)."""
    local_origin = _rotate_z(origin - primitive.center, -primitive.yaw)
    if primitive.yaw:
        c, s = math.cos(primitive.yaw), math.sin(primitive.yaw)  # world -> local: rotate by -yaw
        dirs = (c * dirs[0] + s * dirs[1], c * dirs[1] - s * dirs[0], dirs[2])
    if primitive.kind == "box":
        return intersect_box(local_origin, dirs, primitive.half)
    if primitive.kind == "cylinder":
        return intersect_cylinder(local_origin, dirs, primitive.half[0], primitive.half[2])
    return intersect_sphere(local_origin, dirs, primitive.half[0])


def local_normals(kind: str, points: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Outward unit normals (N, 3) at surface points (N, 3) given in the primitive's local frame."""
    if kind == "sphere":
        return points / np.linalg.norm(points, axis=1, keepdims=True)
    normals = np.zeros_like(points)
    rows = np.arange(len(points))
    if kind == "box":
        axis = np.argmax(np.abs(points) / half, axis=1)  # the face the point lies on
        normals[rows, axis] = np.sign(points[rows, axis])
        return normals
    rho = np.hypot(points[:, 0], points[:, 1])
    on_side = rho / half[0] >= np.abs(points[:, 2]) / half[2]
    normals[:, :2] = np.where(on_side[:, None], points[:, :2] / np.maximum(rho, _EPS)[:, None], 0.0)
    normals[:, 2] = np.where(on_side, 0.0, np.sign(points[:, 2]))
    return normals


def intersect_room(origin: np.ndarray, dirs, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exit hit of rays (3, ...) from `origin` inside the room box [0, size]: t (...) and face (...) int, face =
    2 * axis + (1 if the far wall of that axis else 0): 0/1 walls x = 0/W, 2/3 walls y = 0/D, 4 floor, 5 ceiling."""
    t = np.full(np.shape(dirs[0]), np.inf)
    face = np.zeros(np.shape(dirs[0]), dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            d = dirs[axis]
            forward = d > 0
            t_axis = np.where(forward, (size[axis] - origin[axis]) / d, -origin[axis] / d)
            first = (t_axis > 0) & (t_axis < t)  # NaN and negative never win
            t = np.where(first, t_axis, t)
            face = np.where(first, 2 * axis + forward, face)
    return t, face


# --- cameras ----------------------------------------------------------------------------------------------------
def intrinsics(height: int, width: int, hfov: float | None = None,
               principal_offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Pinhole K (3, 3) for an image of height x width.

    Without `hfov`, NYUv2-like: the 640x480 focal lengths scaled to the size. With `hfov` (horizontal field of view,
    degrees), square pixels: fx = fy = (width / 2) / tan(hfov / 2); e.g. hfov 90 at width 128 gives fx = 64.
    The principal point is the image centre shifted by `principal_offset` = (du, dv) pixels.
    """
    if hfov is None:
        fx, fy = NYU_FOCAL[0] * width / 640.0, NYU_FOCAL[1] * height / 480.0
    else:
        fx = fy = width / 2.0 / math.tan(math.radians(hfov) / 2.0)
    return np.array([[fx, 0.0, width / 2.0 + principal_offset[0]],
                     [0.0, fy, height / 2.0 + principal_offset[1]],
                     [0.0, 0.0, 1.0]])


def draw_intrinsics(rng: np.random.Generator, views: int, height: int, width: int,
                    fov_range: tuple[float, float] | None, principal_jitter: float) -> list[np.ndarray]:
    """K (3, 3) per view: hfov uniform in `fov_range` (degrees; None keeps the NYUv2 intrinsics) and the principal
    point offset uniform within +-principal_jitter of the width and height.

    Three numbers are drawn per view whatever the options, so the field of view a view gets does not depend on
    whether jitter is on, and `rng` (a stream of its own, see _camera_rng) never shifts the scene's draws.
    """
    draws = rng.random((views, 3))
    Ks = []
    for fov_u, du, dv in draws:
        hfov = None if fov_range is None else fov_range[0] + (fov_range[1] - fov_range[0]) * fov_u
        offset = ((2 * du - 1) * principal_jitter * width, (2 * dv - 1) * principal_jitter * height)
        Ks.append(intrinsics(height, width, hfov, offset))
    return Ks


def look_at(position: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world pose (4, 4) at `position` looking at `target`; roll (radians) turns the camera about its
    optical axis (0: camera x horizontal, y pointing down-ish)."""
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    if roll:
        right, down = math.cos(roll) * right + math.sin(roll) * down, math.cos(roll) * down - math.sin(roll) * right
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, position
    return pose


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


def _structural(primitive: Primitive) -> bool:
    """Walls, columns and beams: part of the room, never removed to make room for a camera."""
    return primitive.label in (CLASS_ID["wall"], CLASS_ID["ceiling"])


def _blockers(scene: Scene, poses: list[np.ndarray], targets: np.ndarray, clearance: float,
              sight: float) -> tuple[set[int], bool]:
    """Primitives in the way of cameras: (indices of those within `clearance` of a camera or on its optical axis
    within `sight` metres, whether a structural one (wall, column, beam) also hides a camera's look-at point).

    Points are sampled every 1 cm (no solid of make_scene is thinner than 2 cm but the rugs, which lie on the
    floor); targets (V, 3) are the look-at points, checked every 2 cm up to 0.3 m short of them.
    """
    if not scene.primitives:
        return set(), False
    solids = _Solids.of(scene.primitives)
    positions = np.array([pose[:3, 3] for pose in poses])
    steps = np.arange(0.0, sight, 0.01)
    axis_points = (positions[:, None] + np.array([pose[:3, 2] for pose in poses])[:, None] * steps[:, None])
    hit = solids.inside(positions, clearance).any(axis=1) | solids.inside(axis_points.reshape(-1, 3), 0.0).any(axis=1)
    structure = np.array([_structural(p) for p in scene.primitives])
    lines = []
    for position, target in zip(positions, targets):
        length = np.linalg.norm(target - position)
        fractions = np.arange(0.0, max(length - 0.3, 0.0), 0.02) / max(length, _EPS)
        lines.append(position + fractions[:, None] * (target - position))
    line_points = np.concatenate(lines) if lines else np.zeros((0, 3))
    hidden = bool(structure.any() and solids.inside(line_points, 0.0)[structure].any())
    return set(np.flatnonzero(hit).tolist()), hidden


def _room_reach(point: np.ndarray, direction: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """How far (metres) from 2D `point` along unit `direction` the box [low, high] extends."""
    reach = math.inf
    for axis in range(2):
        if direction[axis] > _EPS:
            reach = min(reach, (high[axis] - point[axis]) / direction[axis])
        elif direction[axis] < -_EPS:
            reach = min(reach, (low[axis] - point[axis]) / direction[axis])
    return reach


def _look_at_region(scene: Scene, candidates: list[Primitive], rng: np.random.Generator) -> np.ndarray:
    """The centre (3,) of the region an arc of cameras looks at: mostly furniture, sometimes a wall item, else a
    random point; at least 0.5 m from the walls."""
    size = scene.size
    target = np.array([rng.uniform(0.5, size[0] - 0.5), rng.uniform(0.5, size[1] - 0.5), rng.uniform(0.4, 1.5)])
    choice = rng.random()
    if candidates and choice < 0.8:  # mostly look at furniture rather than at an empty corner
        target[:2] = candidates[rng.integers(len(candidates))].center[:2] + rng.uniform(-0.3, 0.3, 2)
        target[2] -= 0.15  # furniture: 0.25-1.35 m
    elif scene.wall_items and choice < 0.92:  # or at a picture, window or door, which also brings the ceiling in
        item = scene.wall_items[rng.integers(len(scene.wall_items))]
        s_mid = (item.rect[0] + item.rect[1]) / 2
        target = np.array([*_wall_point(size, item.wall, s_mid, 0.5)[:2], (item.rect[2] + item.rect[3]) / 2])
    target[:2] = np.clip(target[:2], 0.5, size[:2] - 0.5)
    return target


def _camera_arc(scene: Scene, candidates: list[Primitive], views: int, span: float,
                rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray] | None:
    """One draw of `views` poses spread over a `span` (radians) yaw arc around a look-at region, with their look-at
    points (V, 3); None when staying 0.3 m inside the walls brings a camera closer than 1.3 m to the region."""
    size = scene.size
    base = np.linspace(-span / 2, span / 2, views) if views > 1 else np.zeros(1)
    step = span / (views - 1) if views > 1 else 0.0
    target = _look_at_region(scene, candidates, rng)
    towards_centre = math.atan2(size[1] / 2 - target[1], size[0] / 2 - target[0])
    azimuth, distance = towards_centre + rng.uniform(-1.0, 1.0), rng.uniform(1.4, 2.8)
    height = rng.uniform(1.1, 1.7)
    offsets = base + rng.uniform(-0.25, 0.25, size=len(base)) * step
    jitter = rng.uniform(-1, 1, size=(len(base), 6))  # distance, height, look-at x/y/z, roll
    poses, targets = [], []
    for offset, (dist, rise, tx, ty, tz, roll) in zip(offsets, jitter):
        direction = np.array([math.cos(azimuth + offset), math.sin(azimuth + offset)])
        reach = _room_reach(target[:2], direction, np.full(2, 0.3), size[:2] - 0.3)
        along = min(distance * (1.0 + 0.2 * dist), reach)
        if along < 1.3:
            return None
        position = np.array([*(target[:2] + along * direction), np.clip(height + 0.3 * rise, 0.8, size[2] - 0.4)])
        look = target + np.array([0.3 * tx, 0.3 * ty, 0.2 * tz])
        poses.append(look_at(position, look, math.radians(4.0) * roll))
        targets.append(look)
    return poses, np.array(targets)


def camera_poses(scene: Scene, views: int, rng: np.random.Generator, arc_degrees: float = DEFAULT_ARC_DEGREES,
                 attempts: int = 200) -> tuple[Scene, list[np.ndarray]]:
    """`views` camera-to-world poses (4, 4) around one look-at region (usually furniture or a wall item).

    The cameras spread over an `arc_degrees` yaw arc around the region (in arc order, with jitter; narrower where
    the room does not allow it), each at its own distance (1.3-3.4 m, shortened to stay in the room), height
    (0.8 m up to 0.4 m below the ceiling) and roll (+-4 degrees), looking at its own point within 0.3 m of the
    region's centre: wide baselines, yet every view sees the region. Every camera is at least 0.3 m inside the
    walls, 0.25 m clear of every object, sees at least 0.8 m along its optical axis and has no wall or column
    between it and its look-at point. If no sampled arc satisfies that, the furniture in the way of the last arc
    that failed only because of furniture is removed, so the returned scene may be a reduced copy of `scene`.
    """
    candidates = [p for p in scene.primitives if p.label not in (CLASS_ID["wall"], CLASS_ID["ceiling"],
                                                                 CLASS_ID["floor"])]
    fallback = None
    for attempt in range(attempts):
        # the second half of the attempts narrows the arc step by step (to nothing), for cramped rooms
        span = math.radians(arc_degrees) * min(1.0, 2.0 - 2.0 * attempt / (attempts - 1))
        arc = _camera_arc(scene, candidates, views, span, rng)
        if arc is None:
            continue
        poses, targets = arc
        blocked, hidden = _blockers(scene, poses, targets, clearance=0.25, sight=0.8)
        if hidden or any(_structural(scene.primitives[i]) for i in blocked):
            continue
        if not blocked:
            return scene, poses
        fallback = poses, blocked
    if fallback is None:
        # not seen in 1,100 rooms of make_scene, up to 30 views on a 180 degree arc (the arc shrinks to nothing)
        raise RuntimeError("no camera arc fits inside the room")
    poses, blocked = fallback
    return dataclasses.replace(scene, primitives=[p for i, p in enumerate(scene.primitives) if i not in blocked]), poses


# --- scene generation -------------------------------------------------------------------------------------------
# An object is built as parts in its own frame (x along the wall it stands against, y away from it: its front faces
# +y, z up, origin on the floor), then placed. A part is (kind, label, center, half, material, yaw).
def _part(kind: str, label: str, center, half, material: Material, yaw: float = 0.0) -> tuple:
    return (kind, CLASS_ID[label], np.asarray(center, dtype=np.float64), np.asarray(half, dtype=np.float64),
            material, float(yaw))


def _extent(parts: list[tuple]) -> np.ndarray:
    """Axis-aligned bounds (2, 3) [min, max] of parts in the object frame (yawed parts by their rotated box)."""
    lows, highs = [], []
    for kind, _, center, half, _, yaw in parts:
        c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
        reach = np.array([c * half[0] + s * half[1], s * half[0] + c * half[1], half[2]])
        lows.append(center - reach)
        highs.append(center + reach)
    return np.array([np.min(lows, axis=0), np.max(highs, axis=0)])


def _centred(parts: list[tuple]) -> tuple[list[tuple], float, float]:
    """Shift parts so their footprint is centred on the object origin: (parts, half_x, half_y)."""
    (x0, y0, _), (x1, y1, _) = _extent(parts)
    shift = np.array([(x0 + x1) / 2, (y0 + y1) / 2, 0.0])
    return [(k, lab, c - shift, h, m, yaw) for k, lab, c, h, m, yaw in parts], (x1 - x0) / 2, (y1 - y0) / 2


def _place(parts: list[tuple], center: np.ndarray, yaw: float) -> list[Primitive]:
    """Object-frame parts -> world primitives of an object standing at floor point `center` with `yaw`."""
    return [Primitive(kind, label, center + _rotate_z(local, yaw), half, yaw + part_yaw, material)
            for kind, label, local, half, material, part_yaw in parts]


def _lamp(rng: np.random.Generator, x: float, y: float, z: float, tall: bool) -> list[tuple]:
    """A table lamp (tall=False) or a floor lamp standing at (x, y, z): base, pole, shade; all 'objects'."""
    metal, shade = make_material(rng, "objects"), make_material(rng, "shade")
    pole = rng.uniform(1.2, 1.6) if tall else rng.uniform(0.2, 0.35)
    radius = rng.uniform(0.15, 0.25) if tall else rng.uniform(0.09, 0.15)
    shade_h = radius * rng.uniform(0.8, 1.3)
    return [_part("cylinder", "objects", [x, y, z + 0.015], [radius * 0.7, radius * 0.7, 0.015], metal),
            _part("cylinder", "objects", [x, y, z + pole / 2], [0.012, 0.012, pole / 2], metal),
            _part("cylinder", "objects", [x, y, z + pole + shade_h / 2 - 0.05], [radius, radius, shade_h / 2], shade)]


def _book_stack(rng: np.random.Generator, x: float, y: float, z: float) -> list[tuple]:
    """1-3 books of one thickness stacked at (x, y) on a surface at height z."""
    parts = []
    thick = rng.uniform(0.02, 0.06)
    for level in range(rng.integers(1, 4)):
        parts.append(_part("box", "books", [x, y, z + thick * (level + 0.5)],
                           [rng.uniform(0.08, 0.13), rng.uniform(0.1, 0.15), thick / 2],
                           make_material(rng, "books"), rng.uniform(-0.3, 0.3)))
    return parts


def _small_object(rng: np.random.Generator, x: float, y: float, z: float, half_x: float) -> list[tuple]:
    """One random small thing resting at (x, y, z): a book stack, a ball, a can or vase, a table lamp (on surfaces
    wider than 0.3 m) or a box."""
    choice = rng.random()
    if choice < 0.3:
        return _book_stack(rng, x, y, z)
    if choice < 0.5:
        r = rng.uniform(0.04, 0.12)
        return [_part("sphere", "objects", [x, y, z + r], [r, r, r], make_material(rng, "objects"))]
    if choice < 0.75:
        r, h = rng.uniform(0.03, 0.09), rng.uniform(0.08, 0.35)
        return [_part("cylinder", "objects", [x, y, z + h / 2], [r, r, h / 2], make_material(rng, "objects"))]
    if choice < 0.85 and half_x > 0.15:
        return _lamp(rng, x, y, z, tall=False)
    h = rng.uniform(0.04, 0.25)
    return [_part("box", "objects", [x, y, z + h / 2], [rng.uniform(0.04, 0.15), rng.uniform(0.04, 0.12), h / 2],
                  make_material(rng, "objects"), rng.uniform(-0.5, 0.5))]


def _small_objects(rng: np.random.Generator, half_x: float, half_y: float, z: float, count: int) -> list[tuple]:
    """Books and small objects resting on a surface of half size (half_x, half_y) at height z (object frame)."""
    parts = []
    for _ in range(count):
        x, y = rng.uniform(-0.8, 0.8) * half_x, rng.uniform(-0.8, 0.8) * half_y
        parts += _small_object(rng, x, y, z, half_x)
    return parts


def _fronts(x: float, front_y: float, width: float, z0: float, z1: float, material: Material, rows: int,
            columns: int) -> list[tuple]:
    """Door or drawer fronts ('furniture') on a front face at y = front_y spanning x +- width / 2 and z0..z1: a
    rows x columns grid of 2 cm panels standing 1 cm proud, so shading and depth show the seams."""
    parts, gap = [], 0.012
    cell_w, cell_h = (width - gap) / columns, (z1 - z0 - gap) / rows
    for r in range(rows):
        for c in range(columns):
            parts.append(_part("box", "furniture",
                               [x - width / 2 + gap / 2 + (c + 0.5) * cell_w, front_y,
                                z0 + gap / 2 + (r + 0.5) * cell_h], [cell_w / 2 - gap / 2, 0.01, cell_h / 2 - gap / 2],
                               material))
    return parts


def _bed(rng: np.random.Generator, room_height: float) -> list[tuple]:
    """A bed (head against the wall at -y) with pillows and a cover, sometimes nightstands with lamps."""
    width, length, height = rng.uniform(0.9, 1.8), rng.uniform(1.9, 2.15), rng.uniform(0.4, 0.6)
    fabric, cover, wood = make_material(rng, "bed"), make_material(rng, "bed"), make_material(rng, "furniture")
    head_h = rng.uniform(0.7, 1.2)
    parts = [_part("box", "bed", [0, 0, height / 2], [width / 2, length / 2, height / 2], fabric),
             _part("box", "bed", [0, -length / 2 + 0.03, head_h / 2], [width / 2 + 0.02, 0.03, head_h / 2], wood)]
    if rng.random() < 0.7:  # a cover over the foot end
        cover_len = length * rng.uniform(0.5, 0.75)
        parts.append(_part("box", "bed", [0, length / 2 - cover_len / 2 + 0.02, height + 0.015],
                           [width / 2 + 0.03, cover_len / 2, 0.03], cover))
    pillows = 1 if width < 1.2 else int(rng.integers(1, 3))
    pillow = make_material(rng, "objects")
    for k in range(pillows):
        x = (k + 0.5) * width / pillows - width / 2
        parts.append(_part("box", "objects", [x, -length / 2 + 0.3, height + 0.06],
                           [min(0.3, width / pillows / 2 - 0.04), 0.18, 0.06], pillow))
    if rng.random() < 0.6:  # nightstands
        size, stand_h = rng.uniform(0.4, 0.55), rng.uniform(0.45, 0.62)
        stand = make_material(rng, "furniture")
        for side in ((-1, 1) if rng.random() < 0.6 else (int(rng.choice([-1, 1])),)):
            x = side * (width / 2 + 0.06 + size / 2)
            y = -length / 2 + size / 2
            parts.append(_part("box", "furniture", [x, y, stand_h / 2], [size / 2, size / 2, stand_h / 2], stand))
            parts += _fronts(x, y + size / 2, size, 0.05, stand_h - 0.03, stand, 2, 1)
            if rng.random() < 0.7:
                parts += [(k, lab, c + [x, y, 0], h, m, yaw) for k, lab, c, h, m, yaw in
                          _lamp(rng, 0.0, 0.0, stand_h, tall=False)]
    return parts


def _sofa(rng: np.random.Generator, room_height: float, single: bool = False) -> list[tuple]:
    """A sofa (or an armchair) with its back at -y, cushions, sometimes a chaise (an L-shaped sofa)."""
    width = rng.uniform(0.75, 1.0) if single else rng.uniform(1.4, 2.4)
    depth = rng.uniform(0.8, 0.95)
    seat, back, arm = rng.uniform(0.38, 0.46), rng.uniform(0.75, 0.95), rng.uniform(0.55, 0.68)
    arm_w = rng.uniform(0.08, 0.2)
    fabric = make_material(rng, "sofa")
    parts = [_part("box", "sofa", [0, 0.1, seat / 2], [width / 2 - arm_w, depth / 2 - 0.1, seat / 2], fabric),
             _part("box", "sofa", [0, -depth / 2 + 0.1, back / 2], [width / 2, 0.1, back / 2], fabric),
             *(_part("box", "sofa", [side * (width / 2 - arm_w / 2), 0.1, arm / 2],
                     [arm_w / 2, depth / 2 - 0.1, arm / 2], fabric) for side in (-1, 1))]
    if not single and rng.random() < 0.3:  # chaise on one end
        side, extra = int(rng.choice([-1, 1])), rng.uniform(0.6, 0.9)
        chaise_w = rng.uniform(0.6, 0.8)
        parts.append(_part("box", "sofa", [side * (width / 2 - arm_w - chaise_w / 2), depth / 2 + extra / 2, seat / 2],
                           [chaise_w / 2, extra / 2, seat / 2], fabric))
    cushion = make_material(rng, "objects")
    for _ in range(rng.integers(0, 3 if single else 4)):
        x = rng.uniform(-1, 1) * (width / 2 - arm_w - 0.25)
        size = rng.uniform(0.18, 0.25)
        parts.append(_part("box", "objects", [x, -depth / 2 + 0.28, seat + size], [size, 0.07, size], cushion,
                           rng.uniform(-0.2, 0.2)))
    return parts


def _cabinet(rng: np.random.Generator, room_height: float) -> list[tuple]:
    """A cabinet with doors, a bookshelf (rows of book spines), a dresser with drawers, a wardrobe or a TV stand."""
    style = ("cabinet", "shelf", "shelf", "dresser", "wardrobe", "tv")[rng.integers(6)]
    width, depth = rng.uniform(0.5, 1.6), rng.uniform(0.35, 0.6)
    height = {"cabinet": rng.uniform(0.5, 1.2), "shelf": rng.uniform(1.0, 2.2), "dresser": rng.uniform(0.7, 1.1),
              "wardrobe": rng.uniform(1.8, 2.3), "tv": rng.uniform(0.4, 0.7)}[style]
    height = min(height, room_height - 0.15)
    material = make_material(rng, "furniture")
    if style == "wardrobe":
        width, depth = rng.uniform(0.9, 2.0), rng.uniform(0.55, 0.65)
    elif style == "tv":
        width = max(width, 1.0)
    parts = [_part("box", "furniture", [0, 0, height / 2], [width / 2, depth / 2, height / 2], material)]
    fronts = make_material(rng, "furniture") if rng.random() < 0.4 else material
    if style == "shelf":  # one striped box per shelf: its stripes read as book spines
        for bottom in np.arange(0.1, height - 0.3, rng.uniform(0.32, 0.4)):
            if rng.random() < 0.15:
                continue
            spines = dataclasses.replace(make_material(rng, "books"), pattern="stripes", axis=np.array([1.0, 0, 0]),
                                         second=_random_colour(rng, "books"))
            row_w, row_h = rng.uniform(0.3, 0.95) * width, rng.uniform(0.18, 0.28)
            x = rng.uniform(-1, 1) * (width - row_w) / 2
            parts.append(_part("box", "books", [x, depth / 2 - 0.08, bottom + row_h / 2], [row_w / 2, 0.1, row_h / 2],
                               spines))
    elif style == "dresser":
        parts += _fronts(0.0, depth / 2, width, 0.06, height - 0.04, fronts, int(rng.integers(3, 5)),
                         int(rng.integers(1, 3)))
    elif style == "wardrobe":
        parts += _fronts(0.0, depth / 2, width, 0.05, height - 0.05, fronts, 1, int(rng.integers(2, 4)))
    elif style == "cabinet":
        parts += _fronts(0.0, depth / 2, width, 0.05, height - 0.04, fronts, 1, int(rng.integers(1, 4)))
    if style == "tv":
        tv_w = rng.uniform(0.7, min(1.5, width))
        tv_h = tv_w * rng.uniform(0.5, 0.62)
        screen = make_material(rng, "tv")
        parts += [_part("box", "tv", [0, 0, height + 0.05 + tv_h / 2], [tv_w / 2, 0.03, tv_h / 2], screen),
                  _part("box", "tv", [0, 0, height + 0.025], [0.12, 0.08, 0.025], screen)]
    if height < 1.3 and style != "tv" and rng.random() < 0.8:  # things on top
        parts += _small_objects(rng, width / 2, depth / 2, height, int(rng.integers(1, 5)))
    return parts


def _counter(rng: np.random.Generator, room_height: float) -> list[tuple]:
    """A kitchen counter run: base cabinets with doors, a worktop, objects on it and wall cabinets above."""
    width, depth, height = rng.uniform(1.2, 3.0), rng.uniform(0.55, 0.65), rng.uniform(0.86, 0.92)
    body, top = make_material(rng, "furniture"), make_material(rng, "counter")
    columns = max(1, int(width / rng.uniform(0.4, 0.6)))
    parts = [_part("box", "furniture", [0, 0, (height - 0.04) / 2], [width / 2, depth / 2 - 0.02, (height - 0.04) / 2],
                   body),
             _part("box", "furniture", [0, 0.01, height - 0.02], [width / 2 + 0.01, depth / 2, 0.02], top)]
    parts += _fronts(0.0, depth / 2 - 0.02, width, 0.1, height - 0.06, body, 1, columns)
    parts += _small_objects(rng, width / 2, depth / 2, height, int(rng.integers(1, 6)))
    if room_height > 2.45 and rng.random() < 0.7:
        z0 = rng.uniform(1.45, 1.6)
        z1 = min(z0 + rng.uniform(0.6, 0.8), room_height - 0.05)
        upper_d = rng.uniform(0.3, 0.36)
        y = -depth / 2 + upper_d / 2
        parts.append(_part("box", "furniture", [0, y, (z0 + z1) / 2], [width / 2, upper_d / 2, (z1 - z0) / 2], body))
        parts += _fronts(0.0, -depth / 2 + upper_d, width, z0 + 0.02, z1 - 0.02, body, 1, columns)
    return parts


def _desk(rng: np.random.Generator, room_height: float) -> list[tuple]:
    """A desk ('table') with a monitor ('tv'), things on it and a chair in front of it."""
    width, depth, height = rng.uniform(1.0, 1.7), rng.uniform(0.55, 0.8), rng.uniform(0.72, 0.77)
    wood = make_material(rng, "table")
    parts = [_part("box", "table", [0, 0, height - 0.02], [width / 2, depth / 2, 0.02], wood)]
    if rng.random() < 0.5:  # side panels
        for sx in (-1, 1):
            parts.append(_part("box", "table", [sx * (width / 2 - 0.02), 0, (height - 0.04) / 2],
                               [0.02, depth / 2 - 0.02, (height - 0.04) / 2], wood))
    else:
        for sx in (-1, 1):
            for sy in (-1, 1):
                parts.append(_part("box", "table", [sx * (width / 2 - 0.04), sy * (depth / 2 - 0.04),
                                                    (height - 0.04) / 2], [0.02, 0.02, (height - 0.04) / 2], wood))
    if rng.random() < 0.7:
        screen = make_material(rng, "tv")
        tv_w = rng.uniform(0.45, 0.75)
        tv_h = tv_w * rng.uniform(0.55, 0.65)
        y = -depth / 2 + 0.15
        parts += [_part("box", "tv", [0, y, height + 0.12 + tv_h / 2], [tv_w / 2, 0.02, tv_h / 2], screen),
                  _part("box", "tv", [0, y, height + 0.06], [0.03, 0.02, 0.06], screen),
                  _part("box", "objects", [0, y + 0.25, height + 0.012], [0.2, 0.07, 0.012],
                        make_material(rng, "objects"))]
    parts += _small_objects(rng, width / 2, depth / 2, height, int(rng.integers(0, 4)))
    if rng.random() < 0.8:
        yaw = math.pi + rng.uniform(-0.4, 0.4)  # facing the desk, a little turned
        at = np.array([rng.uniform(-0.2, 0.2) * width, depth / 2 + rng.uniform(0.1, 0.3), 0.0])
        parts += [(k, lab, at + _rotate_z(c, yaw), h, m, part_yaw + yaw) for k, lab, c, h, m, part_yaw in _chair(rng)]
    return parts


def _chair(rng: np.random.Generator, material: Material | None = None, style: int | None = None) -> list[tuple]:
    """A chair facing +y (backrest at -y): a stool-like block, four legs, or an office chair."""
    material = material or make_material(rng, "chair")
    style = int(rng.integers(3)) if style is None else style
    seat = rng.uniform(0.42, 0.48)
    if style == 0:
        radius = rng.uniform(0.18, 0.25)
        return [_part("cylinder", "chair", [0, 0, seat / 2], [radius, radius, seat / 2], material),
                _part("box", "chair", [0, -radius + 0.02, seat + 0.22], [radius, 0.025, 0.22], material)]
    half = rng.uniform(0.2, 0.25)
    back = rng.uniform(0.3, 0.5)
    parts = [_part("box", "chair", [0, 0, seat - 0.02], [half, half, 0.025], material),
             _part("box", "chair", [0, -half + 0.015, seat + back / 2], [half, 0.015, back / 2], material)]
    if style == 1:
        for sx in (-1, 1):
            for sy in (-1, 1):
                parts.append(_part("box", "chair", [sx * (half - 0.025), sy * (half - 0.025), (seat - 0.045) / 2],
                                   [0.017, 0.017, (seat - 0.045) / 2], material))
    else:
        parts += [_part("cylinder", "chair", [0, 0, seat / 2], [0.03, 0.03, seat / 2], material),
                  _part("cylinder", "chair", [0, 0, 0.04], [0.28, 0.28, 0.03], material)]
    return parts


def _table_group(rng: np.random.Generator, room_height: float) -> list[tuple]:
    """A dining table (rectangular or round) with chairs around it, or a low coffee table; things on top."""
    wood = make_material(rng, "table")
    style = rng.random()
    if style < 0.3:  # coffee table
        width, depth, height = rng.uniform(0.8, 1.3), rng.uniform(0.5, 0.8), rng.uniform(0.35, 0.48)
        parts = [_part("box", "table", [0, 0, height - 0.025], [width / 2, depth / 2, 0.025], wood),
                 _part("box", "table", [0, 0, 0.1], [width / 2 - 0.06, depth / 2 - 0.06, 0.015], wood)]
        for sx in (-1, 1):
            for sy in (-1, 1):
                parts.append(_part("box", "table", [sx * (width / 2 - 0.05), sy * (depth / 2 - 0.05), height / 2],
                                   [0.025, 0.025, height / 2 - 0.01], wood))
        return parts + _small_objects(rng, width / 2, depth / 2, height, int(rng.integers(1, 5)))
    chair_material, chair_style = make_material(rng, "chair"), int(rng.integers(3))
    height = rng.uniform(0.72, 0.78)
    if style < 0.6:  # round
        radius = rng.uniform(0.4, 0.65)
        parts = [_part("cylinder", "table", [0, 0, height - 0.02], [radius, radius, 0.02], wood),
                 _part("cylinder", "table", [0, 0, height / 2], [0.05, 0.05, height / 2 - 0.02], wood),
                 _part("cylinder", "table", [0, 0, 0.02], [radius * 0.5, radius * 0.5, 0.02], wood)]
        count = int(rng.integers(0, 5))
        start = rng.uniform(0, 2 * np.pi)
        seats = [(start + 2 * np.pi * k / max(count, 1), radius + rng.uniform(0.05, 0.25)) for k in range(count)]
        chairs = [(np.array([r * math.cos(phi), r * math.sin(phi), 0.0]), math.atan2(math.cos(phi), -math.sin(phi)))
                  for phi, r in seats]
        parts += _small_objects(rng, radius * 0.7, radius * 0.7, height, int(rng.integers(0, 4)))
    else:  # rectangular with legs
        width, depth = rng.uniform(0.9, 1.8), rng.uniform(0.7, 1.0)
        parts = [_part("box", "table", [0, 0, height - 0.02], [width / 2, depth / 2, 0.02], wood)]
        for sx in (-1, 1):
            for sy in (-1, 1):
                parts.append(_part("box", "table", [sx * (width / 2 - 0.06), sy * (depth / 2 - 0.06),
                                                    (height - 0.04) / 2], [0.025, 0.025, (height - 0.04) / 2], wood))
        sides = [(np.array([0.0, -depth / 2, 0]), 0.0), (np.array([0.0, depth / 2, 0]), math.pi),
                 (np.array([-width / 2, 0.0, 0]), -math.pi / 2), (np.array([width / 2, 0.0, 0]), math.pi / 2)]
        chairs = []
        for k in rng.permutation(4)[: rng.integers(0, 5)]:
            edge, yaw = sides[k]
            outward = _rotate_z(np.array([0.0, -1.0, 0.0]), yaw)  # from the table towards the chair
            chairs.append((edge + outward * rng.uniform(0.1, 0.3), yaw))
        parts += _small_objects(rng, width / 2, depth / 2, height, int(rng.integers(0, 5)))
    for at, yaw in chairs:
        yaw += rng.uniform(-0.3, 0.3)
        parts += [(k, lab, at + _rotate_z(c, yaw), h, m, part_yaw + yaw)
                  for k, lab, c, h, m, part_yaw in _chair(rng, chair_material, chair_style)]
    return parts


def _floor_object(rng: np.random.Generator, room_height: float) -> list[tuple]:
    """Clutter standing on the floor ('objects'): boxes, bins, balls, plants, floor lamps."""
    choice = rng.random()
    material = make_material(rng, "objects")
    if choice < 0.3:  # a box or a stack of boxes
        parts, z = [], 0.0
        hx, hy = rng.uniform(0.12, 0.35), rng.uniform(0.12, 0.3)
        for _ in range(rng.integers(1, 4)):
            h = rng.uniform(0.15, 0.45)
            parts.append(_part("box", "objects", [rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), z + h / 2],
                               [hx, hy, h / 2], material, rng.uniform(-0.2, 0.2)))
            z += h
            hx, hy = hx * rng.uniform(0.7, 1.0), hy * rng.uniform(0.7, 1.0)
            material = make_material(rng, "objects")
        return parts
    if choice < 0.5:
        r, h = rng.uniform(0.12, 0.25), rng.uniform(0.3, 1.0)
        return [_part("cylinder", "objects", [0, 0, h / 2], [r, r, h / 2], material)]
    if choice < 0.62:
        r = rng.uniform(0.1, 0.3)
        return [_part("sphere", "objects", [0, 0, r], [r, r, r], material)]
    if choice < 0.85:  # a potted plant: pot and one to three blobs of foliage
        r, h = rng.uniform(0.1, 0.22), rng.uniform(0.2, 0.45)
        leaves = make_material(rng, "plant")
        parts = [_part("cylinder", "objects", [0, 0, h / 2], [r, r, h / 2], material)]
        for _ in range(rng.integers(1, 4)):
            blob = r * rng.uniform(1.0, 1.8)
            parts.append(_part("sphere", "objects", [rng.uniform(-0.5, 0.5) * r, rng.uniform(-0.5, 0.5) * r,
                                                     h + blob * rng.uniform(0.6, 1.6)], [blob] * 3, leaves))
        return parts
    return _lamp(rng, 0.0, 0.0, 0.0, tall=True)


def _wall_mounted(rng: np.random.Generator, room_height: float) -> list[tuple]:
    """Things hanging on a wall: a shelf with books and objects, a wall cabinet, or a flat TV."""
    choice = rng.random()
    if choice < 0.45:
        width, depth, z = rng.uniform(0.6, 1.4), rng.uniform(0.18, 0.3), rng.uniform(1.0, 1.8)
        parts = [_part("box", "furniture", [0, 0, z], [width / 2, depth / 2, 0.015], make_material(rng, "furniture"))]
        return parts + _small_objects(rng, width / 2, depth / 2, z + 0.015, int(rng.integers(1, 5)))
    if choice < 0.7:
        width, depth, height = rng.uniform(0.5, 1.4), rng.uniform(0.28, 0.36), rng.uniform(0.4, 0.8)
        z0 = rng.uniform(1.4, 1.7)
        z1 = min(z0 + height, room_height - 0.05)
        material = make_material(rng, "furniture")
        parts = [_part("box", "furniture", [0, 0, (z0 + z1) / 2], [width / 2, depth / 2, (z1 - z0) / 2], material)]
        return parts + _fronts(0.0, depth / 2, width, z0 + 0.02, z1 - 0.02, material, 1, int(rng.integers(1, 3)))
    tv_w = rng.uniform(0.8, 1.5)
    tv_h = tv_w * rng.uniform(0.55, 0.62)
    z = rng.uniform(1.1, 1.5)
    return [_part("box", "tv", [0, 0, z], [tv_w / 2, 0.03, tv_h / 2], make_material(rng, "tv"))]


def _pendant(rng: np.random.Generator, room_height: float) -> list[tuple]:
    """A lamp hanging from the ceiling on a 2 cm cord ('objects')."""
    shade, cord = make_material(rng, "shade"), make_material(rng, "objects")
    bottom = max(room_height - rng.uniform(0.5, 0.9), 2.0)
    if rng.random() < 0.5:
        r = rng.uniform(0.12, 0.25)
        parts = [_part("sphere", "objects", [0, 0, bottom + r], [r, r, r], shade)]
        top = bottom + 2 * r
    else:
        r, h = rng.uniform(0.12, 0.3), rng.uniform(0.12, 0.3)
        parts = [_part("cylinder", "objects", [0, 0, bottom + h / 2], [r, r, h / 2], shade)]
        top = bottom + h
    return parts + [_part("cylinder", "objects", [0, 0, (top + room_height) / 2],
                          [0.01, 0.01, (room_height - top) / 2], cord)]


class _FloorPlan:
    """Occupied space as axis-aligned boxes (x0, x1, y0, y1, z0, z1), to keep furniture from interpenetrating."""

    def __init__(self, size: np.ndarray):
        self.size = size
        self.boxes: list[tuple[float, ...]] = []

    @staticmethod
    def footprint(center: np.ndarray, half_x: float, half_y: float, yaw: float) -> tuple[float, float, float, float]:
        c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
        ex, ey = c * half_x + s * half_y, s * half_x + c * half_y  # half extents of the rotated footprint
        return center[0] - ex, center[0] + ex, center[1] - ey, center[1] + ey

    def inside(self, rect: tuple[float, ...]) -> bool:
        return rect[0] > 0.01 and rect[2] > 0.01 and rect[1] < self.size[0] - 0.01 and rect[3] < self.size[1] - 0.01

    def free(self, box: tuple[float, ...], gap: float) -> bool:
        return not any(box[0] < o[1] + gap and o[0] < box[1] + gap and box[2] < o[3] + gap and o[2] < box[3] + gap and
                       box[4] < o[5] and o[4] < box[5] for o in self.boxes)

    def try_add(self, center: np.ndarray, half_x: float, half_y: float, yaw: float, z: tuple[float, float],
                gap: float = 0.05) -> bool:
        """Claim the footprint over heights z = (z0, z1) if it is inside the room and `gap` metres clear of every
        claimed box overlapping those heights."""
        box = (*self.footprint(center, half_x, half_y, yaw), *z)
        if not self.inside(box) or not self.free(box, gap):
            return False
        self.boxes.append(box)
        return True


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


def _structure(rng: np.random.Generator, size: np.ndarray, walls: Material, ceiling: Material,
               plan: _FloorPlan) -> tuple[list[Primitive], list[_Segment]]:
    """Room structure ('wall' solids from floor to ceiling, 'ceiling' beams): an L-shape corner block, a partition
    wall reaching into the room, a column; plus the extra wall faces furniture can stand against."""
    W, D, H = size
    solids: list[Primitive] = []
    segments: list[_Segment] = []

    def add(center, half, label=CLASS_ID["wall"], material=walls):
        solids.append(Primitive("box", label, np.array(center, dtype=np.float64), np.array(half, dtype=np.float64),
                                0.0, material))
        if label == CLASS_ID["wall"]:
            plan.boxes.append((center[0] - half[0], center[0] + half[0], center[1] - half[1], center[1] + half[1],
                               0.0, H))

    if rng.random() < 0.3:  # L-shaped room: a corner block
        a, b = W * rng.uniform(0.25, 0.45), D * rng.uniform(0.25, 0.45)
        right, back = rng.random() < 0.5, rng.random() < 0.5
        x0, y0 = (W - a if right else 0.0), (D - b if back else 0.0)
        add([x0 + a / 2, y0 + b / 2, H / 2], [a / 2, b / 2, H / 2])
        fx, fy = (x0 if right else x0 + a), (y0 if back else y0 + b)  # the inner faces
        segments += [_Segment(np.array([fx, y0]), np.array([0.0, 1.0]), np.array([-1.0 if right else 1.0, 0.0]), b),
                     _Segment(np.array([x0, fy]), np.array([1.0, 0.0]), np.array([0.0, -1.0 if back else 1.0]), a)]
    elif rng.random() < 0.35:  # a partition wall from one wall, leaving a passage
        wall = _room_segments(size)[int(rng.integers(4))]
        reach = (W if wall.normal[0] else D) * rng.uniform(0.35, 0.65)
        thick, s = rng.uniform(0.08, 0.15), wall.length * rng.uniform(0.3, 0.7)
        mid = wall.origin + wall.along * s + wall.normal * reach / 2
        half = np.abs(wall.along) * thick / 2 + np.abs(wall.normal) * reach / 2
        add([mid[0], mid[1], H / 2], [half[0], half[1], H / 2])
        for side in (-1.0, 1.0):
            segments.append(_Segment(wall.origin + wall.along * (s + side * thick / 2), wall.normal,
                                     wall.along * side, reach))
    if rng.random() < 0.2:  # a column
        half = rng.uniform(0.15, 0.3)
        for _ in range(20):
            at = np.array([rng.uniform(0.6, W - 0.6), rng.uniform(0.6, D - 0.6)])
            box = (at[0] - half, at[0] + half, at[1] - half, at[1] + half, 0.0, H)
            if plan.free(box, 0.5):
                add([at[0], at[1], H / 2], [half, half, H / 2])
                break
    if rng.random() < 0.2:  # ceiling beams
        along_x = rng.random() < 0.5
        depth, width = rng.uniform(0.15, 0.35), rng.uniform(0.2, 0.4)
        for _ in range(rng.integers(1, 3)):
            if along_x:
                center, half = [W / 2, rng.uniform(0.5, D - 0.5), H - depth / 2], [W / 2, width / 2, depth / 2]
            else:
                center, half = [rng.uniform(0.5, W - 0.5), D / 2, H - depth / 2], [width / 2, D / 2, depth / 2]
            add(center, half, CLASS_ID["ceiling"], ceiling)
    return solids, segments


def _wall_item_size(rng: np.random.Generator, kind: str) -> tuple[float, float, float]:
    """Width, height and bottom height (metres) of a wall item of `kind` (window, door, board or picture)."""
    if kind == "window":
        w, h, z0 = rng.uniform(0.8, 1.8), rng.uniform(1.0, 1.5), rng.uniform(0.7, 1.0)
    elif kind == "door":
        w, h, z0 = rng.uniform(0.8, 1.0), rng.uniform(2.0, 2.15), 0.0
    elif kind == "board":
        w, h = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0)
        z0 = rng.uniform(1.4, 1.6) - h / 2
    else:
        w, h = rng.uniform(0.3, 1.2), rng.uniform(0.3, 0.9)
        z0 = rng.uniform(1.3, 1.8) - h / 2
    return w, h, z0


def _wall_box(segment: _Segment, s0: float, s1: float, inward: float, z0: float, z1: float) -> tuple[float, ...]:
    """The floor-plan box of wall coordinates s0..s1 on `segment`, from the wall `inward` metres into the room,
    over heights z0..z1."""
    corners = [segment.point(s, depth) for s in (s0, s1) for depth in (0.0, inward)]
    return (min(c[0] for c in corners), max(c[0] for c in corners), min(c[1] for c in corners),
            max(c[1] for c in corners), z0, z1)


def _wall_item(rng: np.random.Generator, kind: str, wall: int, rect: tuple[float, float, float, float]) -> WallItem:
    """The look of a wall item of `kind` at `rect` on `wall`: a window, a door ('wall'), a whiteboard or mirror
    ('objects') or a picture."""
    if kind == "window":
        frame = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.1), rng.uniform(0.8, 0.95)))
        return WallItem(CLASS_ID["window"], wall, rect, make_material(rng, "wall"), frame,
                        float(rng.uniform(0.04, 0.08)), (int(rng.integers(0, 3)), int(rng.integers(0, 2))))
    if kind == "door":
        return WallItem(CLASS_ID["wall"], wall, rect, make_material(rng, "door"), _random_colour(rng, "door"),
                        float(rng.uniform(0.04, 0.08)))
    if kind == "board":
        board = make_material(rng, "board")
        return WallItem(CLASS_ID["objects"], wall, rect, board, _random_colour(rng, "furniture"),
                        float(rng.uniform(0.02, 0.04)))
    content = make_material(rng, "picture")
    content = dataclasses.replace(content, second=_random_colour(rng, "picture"))
    return WallItem(CLASS_ID["picture"], wall, rect, content, _random_colour(rng, "furniture"),
                    float(rng.uniform(0.02, 0.06)))


def _window_curtains(rng: np.random.Generator, segment: _Segment, s0: float, w: float, z0: float, h: float,
                     room_height: float, plan: _FloorPlan) -> tuple[list[tuple], float] | None:
    """Curtains for a window of width `w` at s0 on `segment`, spanning z0..z0 + h: (parts, wall coordinate of
    their centre), claimed on `plan`; None when they would not fit on the wall or collide."""
    parts = _curtains(rng, w, z0, z0 + h, room_height)
    (x0, _, c0), (x1, y1, c1) = _extent(parts)
    mid = s0 + w / 2
    box = _wall_box(segment, mid + x0, mid + x1, y1, c0, c1)
    if mid + x0 > 0.02 and mid + x1 < segment.length - 0.02 and plan.free(box, 0.0):
        plan.boxes.append(box)
        return parts, mid
    return None


def _hang_wall_item(rng: np.random.Generator, kind: str, segments: list[_Segment], room_height: float,
                    plan: _FloorPlan) -> tuple[WallItem, tuple | None] | None:
    """One try at hanging a wall item of `kind` on a random wall: (item, curtains as (parts, wall, s_mid) or None),
    claimed on `plan` (a door also the floor in front of it); None when it does not fit there."""
    wall = int(rng.integers(4))
    length = segments[wall].length
    w, h, z0 = _wall_item_size(rng, kind)
    if w > length - 0.4 or z0 + h > room_height - 0.15:
        return None
    s0 = rng.uniform(0.2, length - 0.2 - w)
    rect = (s0, s0 + w, z0, z0 + h)
    clear = 0.9 if kind == "door" else 0.06
    box = _wall_box(segments[wall], s0 - 0.05, s0 + w + 0.05, clear, 0.0 if kind == "door" else z0, z0 + h)
    if not plan.free(box, 0.0):
        return None
    plan.boxes.append(box)
    item = _wall_item(rng, kind, wall, rect)
    curtains = None
    if kind == "window" and rng.random() < 0.4:
        hung = _window_curtains(rng, segments[wall], s0, w, z0, h, room_height, plan)
        curtains = None if hung is None else (hung[0], wall, hung[1])
    return item, curtains


def _wall_items(rng: np.random.Generator, size: np.ndarray, plan: _FloorPlan) -> tuple[list[WallItem], list[tuple]]:
    """Pictures, windows (some with curtains), doors ('wall': only their look differs) and whiteboards or mirrors
    ('objects') on the room walls. Returns the items and the curtains as (parts, wall, s_mid) to place. Each item
    claims the wall where it hangs (a door also the floor in front of it) so furniture keeps clear."""
    items: list[WallItem] = []
    curtains: list[tuple] = []
    segments = _room_segments(size)
    wanted = (["picture"] * int(rng.integers(0, 6)) + ["window"] * int(rng.integers(0, 4)) +
              ["door"] * int(rng.integers(0, 3)) + ["board"] * int(rng.random() < 0.25))
    for kind in rng.permutation(wanted):
        for _ in range(20):
            hung = _hang_wall_item(rng, kind, segments, size[2], plan)
            if hung is None:
                continue
            items.append(hung[0])
            if hung[1] is not None:
                curtains.append(hung[1])
            break
    return items, curtains


def _curtains(rng: np.random.Generator, width: float, z0: float, z1: float, room_height: float) -> list[tuple]:
    """Two curtains ('window') beside a window of `width` spanning z0..z1, hanging just off the wall (object
    frame: centred on the window, the wall at y = 0)."""
    fabric = dataclasses.replace(make_material(rng, "curtain"), axis=np.array([1.0, 0.0, 0.0]))
    top = min(z1 + rng.uniform(0.1, 0.3), room_height - 0.03)
    bottom = rng.uniform(0.02, 0.1) if rng.random() < 0.6 else max(z0 - 0.15, 0.02)
    panel, thick = rng.uniform(0.25, 0.5), rng.uniform(0.03, 0.06)
    overlap = rng.uniform(0.0, 0.15)
    return [_part("box", "window", [side * (width / 2 + panel / 2 - overlap), thick / 2 + 0.05, (top + bottom) / 2],
                  [panel / 2, thick / 2, (top - bottom) / 2], fabric) for side in (-1, 1)]


# room type -> weights of (bed, sofa, cabinet, counter, desk) against walls; tables and armchairs in the middle
_ROOMS = {
    "bedroom": ((3, 0.5, 3, 0, 1), 0.3, 0.2),
    "living": ((0, 3, 3, 0, 0.5), 0.8, 0.8),
    "kitchen": ((0, 0, 2, 4, 0), 1.0, 0.1),
    "office": ((0, 0.5, 3, 0, 3), 0.5, 0.3),
    "mixed": ((1, 1, 2, 1, 1), 0.6, 0.4),
}
_WALL_BUILDERS = (_bed, _sofa, _cabinet, _counter, _desk)


_Chooser = Callable[[float, float], tuple[np.ndarray, float] | None]  # (half_x, half_y) -> (floor point, yaw)


class _Furnisher:
    """Places objects in a room: draws positions until one is free on the floor plan, then adds the object's
    primitives. Walls are drawn in proportion to their length."""

    def __init__(self, rng: np.random.Generator, size: np.ndarray, plan: _FloorPlan, segments: list[_Segment],
                 primitives: list[Primitive]):
        self.rng, self.size, self.plan, self.segments, self.primitives = rng, size, plan, segments, primitives
        self.reach = np.cumsum([seg.length for seg in segments])

    def place(self, parts: list[tuple], choose: _Chooser, gap: float = 0.05, tries: int = 20) -> bool:
        """Place `parts` at positions drawn by choose(half_x, half_y) -> (center, yaw) until one is free."""
        parts, half_x, half_y = _centred(parts)
        (_, _, z0), (_, _, z1) = _extent(parts)
        for _ in range(tries):
            drawn = choose(half_x, half_y)
            if drawn is not None and self.plan.try_add(drawn[0], half_x, half_y, drawn[1], (max(z0, 0.0), z1), gap):
                self.primitives.extend(_place(parts, *drawn))
                return True
        return False

    def against_wall(self, inward: float = 0.02) -> _Chooser:
        """Positions with the object's back `inward` metres off a wall, facing into the room."""
        def choose(half_x: float, half_y: float) -> tuple[np.ndarray, float] | None:
            segments, reach = self.segments, self.reach
            segment = segments[min(int(np.searchsorted(reach, self.rng.random() * reach[-1])), len(segments) - 1)]
            if 2 * half_x > segment.length - 0.1:
                return None
            s = self.rng.uniform(half_x + 0.03, segment.length - half_x - 0.03)
            return segment.point(s, half_y + inward), segment.yaw
        return choose

    def anywhere(self, margin: float = 0.3) -> _Chooser:
        """Positions anywhere at least `margin` metres from the outer walls, half the time at a right-angle yaw."""
        def choose(half_x: float, half_y: float) -> tuple[np.ndarray, float]:
            rng, size = self.rng, self.size
            yaw = float(rng.uniform(0, np.pi) if rng.random() < 0.5 else rng.integers(4) * np.pi / 2)
            return np.array([rng.uniform(margin, size[0] - margin), rng.uniform(margin, size[1] - margin), 0.0]), yaw
        return choose


def _rug(rng: np.random.Generator, size: np.ndarray) -> Primitive | None:
    """A rug: flat 'floor' with a look of its own that claims no space; None when the drawn rug does not fit."""
    rug = make_material(rng, "rug")
    half = np.array([rng.uniform(0.5, 1.5), rng.uniform(0.4, 1.2), 0.006])
    kind = "cylinder" if rng.random() < 0.25 else "box"
    if kind == "cylinder":
        half[1] = half[0] = min(half[0], half[1] + 0.3)
    yaw = float(rng.uniform(0, np.pi))
    x0, x1, y0, y1 = _FloorPlan.footprint(np.zeros(2), half[0], half[1], yaw if kind == "box" else 0.0)
    if x1 - x0 < size[0] - 0.1 and y1 - y0 < size[1] - 0.1:
        at = np.array([rng.uniform(0.05 - x0, size[0] - 0.05 - x1), rng.uniform(0.05 - y0, size[1] - 0.05 - y1),
                       0.006])
        return Primitive(kind, CLASS_ID["floor"], at, half, yaw, rug)
    return None


def _furnish(rng: np.random.Generator, furnisher: _Furnisher, room: str) -> None:
    """Fill a room of type `room`: furniture against and on the walls, tables and armchairs in the middle, clutter
    on the floor, rugs and hanging lamps."""
    H = furnisher.size[2]
    weights, table_rate, armchair_rate = _ROOMS[room]
    place, against_wall, anywhere = furnisher.place, furnisher.against_wall, furnisher.anywhere
    p = np.array(weights, dtype=np.float64) / sum(weights)
    for _ in range(rng.integers(6, 12)):  # against the walls
        builder = _WALL_BUILDERS[rng.choice(len(_WALL_BUILDERS), p=p)]
        place(builder(rng, H), against_wall())
    for _ in range(rng.integers(0, 4)):  # hanging on the walls (a wall shelf above a desk is fine)
        place(_wall_mounted(rng, H), against_wall(0.0))
    for _ in range(rng.integers(0, 3)):  # tables in the middle
        if rng.random() < table_rate:
            place(_table_group(rng, H), anywhere(0.5), gap=0.4)
    for _ in range(rng.integers(0, 3)):
        if rng.random() < armchair_rate:
            place(_sofa(rng, H, single=True), anywhere(0.5), gap=0.2)
    for _ in range(rng.integers(2, 10)):  # clutter on the floor, often near walls
        place(_floor_object(rng, H), against_wall(rng.uniform(0.02, 0.4)) if rng.random() < 0.5 else anywhere())
    for _ in range(rng.integers(0, 3)):  # rugs
        rug = _rug(rng, furnisher.size)
        if rug is not None:
            furnisher.primitives.append(rug)
    for _ in range(rng.integers(0, 3)):  # hanging lamps
        place(_pendant(rng, H), anywhere(0.6), gap=0.0)


def _ceiling_lights(rng: np.random.Generator, size: np.ndarray, primitives: list[Primitive]) -> np.ndarray:
    """1-3 point lights (L, 3) 0.1 m below the ceiling, none inside a wall solid (a light is skipped after 20
    draws inside one)."""
    lights = []
    solids = _Solids.of([p for p in primitives if p.label == CLASS_ID["wall"]]) if any(
        p.label == CLASS_ID["wall"] for p in primitives) else None
    for _ in range(rng.integers(1, 4)):
        for _ in range(20):
            light = np.array([rng.uniform(0.15, 0.85) * size[0], rng.uniform(0.15, 0.85) * size[1], size[2] - 0.1])
            if solids is None or not solids.inside(light[None], 0.1).any():
                lights.append(light)
                break
    return np.array(lights).reshape(-1, 3)


def make_scene(rng: np.random.Generator) -> Scene:
    """A random furnished room of a random type (bedroom, living room, kitchen, office, mixed): sometimes L-shaped,
    partitioned, with a column or ceiling beams; furniture against the walls, tables with chairs and armchairs in
    the middle, clutter on surfaces and the floor, rugs, hanging lamps, pictures, windows, doors; 1-3 ceiling
    lights."""
    size = np.array([rng.uniform(3.0, 6.0), rng.uniform(3.2, 6.5), rng.uniform(2.4, 3.0)])
    room = list(_ROOMS)[rng.integers(len(_ROOMS))]
    walls, ceiling = make_material(rng, "wall"), make_material(rng, "ceiling")
    plan = _FloorPlan(size)
    primitives, extra_segments = _structure(rng, size, walls, ceiling, plan)
    wall_items, curtains = _wall_items(rng, size, plan)
    segments = _room_segments(size)
    for parts, wall, s_mid in curtains:
        primitives += _place(parts, segments[wall].point(s_mid, 0.0), segments[wall].yaw)
    _furnish(rng, _Furnisher(rng, size, plan, segments + extra_segments, primitives), room)
    lights = _ceiling_lights(rng, size, primitives)
    return Scene(size=size, primitives=primitives, wall_items=wall_items,
                 floor=make_material(rng, "floor"), walls=walls, ceiling=ceiling, lights=lights,
                 light_power=rng.uniform(1.0, 1.6, size=len(lights)) / np.sqrt(max(len(lights), 1)),
                 ambient=float(rng.uniform(0.25, 0.4)),
                 tint=np.array(colorsys.hsv_to_rgb(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.15), 1.0)))


# --- rendering --------------------------------------------------------------------------------------------------
def pixel_rays(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """Camera-frame ray directions (H, W, 3) through pixel centres, scaled to z = 1 (so t along them is z-depth)."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T
    rays[..., 2] = 1.0
    return rays


def _pixel_bounds(solids: _Solids, K: np.ndarray, pose: np.ndarray, height: int,
                  width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rows/columns (P, 4) = (v0, v1, u0, u1) that can see each solid (its projected bounding-box corners,
    1 px margin; the whole image when a corner is behind the camera; empty when it projects outside) and the
    nearest z-depth (P,) any of its points can have (0 when a corner is behind the camera)."""
    cam = (solids.corners() - pose[:3, 3]) @ pose[:3, :3]  # (P, 8, 3) world -> camera: R^T (p - t)
    z = cam[..., 2]
    behind = np.any(z < 1e-3, axis=1)
    pix = cam @ np.asarray(K).T
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = pix[..., 0] / pix[..., 2], pix[..., 1] / pix[..., 2]
        u0 = np.clip(np.floor(u.min(axis=1) - 0.5), 0, width)
        u1 = np.clip(np.floor(u.max(axis=1) - 0.5) + 2, 0, width)
        v0 = np.clip(np.floor(v.min(axis=1) - 0.5), 0, height)
        v1 = np.clip(np.floor(v.max(axis=1) - 0.5) + 2, 0, height)
    bounds = np.stack([v0, v1, u0, u1], axis=1)
    bounds[behind] = (0, height, 0, width)
    return bounds.astype(np.int64), np.where(behind, 0.0, z.min(axis=1))


def _shade_wall_items(scene: Scene, points: np.ndarray, face: np.ndarray, labels: np.ndarray, albedo: np.ndarray,
                      glow: np.ndarray) -> None:
    """Paint pictures and windows onto wall pixels (in place): class, albedo, and self-lit window glass."""
    for item in scene.wall_items:
        on_wall = np.flatnonzero(face == item.wall)
        p = points[on_wall]
        s, z = (p[:, 1] if item.wall < 2 else p[:, 0]), p[:, 2]
        s0, s1, z0, z1 = item.rect
        inside = (s >= s0) & (s <= s1) & (z >= z0) & (z <= z1)
        index, s, z = on_wall[inside], s[inside], z[inside]
        labels[index] = item.label
        border = np.minimum.reduce([s - s0, s1 - s, z - z0, z1 - z]) < item.frame_width
        if item.label == CLASS_ID["window"]:
            bars = np.zeros_like(border)
            for k in range(1, item.mullions[0] + 1):
                bars |= np.abs(s - (s0 + (s1 - s0) * k / (item.mullions[0] + 1))) < item.frame_width / 2
            for k in range(1, item.mullions[1] + 1):
                bars |= np.abs(z - (z0 + (z1 - z0) * k / (item.mullions[1] + 1))) < item.frame_width / 2
            glass = ~(border | bars)
            albedo[index] = item.frame
            glow[index[glass]] = 1.0
            albedo[index[glass]] = scene.glass * (0.9 + 0.1 * z[glass, None] / z1)  # brighter upwards
        else:
            albedo[index] = np.where(border[:, None], item.frame, texture(p[inside], item.material))


def _cast_rays(scene: Scene, K: np.ndarray, pose: np.ndarray, rays: np.ndarray, height: int,
               width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of world `rays` (3, H, W) from the camera at `pose`: z-depth (H, W), index of the primitive hit
    (H, W; -1 where the room is hit) and the room face behind each pixel (H, W)."""
    origin = pose[:3, 3]
    depth, face = intersect_room(origin, rays, scene.size)
    owner = np.full((height, width), -1)
    if scene.primitives:
        bounds, near = _pixel_bounds(_Solids.of(scene.primitives), K, pose, height, width)
        seen = np.flatnonzero((bounds[:, 0] < bounds[:, 1]) & (bounds[:, 2] < bounds[:, 3]))
        order = seen[np.argsort(near[seen], kind="stable")]  # front to back, so hidden solids can be skipped
    else:
        bounds, near, order = np.zeros((0, 4), np.int64), np.zeros(0), np.zeros(0, np.int64)
    for index in order:
        primitive = scene.primitives[index]
        v0, v1, u0, u1 = bounds[index]
        if near[index] >= depth[v0:v1, u0:u1].max():  # entirely behind what its pixels already see
            continue
        t = intersect_primitive(primitive, origin, rays[:, v0:v1, u0:u1])
        closer = t < depth[v0:v1, u0:u1]
        np.copyto(depth[v0:v1, u0:u1], t, where=closer)
        owner[v0:v1, u0:u1][closer] = index
    return depth, owner, face


def _surfaces(scene: Scene, points: np.ndarray, owner: np.ndarray,
              face: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What each hit point (N, 3) is, given the primitive it hit (`owner`, -1 for the room) and the room face:
    world normals (N, 3), albedo (N, 3), glow (N,; 1 where the surface emits, window glass) and class ids (N,)."""
    n_pix = len(points)
    normals = np.zeros((n_pix, 3))
    albedo = np.zeros((n_pix, 3), dtype=np.float32)
    glow = np.zeros(n_pix, dtype=np.float32)
    labels = np.zeros(n_pix, dtype=np.uint8)

    room = owner < 0
    room_face = np.where(room, face, -1)
    axis = face // 2
    normals[room, axis[room]] = np.where(face[room] % 2 == 1, -1.0, 1.0)  # room faces point inwards
    for mask, label, material in ((room & (face < 4), "wall", scene.walls), (room_face == 4, "floor", scene.floor),
                                  (room_face == 5, "ceiling", scene.ceiling)):
        labels[mask] = CLASS_ID[label]
        albedo[mask] = texture(points[mask], material)
    _shade_wall_items(scene, points, room_face, labels, albedo, glow)

    by_owner = np.argsort(owner, kind="stable")  # pixel indices grouped by the solid they see, room (-1) first
    counts = np.bincount(owner + 1, minlength=len(scene.primitives) + 1)
    for index, mask in enumerate(np.split(by_owner, np.cumsum(counts)[:-1])[1:]):
        if not len(mask):
            continue
        primitive = scene.primitives[index]
        local = _rotate_z(points[mask] - primitive.center, -primitive.yaw)
        normals[mask] = _rotate_z(local_normals(primitive.kind, local, primitive.half), primitive.yaw)
        albedo[mask] = texture(local, primitive.material)
        labels[mask] = primitive.label
    return normals, albedo, glow, labels


def _expose(scene: Scene, points: np.ndarray, normals: np.ndarray, albedo: np.ndarray, glow: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """Gamma-encoded colour (N, 3) in about [0, 1] of the hit points: Lambertian light from the ceiling lights plus
    ambient, tinted, times a per-view exposure drawn from `rng`, plus sensor noise (also from `rng`)."""
    light = np.full(len(points), scene.ambient, dtype=np.float32)
    normals32 = normals.astype(np.float32)
    for position, power in zip(scene.lights, scene.light_power):
        to_light = (position - points).astype(np.float32)
        distance = np.sqrt(np.einsum("ij,ij->i", to_light, to_light))
        cosine = np.einsum("ij,ij->i", normals32, to_light) / distance
        light += np.float32(power) * np.maximum(cosine, 0.0) / (1.0 + (distance / np.float32(3.0)) ** 2)
    tint = (scene.tint * rng.uniform(0.9, 1.1)).astype(np.float32)  # light colour times a per-view exposure
    radiance = albedo * (tint * (light * (1.0 - glow))[:, None] + glow[:, None])
    noise = rng.standard_normal(size=radiance.shape, dtype=np.float32) * np.float32(0.01)
    return np.clip(radiance, 0.0, 1.0) ** np.float32(1 / 2.2) + noise  # gamma-encode, then sensor noise


def render_view(scene: Scene, K: np.ndarray, pose: np.ndarray, height: int, width: int,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Ray cast one view of `scene` with intrinsics K (3, 3) and camera-to-world pose (4, 4).

    Returns image uint8 (H, W, 3), semseg uint8 (H, W) ids into SYNTHETIC_CLASSES, depth float32 (H, W) z-depth in
    metres, normals float32 (H, W, 3) unit camera-frame normals facing the camera. `rng` draws the sensor noise.
    """
    rotation, origin = pose[:3, :3], pose[:3, 3]
    cam_rays = pixel_rays(K, height, width)
    # world directions (3, H, W) with camera z = 1, so t along them is z-depth
    rays = np.ascontiguousarray(np.moveaxis(cam_rays @ rotation.T, -1, 0))
    depth, owner, face = _cast_rays(scene, K, pose, rays, height, width)
    points = origin + depth.reshape(-1, 1) * rays.reshape(3, -1).T
    normals, albedo, glow, labels = _surfaces(scene, points, owner.ravel(), face.ravel())
    image = _expose(scene, points, normals, albedo, glow, rng)

    cam_normals = normals @ rotation  # world -> camera frame: R^T n
    facing = np.einsum("ij,ij->i", cam_normals, cam_rays.reshape(-1, 3)) > 0
    cam_normals[facing] *= -1.0
    return {
        "image": np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8).reshape(height, width, 3),
        "semseg": labels.reshape(height, width),
        "depth": depth.astype(np.float32),
        "normals": cam_normals.astype(np.float32).reshape(height, width, 3),
    }


# --- dataset ----------------------------------------------------------------------------------------------------
def _scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Scene k of a split depends on (seed, split, k) only, so changing scene counts never changes other scenes."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLITS.index(split), index]))


def _camera_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The intrinsics of scene k's views: a stream of its own, so --fov-range changes only K (and the pixels)."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLITS.index(split), index, 1]))


def _render_scene(writer: LayoutWriter, options: SyntheticOptions, split: str, index: int,
                  scene_id: str) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """Generate one scene, write all its views through `writer`; return (id, K, pose, max depth) per view."""
    rng = _scene_rng(options.seed, split, index)
    scene, poses = camera_poses(make_scene(rng), options.views, rng, options.arc_degrees)
    Ks = draw_intrinsics(_camera_rng(options.seed, split, index), options.views, options.height, options.width,
                         options.fov_range, options.principal_jitter)
    written = []
    for view, (K, pose) in enumerate(zip(Ks, poses)):
        sample_id = f"{scene_id}_v{view:02d}"
        out = render_view(scene, K, pose, options.height, options.width, rng)
        writer.add_image(sample_id, out["image"])
        writer.add_label(TASKS["semseg"], sample_id, out["semseg"])
        writer.add_label(TASKS["depth"], sample_id, out["depth"])
        writer.add_label(TASKS["normals"], sample_id, out["normals"])
        writer.add_label(TASKS["edge"], sample_id, boundaries_from_segmentation(out["semseg"]))
        written.append((sample_id, K, pose, float(out["depth"].max())))
    return written


def parse_fov_range(text: str | None) -> tuple[float, float] | None:
    """'A-B' (or 'A' for a fixed field of view), horizontal degrees, -> (A, B); None or '' -> None."""
    if text is None or not text.strip():
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(?:-\s*(\d+(?:\.\d*)?)\s*)?", text)
    if match is None:
        raise Mtl3dError(f"--fov-range must be A-B (horizontal field of view in degrees, e.g. 50-80) or one "
                         f"number, got {text!r}")
    low = float(match.group(1))
    return low, float(match.group(2)) if match.group(2) is not None else low


def _check(options: SyntheticOptions) -> None:
    def fail(name: str, requirement: str) -> None:
        raise Mtl3dError(f"synthetic option {name} (--{name.replace('_', '-')}) must be {requirement}, got "
                         f"{getattr(options, name)!r}")

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    for name, low in (("train_scenes", 1), ("val_scenes", 0), ("views", 1), ("height", 16), ("width", 16),
                      ("seed", 0)):
        value = getattr(options, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            fail(name, f"an integer >= {low}")
    if options.views > 100:
        fail("views", "<= 100 (ids have two view digits)")
    if not number(options.arc_degrees) or not 0.0 <= options.arc_degrees <= 180.0:
        fail("arc_degrees", "a number of degrees in [0, 180]")
    fov = options.fov_range
    if fov is not None:
        low, high = FOV_LIMITS
        if not isinstance(fov, (tuple, list)) or len(fov) != 2 or not all(number(x) for x in fov):
            fail("fov_range", "two numbers A-B (horizontal field of view in degrees)")
        if not low <= fov[0] <= fov[1] <= high:
            fail("fov_range", f"A-B degrees with {low:g} <= A <= B <= {high:g}")
    if not number(options.principal_jitter) or not 0.0 <= options.principal_jitter <= MAX_PRINCIPAL_JITTER:
        fail("principal_jitter", f"a fraction of the image size in [0, {MAX_PRINCIPAL_JITTER:g}]")


def _record_views(writer: LayoutWriter, jobs: list[tuple[str, int]], results: Iterable[list[tuple]],
                  ids: dict[str, list[str]], total: int, progress: Callable[[int, int], None] | None) -> float:
    """Write the camera of every rendered view, in job order, and list its id under its split (in place); report
    progress per view. Returns the largest depth seen (0 when there are no views)."""
    max_depth = 0.0
    for (split, _), views in zip(jobs, results):
        for sample_id, K, pose, view_max in views:
            writer.add_camera(sample_id, K, pose, sample_id.split("_")[0])
            ids[split].append(sample_id)
            max_depth = max(max_depth, view_max)
            if progress is not None:
                progress(len(ids["train"]) + len(ids["val"]), total)
    return max_depth


def generate_synthetic(out: str | os.PathLike, options: SyntheticOptions = SyntheticOptions(), overwrite: bool = False,
                       progress: Callable[[int, int], None] | None = None, workers: int = 1) -> Path:
    """Generate the synthetic dataset into `out` (common layout, built atomically) and return its path.

    Scenes 0..train_scenes-1 form gt_sets/train.txt and the following val_scenes unseen scenes val.txt; ids are
    `s<scene:04d>_v<view:02d>`. Output files are byte-identical for equal options, whatever `workers` (processes
    rendering scenes in parallel). `progress(done, total)` is called after every written view.
    """
    _check(options)
    jobs = [(split, k) for split, count in zip(_SPLITS, (options.train_scenes, options.val_scenes))
            for k in range(count)]
    total = len(jobs) * options.views
    ids: dict[str, list[str]] = {split: [] for split in _SPLITS}
    with LayoutWriter(out, overwrite=overwrite) as writer:
        args = [(writer, options, split, k, f"s{n:04d}") for n, (split, k) in enumerate(jobs)]
        pool = ProcessPoolExecutor(workers) if workers > 1 and len(jobs) > 1 else None
        try:
            results = pool.map(_render_scene, *zip(*args)) if pool else (_render_scene(*a) for a in args)
            max_depth = _record_views(writer, jobs, results, ids, total, progress)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        for split in _SPLITS:
            if ids[split]:
                writer.add_split(split, ids[split])
        meta = DatasetMeta(name="synthetic", tasks=["semseg", "depth", "normals", "edge"],
                           classes={"semseg": list(SYNTHETIC_CLASSES)}, palettes={"semseg": SYNTHETIC_PALETTE},
                           depth_range=(0.0, float(math.ceil(max_depth))), edge_max_dist=0.011,
                           extra={"generator": dataclasses.asdict(options), "seed": options.seed,
                                  "generator_version": GENERATOR_VERSION, "intrinsics": _describe_intrinsics(options)})
        return writer.commit(meta)


def _describe_intrinsics(options: SyntheticOptions) -> str:
    if options.fov_range is None:
        text = "NYUv2 focal lengths scaled to the image size"
    else:
        text = (f"per view: horizontal field of view uniform in [{options.fov_range[0]:g}, {options.fov_range[1]:g}] "
                f"degrees, square pixels")
    if options.principal_jitter:
        text += f"; principal point within +-{options.principal_jitter:g} of the image size from the centre"
    return text + " (K per view in cameras.json)"
