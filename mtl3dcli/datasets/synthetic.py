"""Procedural multi-view indoor scenes: the embedded default dataset (no download, deterministic for a seed).

A scene is a box room (floor, four walls, ceiling) furnished with boxes (axis-aligned or yawed), vertical cylinders
and spheres, plus flat wall items (pictures, windows) that change appearance but not geometry. Every view is ray
cast exactly, vectorized over all pixels (nearest analytic hit wins), so depth, normals, classes and boundaries are
exact and consistent across views. RGB uses solid procedural textures evaluated at 3D hit points (so a surface looks
the same from every view), Lambertian shading from ceiling point lights plus ambient, and mild sensor noise. Class
colour ranges overlap (wood floors, tables and furniture; pale walls and ceilings), so segmentation needs shape and
context, not a colour lookup.

World frame: metres, z up; the room fills [0, W] x [0, D] x [0, H]. Cameras follow DESIGN.md (OpenCV camera frame,
z-depth, pixel centres at (u + 0.5, v + 0.5), pose = camera-to-world). Written by hand because no maintained library
renders exactly labelled multi-view scenes this cheaply on a CPU.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
import os
from collections.abc import Callable
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
_SPLITS = ("train", "val")


@dataclass
class SyntheticOptions:
    train_scenes: int = 80
    val_scenes: int = 20
    views: int = 5
    height: int = 96
    width: int = 128
    seed: int = 0


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
    out = np.array(vectors, dtype=np.float64, copy=True)
    out[..., 0] = c * vectors[..., 0] - s * vectors[..., 1]
    out[..., 1] = s * vectors[..., 0] + c * vectors[..., 1]
    return out


def intersect_box(origin: np.ndarray, dirs: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Ray parameter t (N,) of the first hit of rays origin (3,) + t * dirs (N, 3) with the box [-half, half]
    (slab method: entry = latest slab entry, exit = earliest slab exit); inf where missed or where the box is
    behind or around the origin."""
    near = far = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):  # per axis on 1-D arrays: a reduction over a length-3 axis is slow in numpy
            inv = 1.0 / dirs[:, axis]
            t1 = (-half[axis] - origin[axis]) * inv
            t2 = (half[axis] - origin[axis]) * inv
            lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
            near = lo if near is None else np.maximum(near, lo)
            far = hi if far is None else np.minimum(far, hi)
    return np.where((near <= far) & (near > _EPS), near, np.inf)


def intersect_cylinder(origin: np.ndarray, dirs: np.ndarray, radius: float, half_height: float) -> np.ndarray:
    """First hit t (N,) with the capped vertical cylinder x^2 + y^2 <= r^2, |z| <= h centred at the local origin:
    the side from the quadratic a t^2 + 2 b t + c = 0, plus the cap that faces the origin."""
    ox, oy, oz = origin
    dx, dy, dz = dirs[:, 0], dirs[:, 1], dirs[:, 2]
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


def intersect_sphere(origin: np.ndarray, dirs: np.ndarray, radius: float) -> np.ndarray:
    """First hit t (N,) with the sphere |x| <= r centred at the local origin."""
    a = np.einsum("ij,ij->i", dirs, dirs)
    b = dirs @ origin
    c = origin @ origin - radius * radius
    disc = b * b - a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def intersect_primitive(primitive: Primitive, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """First hit t (N,) of world rays origin (3,) + t * dirs (N, 3) with `primitive` (t is in units of dirs)."""
    local_origin = _rotate_z(origin - primitive.center, -primitive.yaw)
    local_dirs = _rotate_z(dirs, -primitive.yaw) if primitive.yaw else dirs
    if primitive.kind == "box":
        return intersect_box(local_origin, local_dirs, primitive.half)
    if primitive.kind == "cylinder":
        return intersect_cylinder(local_origin, local_dirs, primitive.half[0], primitive.half[2])
    return intersect_sphere(local_origin, local_dirs, primitive.half[0])


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


def intersect_room(origin: np.ndarray, dirs: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exit hit of rays (N, 3) from `origin` inside the room box [0, size]: t (N,) and face (N,) int, face =
    2 * axis + (1 if the far wall of that axis else 0): 0/1 walls x = 0/W, 2/3 walls y = 0/D, 4 floor, 5 ceiling."""
    t = np.full(len(dirs), np.inf)
    face = np.zeros(len(dirs), dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            d = dirs[:, axis]
            forward = d > 0
            t_axis = np.where(forward, (size[axis] - origin[axis]) / d, -origin[axis] / d)
            first = (t_axis > 0) & (t_axis < t)  # NaN and negative never win
            t = np.where(first, t_axis, t)
            face = np.where(first, 2 * axis + forward, face)
    return t, face


# --- cameras ----------------------------------------------------------------------------------------------------
def intrinsics(height: int, width: int) -> np.ndarray:
    """NYUv2-like pinhole K (3, 3) for an image of height x width (the 640x480 focal lengths scaled)."""
    return np.array([[NYU_FOCAL[0] * width / 640.0, 0.0, width / 2.0],
                     [0.0, NYU_FOCAL[1] * height / 480.0, height / 2.0],
                     [0.0, 0.0, 1.0]])


def look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world pose (4, 4) at `position` looking at `target`, no roll (camera y points down-ish)."""
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, position
    return pose


def _inside(primitive: Primitive, points: np.ndarray, margin: float) -> np.ndarray:
    """Whether points (M, 3) lie inside `primitive` grown by `margin` metres: (M,) bool."""
    p = _rotate_z(points - primitive.center, -primitive.yaw)
    half = primitive.half + margin
    if primitive.kind == "box":
        return np.all(np.abs(p) < half, axis=1)
    if primitive.kind == "cylinder":
        return (np.hypot(p[:, 0], p[:, 1]) < half[0]) & (np.abs(p[:, 2]) < half[2])
    return np.einsum("ij,ij->i", p, p) < half[0] ** 2


def _blockers(scene: Scene, poses: list[np.ndarray], clearance: float, sight: float) -> set[int]:
    """Indices of primitives within `clearance` of a camera or on its optical axis within `sight` metres (sampled
    every 1 cm; no solid of make_scene is thinner than 2 cm)."""
    positions = np.array([pose[:3, 3] for pose in poses])
    steps = np.arange(0.0, sight, 0.01)
    axis_points = positions[:, None] + np.array([pose[:3, 2] for pose in poses])[:, None] * steps[:, None]
    axis_points = axis_points.reshape(-1, 3)
    return {index for index, primitive in enumerate(scene.primitives)
            if _inside(primitive, positions, clearance).any() or _inside(primitive, axis_points, 0.0).any()}


def camera_poses(scene: Scene, views: int, rng: np.random.Generator,
                 attempts: int = 200) -> tuple[Scene, list[np.ndarray]]:
    """`views` camera-to-world poses (4, 4) orbiting one look-at point (usually near a piece of furniture) over a
    +-25 degree yaw arc, 2-3.5 m away, 1.2-1.7 m high, with small jitter, so consecutive views overlap strongly.

    Every camera is at least 0.3 m inside the walls, 0.25 m clear of every object and sees at least 0.8 m along its
    optical axis. If no sampled arc satisfies that, the objects in the way of the last in-room arc are removed, so
    the returned scene may be a reduced copy of `scene`.
    """
    size = scene.size
    arc = np.radians(np.linspace(-25.0, 25.0, views) if views > 1 else np.zeros(1))
    fallback = None
    for _ in range(attempts):
        target = np.array([rng.uniform(0.5, size[0] - 0.5), rng.uniform(0.5, size[1] - 0.5), rng.uniform(0.4, 1.2)])
        choice = rng.random()
        if scene.primitives and choice < 0.6:  # mostly look at furniture rather than at an empty corner
            target[:2] = scene.primitives[rng.integers(len(scene.primitives))].center[:2] + rng.uniform(-0.3, 0.3, 2)
        elif scene.wall_items and choice < 0.85:  # or at a picture or window, which also brings the ceiling in
            item = scene.wall_items[rng.integers(len(scene.wall_items))]
            s_mid = (item.rect[0] + item.rect[1]) / 2
            target = np.array([*_wall_point(size, item.wall, s_mid, 0.5)[:2], (item.rect[2] + item.rect[3]) / 2])
        target[:2] = np.clip(target[:2], 0.5, size[:2] - 0.5)
        towards_centre = math.atan2(size[1] / 2 - target[1], size[0] / 2 - target[0])
        azimuth, distance = towards_centre + rng.uniform(-1.2, 1.2), rng.uniform(2.0, 3.5)
        height = rng.uniform(1.2, 1.7)
        poses = []
        for offset in arc + np.radians(rng.uniform(-3.0, 3.0, size=len(arc))):
            angle = azimuth + offset
            position = np.array([target[0] + distance * math.cos(angle), target[1] + distance * math.sin(angle),
                                 height]) + rng.uniform(-1, 1, size=3) * [0.1, 0.1, 0.05]
            poses.append(look_at(position, target + rng.uniform(-0.1, 0.1, size=3)))
        positions = np.array([pose[:3, 3] for pose in poses])
        if np.any(positions < 0.3) or np.any(positions > size - 0.3):
            continue
        fallback = poses
        if not _blockers(scene, poses, clearance=0.25, sight=0.8):
            return scene, poses
    if fallback is None:
        raise RuntimeError("no camera arc fits inside the room")  # unreachable for the room sizes of make_scene
    bad = _blockers(scene, fallback, clearance=0.25, sight=0.8)
    kept = [p for i, p in enumerate(scene.primitives) if i not in bad]
    return dataclasses.replace(scene, primitives=kept), fallback


# --- scene generation -------------------------------------------------------------------------------------------
def _part(kind: str, label: str, center, half, material: Material) -> tuple:
    return kind, CLASS_ID[label], np.asarray(center, dtype=np.float64), np.asarray(half, dtype=np.float64), material


def _bed(rng: np.random.Generator) -> tuple[list[tuple], float, float, float]:
    """Parts in the object frame (x along the wall, y away from it, z up), footprint half sizes and top height."""
    width, length, height = rng.uniform(1.0, 1.7), rng.uniform(1.9, 2.1), rng.uniform(0.4, 0.6)
    fabric, wood = make_material(rng, "bed"), make_material(rng, "furniture")
    parts = [_part("box", "bed", [0, 0, height / 2], [width / 2, length / 2, height / 2], fabric),
             _part("box", "bed", [0, -length / 2 + 0.03, 0.5], [width / 2, 0.03, 0.5], wood),
             _part("box", "bed", [0, -length / 2 + 0.3, height + 0.06], [width / 2 - 0.1, 0.2, 0.06], fabric)]
    return parts, width / 2, length / 2, height


def _sofa(rng: np.random.Generator) -> tuple[list[tuple], float, float, float]:
    width, depth = rng.uniform(1.4, 2.2), rng.uniform(0.8, 0.95)
    seat, back, arm = rng.uniform(0.38, 0.46), rng.uniform(0.75, 0.9), rng.uniform(0.55, 0.65)
    fabric = make_material(rng, "sofa")
    parts = [_part("box", "sofa", [0, 0.1, seat / 2], [width / 2 - 0.15, depth / 2 - 0.1, seat / 2], fabric),
             _part("box", "sofa", [0, -depth / 2 + 0.1, back / 2], [width / 2, 0.1, back / 2], fabric),
             _part("box", "sofa", [-width / 2 + 0.075, 0.1, arm / 2], [0.075, depth / 2 - 0.1, arm / 2], fabric),
             _part("box", "sofa", [width / 2 - 0.075, 0.1, arm / 2], [0.075, depth / 2 - 0.1, arm / 2], fabric)]
    return parts, width / 2, depth / 2, seat


def _cabinet(rng: np.random.Generator) -> tuple[list[tuple], float, float, float]:
    """A cabinet, a bookshelf (rows of book spines on the front) or a low TV stand."""
    style = ("cabinet", "shelf", "tv")[rng.integers(3)]
    width, depth = rng.uniform(0.5, 1.6), rng.uniform(0.35, 0.6)
    height = {"cabinet": rng.uniform(0.5, 2.0), "shelf": rng.uniform(1.2, 2.2), "tv": rng.uniform(0.4, 0.8)}[style]
    if style == "tv":
        width = max(width, 0.9)
    parts = [_part("box", "furniture", [0, 0, height / 2], [width / 2, depth / 2, height / 2],
                   make_material(rng, "furniture"))]
    if style == "shelf":  # one striped box per shelf: its stripes read as book spines
        for bottom in np.arange(0.1, height - 0.3, rng.uniform(0.32, 0.4)):
            spines = dataclasses.replace(make_material(rng, "books"), pattern="stripes", axis=np.array([1.0, 0, 0]),
                                         second=_random_colour(rng, "books"))
            row_w, row_h = rng.uniform(0.4, 0.95) * width, rng.uniform(0.18, 0.28)
            x = rng.uniform(-1, 1) * (width - row_w) / 2
            parts.append(_part("box", "books", [x, depth / 2 - 0.08, bottom + row_h / 2], [row_w / 2, 0.1, row_h / 2],
                               spines))
    elif style == "tv":
        tv_w = rng.uniform(0.7, min(1.3, width))
        tv_h = tv_w * rng.uniform(0.5, 0.62)
        parts.append(_part("box", "tv", [0, 0, height + 0.02 + tv_h / 2], [tv_w / 2, 0.03, tv_h / 2],
                           make_material(rng, "tv")))
    return parts, width / 2, depth / 2, height


def _table(rng: np.random.Generator) -> tuple[list[tuple], float, float, float]:
    width, depth = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0)
    height = rng.uniform(0.7, 0.78) if rng.random() < 0.7 else rng.uniform(0.4, 0.5)
    wood = make_material(rng, "table")
    parts = [_part("box", "table", [0, 0, height - 0.02], [width / 2, depth / 2, 0.02], wood)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_part("box", "table", [sx * (width / 2 - 0.06), sy * (depth / 2 - 0.06), (height - 0.04) / 2],
                               [0.025, 0.025, (height - 0.04) / 2], wood))
    return parts, width / 2, depth / 2, height


def _chair(rng: np.random.Generator) -> list[tuple]:
    """A stool-like chair: a cylindrical seat block and a backrest at -y (the chair faces +y)."""
    radius, seat = rng.uniform(0.18, 0.25), rng.uniform(0.42, 0.48)
    material = make_material(rng, "chair")
    return [_part("cylinder", "chair", [0, 0, seat / 2], [radius, radius, seat / 2], material),
            _part("box", "chair", [0, -radius + 0.02, seat + 0.22], [radius, 0.025, 0.22], material)]


def _small_objects(rng: np.random.Generator, half_x: float, half_y: float, z: float) -> list[tuple]:
    """Books and small objects resting on a surface of half size (half_x, half_y) at height z (object frame)."""
    parts = []
    for _ in range(rng.integers(0, 4)):
        x, y = rng.uniform(-0.8, 0.8) * half_x, rng.uniform(-0.8, 0.8) * half_y
        choice = rng.random()
        if choice < 0.4:
            thick = rng.uniform(0.02, 0.06)
            for level in range(rng.integers(1, 4)):
                parts.append(_part("box", "books", [x, y, z + thick * (level + 0.5)],
                                   [rng.uniform(0.08, 0.13), rng.uniform(0.1, 0.15), thick / 2],
                                   make_material(rng, "books")))
        elif choice < 0.65:
            r = rng.uniform(0.04, 0.12)
            parts.append(_part("sphere", "objects", [x, y, z + r], [r, r, r], make_material(rng, "objects")))
        elif choice < 0.9:
            r, h = rng.uniform(0.03, 0.08), rng.uniform(0.08, 0.3)
            parts.append(_part("cylinder", "objects", [x, y, z + h / 2], [r, r, h / 2], make_material(rng, "objects")))
        else:
            h = rng.uniform(0.05, 0.2)
            parts.append(_part("box", "objects", [x, y, z + h / 2], [rng.uniform(0.04, 0.12), rng.uniform(0.04, 0.12),
                                                                      h / 2], make_material(rng, "objects")))
    return parts


def _floor_object(rng: np.random.Generator) -> tuple[list[tuple], float, float, float]:
    choice = rng.random()
    material = make_material(rng, "objects")
    if choice < 0.35:
        h = rng.uniform(0.2, 0.6)
        hx, hy = rng.uniform(0.15, 0.3), rng.uniform(0.15, 0.3)
        return [_part("box", "objects", [0, 0, h / 2], [hx, hy, h / 2], material)], hx, hy, h
    if choice < 0.7:
        r, h = rng.uniform(0.12, 0.25), rng.uniform(0.3, 1.5)
        return [_part("cylinder", "objects", [0, 0, h / 2], [r, r, h / 2], material)], r, r, h
    r = rng.uniform(0.1, 0.3)
    return [_part("sphere", "objects", [0, 0, r], [r, r, r], material)], r, r, 2 * r


class _FloorPlan:
    """Occupied floor rectangles (x0, x1, y0, y1), to keep furniture from interpenetrating."""

    def __init__(self, size: np.ndarray):
        self.size = size
        self.rects: list[tuple[float, float, float, float]] = []

    @staticmethod
    def footprint(center: np.ndarray, half_x: float, half_y: float, yaw: float) -> tuple[float, float, float, float]:
        c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
        ex, ey = c * half_x + s * half_y, s * half_x + c * half_y  # half extents of the rotated footprint
        return center[0] - ex, center[0] + ex, center[1] - ey, center[1] + ey

    def inside(self, rect: tuple[float, float, float, float]) -> bool:
        return rect[0] > 0.01 and rect[2] > 0.01 and rect[1] < self.size[0] - 0.01 and rect[3] < self.size[1] - 0.01

    def try_add(self, center: np.ndarray, half_x: float, half_y: float, yaw: float, gap: float = 0.05) -> bool:
        """Claim the footprint if it is inside the room and `gap` metres clear of every claimed one."""
        rect = self.footprint(center, half_x, half_y, yaw)
        if not self.inside(rect) or any(rect[0] < o[1] + gap and o[0] < rect[1] + gap and rect[2] < o[3] + gap and
                                        o[2] < rect[3] + gap for o in self.rects):
            return False
        self.rects.append(rect)
        return True


def _place(parts: list[tuple], center: np.ndarray, yaw: float) -> list[Primitive]:
    """Object-frame parts -> world primitives of an object standing at floor point `center` with `yaw`."""
    return [Primitive(kind, label, center + _rotate_z(local, yaw), half, yaw, material)
            for kind, label, local, half, material in parts]


_WALL_YAW = (-math.pi / 2, math.pi / 2, 0.0, math.pi)  # object +y (its front) points into the room from wall 0..3


def _wall_point(size: np.ndarray, wall: int, s: float, inward: float) -> np.ndarray:
    """Floor point at coordinate s along `wall`, `inward` metres into the room."""
    if wall < 2:
        return np.array([inward if wall == 0 else size[0] - inward, s, 0.0])
    return np.array([s, inward if wall == 2 else size[1] - inward, 0.0])


def _wall_items(rng: np.random.Generator, size: np.ndarray) -> list[WallItem]:
    items: list[WallItem] = []
    wanted = ["picture"] * int(rng.integers(0, 4)) + ["window"] * int(rng.integers(0, 3))
    for kind in wanted:
        for _ in range(20):
            wall = int(rng.integers(4))
            length = size[1] if wall < 2 else size[0]
            if kind == "window":
                w, h = rng.uniform(0.8, 1.6), rng.uniform(1.0, 1.5)
                z0 = rng.uniform(0.8, 1.0)
            else:
                w, h = rng.uniform(0.4, 1.2), rng.uniform(0.3, 0.9)
                z0 = rng.uniform(1.4, 1.8) - h / 2
            if w > length - 0.4 or z0 + h > size[2] - 0.15:
                continue
            s0 = rng.uniform(0.2, length - 0.2 - w)
            rect = (s0, s0 + w, z0, z0 + h)
            if any(o.wall == wall and rect[0] < o.rect[1] + 0.1 and o.rect[0] < rect[1] + 0.1 and
                   rect[2] < o.rect[3] + 0.1 and o.rect[2] < rect[3] + 0.1 for o in items):
                continue
            if kind == "window":
                frame = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.1), rng.uniform(0.8, 0.95)))
                items.append(WallItem(CLASS_ID["window"], wall, rect, make_material(rng, "wall"), frame,
                                      float(rng.uniform(0.04, 0.08)),
                                      (int(rng.integers(0, 3)), int(rng.integers(0, 2)))))
            else:
                content = make_material(rng, "picture")
                content = dataclasses.replace(content, second=_random_colour(rng, "picture"))
                items.append(WallItem(CLASS_ID["picture"], wall, rect, content,
                                      _random_colour(rng, "furniture"), float(rng.uniform(0.02, 0.06))))
            break
    return items


def make_scene(rng: np.random.Generator) -> Scene:
    """A random furnished room: furniture against the walls, tables with chairs and small objects in the middle,
    floor objects, pictures and windows, one or two ceiling lights."""
    size = np.array([rng.uniform(3.0, 6.0), rng.uniform(4.0, 7.0), rng.uniform(2.5, 3.0)])
    plan = _FloorPlan(size)
    primitives: list[Primitive] = []
    for _ in range(rng.integers(2, 6)):  # against the walls
        builder = (_bed, _sofa, _cabinet, _cabinet)[rng.integers(4)]
        parts, half_x, half_y, top = builder(rng)
        if builder is _cabinet and len(parts) == 1 and top < 1.1:  # a low plain cabinet: things on top
            parts = parts + _small_objects(rng, half_x, half_y, top)
        for _ in range(20):
            wall = int(rng.integers(4))
            length = size[1] if wall < 2 else size[0]
            if 2 * half_x > length - 0.2:
                continue
            center = _wall_point(size, wall, rng.uniform(half_x + 0.05, length - half_x - 0.05), half_y + 0.02)
            if plan.try_add(center, half_x, half_y, _WALL_YAW[wall]):
                primitives += _place(parts, center, _WALL_YAW[wall])
                break
    for _ in range(rng.integers(0, 3)):  # tables with chairs
        parts, half_x, half_y, top = _table(rng)
        parts = parts + _small_objects(rng, half_x, half_y, top)
        yaw = float(rng.uniform(0, np.pi)) if rng.random() < 0.5 else float(rng.integers(2) * np.pi / 2)
        for _ in range(20):
            center = np.array([rng.uniform(0.5, size[0] - 0.5), rng.uniform(0.5, size[1] - 0.5), 0.0])
            if plan.try_add(center, half_x, half_y, yaw, gap=0.6):
                primitives += _place(parts, center, yaw)
                sides = [(0.0, -1), (0.0, 1), (np.pi / 2, -1), (np.pi / 2, 1)]
                for k in rng.permutation(4)[: rng.integers(0, 5)]:
                    angle, sign = sides[k]
                    reach = (half_y if angle == 0.0 else half_x) + 0.3
                    direction = _rotate_z(np.array([0.0, -sign * 1.0, 0.0]), yaw + angle)  # table -> chair
                    chair_at = center + direction * reach
                    chair_yaw = math.atan2(direction[0], -direction[1])  # chair +y faces the table
                    rect = plan.footprint(chair_at, 0.25, 0.25, chair_yaw)
                    if plan.inside(rect):  # the table's 0.6 m clearance keeps earlier furniture away
                        plan.rects.append(rect)
                        primitives += _place(_chair(rng), chair_at, chair_yaw)
                break
    for _ in range(rng.integers(0, 4)):  # loose floor objects
        parts, half_x, half_y, _ = _floor_object(rng)
        yaw = float(rng.uniform(0, np.pi))
        for _ in range(20):
            center = np.array([rng.uniform(0.3, size[0] - 0.3), rng.uniform(0.3, size[1] - 0.3), 0.0])
            if plan.try_add(center, half_x, half_y, yaw):
                primitives += _place(parts, center, yaw)
                break
    lights = np.array([[rng.uniform(0.2, 0.8) * size[0], rng.uniform(0.2, 0.8) * size[1], size[2] - 0.1]
                       for _ in range(rng.integers(1, 3))])
    return Scene(size=size, primitives=primitives, wall_items=_wall_items(rng, size),
                 floor=make_material(rng, "floor"), walls=make_material(rng, "wall"),
                 ceiling=make_material(rng, "ceiling"), lights=lights,
                 light_power=rng.uniform(1.0, 1.6, size=len(lights)) / np.sqrt(len(lights)),
                 ambient=float(rng.uniform(0.25, 0.4)),
                 tint=np.array(colorsys.hsv_to_rgb(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.15), 1.0)))


# --- rendering --------------------------------------------------------------------------------------------------
def pixel_rays(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """Camera-frame ray directions (H, W, 3) through pixel centres, scaled to z = 1 (so t along them is z-depth)."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T
    rays[..., 2] = 1.0
    return rays


def _pixel_bounds(primitive: Primitive, K: np.ndarray, pose: np.ndarray, height: int,
                  width: int) -> tuple[int, int, int, int] | None:
    """Pixel rows/columns (v0, v1, u0, u1) that can see `primitive` (its projected box corners, 1 px margin);
    the whole image when a corner is behind the camera, None when it projects outside."""
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * primitive.half
    world = primitive.center + _rotate_z(corners, primitive.yaw)
    cam = (world - pose[:3, 3]) @ pose[:3, :3]
    if np.any(cam[:, 2] < 1e-3):
        return 0, height, 0, width
    pix = cam @ np.asarray(K).T
    u, v = pix[:, 0] / pix[:, 2], pix[:, 1] / pix[:, 2]
    u0, u1 = max(0, math.floor(u.min() - 0.5)), min(width, math.floor(u.max() - 0.5) + 2)
    v0, v1 = max(0, math.floor(v.min() - 0.5)), min(height, math.floor(v.max() - 0.5) + 2)
    return (v0, v1, u0, u1) if u0 < u1 and v0 < v1 else None


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


def render_view(scene: Scene, K: np.ndarray, pose: np.ndarray, height: int, width: int,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Ray cast one view of `scene` with intrinsics K (3, 3) and camera-to-world pose (4, 4).

    Returns image uint8 (H, W, 3), semseg uint8 (H, W) ids into SYNTHETIC_CLASSES, depth float32 (H, W) z-depth in
    metres, normals float32 (H, W, 3) unit camera-frame normals facing the camera. `rng` draws the sensor noise.
    """
    rotation, origin = pose[:3, :3], pose[:3, 3]
    cam_rays = pixel_rays(K, height, width)
    rays = cam_rays @ rotation.T  # world directions with camera z = 1: t along them is z-depth
    depth, face = intersect_room(origin, rays.reshape(-1, 3), scene.size)
    depth, face = depth.reshape(height, width), face.reshape(height, width)
    owner = np.full((height, width), -1)
    for index, primitive in enumerate(scene.primitives):
        bounds = _pixel_bounds(primitive, K, pose, height, width)
        if bounds is None:
            continue
        v0, v1, u0, u1 = bounds
        block = rays[v0:v1, u0:u1]
        t = intersect_primitive(primitive, origin, block.reshape(-1, 3)).reshape(block.shape[:2])
        closer = t < depth[v0:v1, u0:u1]
        depth[v0:v1, u0:u1][closer] = t[closer]
        owner[v0:v1, u0:u1][closer] = index

    n_pix = height * width
    owner, face = owner.ravel(), face.ravel()
    points = origin + depth.reshape(-1, 1) * rays.reshape(-1, 3)
    normals = np.zeros((n_pix, 3))
    albedo = np.zeros((n_pix, 3), dtype=np.float32)
    glow = np.zeros(n_pix, dtype=np.float32)  # 1 where the surface emits (window glass) instead of reflecting
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

    for index in np.flatnonzero(np.bincount(owner + 1, minlength=len(scene.primitives) + 1)[1:]):
        primitive = scene.primitives[index]
        mask = np.flatnonzero(owner == index)
        local = _rotate_z(points[mask] - primitive.center, -primitive.yaw)
        normals[mask] = _rotate_z(local_normals(primitive.kind, local, primitive.half), primitive.yaw)
        albedo[mask] = texture(local, primitive.material)
        labels[mask] = primitive.label

    light = np.full(n_pix, scene.ambient, dtype=np.float32)
    for position, power in zip(scene.lights, scene.light_power):
        to_light = (position - points).astype(np.float32)
        distance = np.sqrt(np.einsum("ij,ij->i", to_light, to_light))
        cosine = np.einsum("ij,ij->i", normals.astype(np.float32), to_light) / distance
        light += np.float32(power) * np.maximum(cosine, 0.0) / (1.0 + (distance / np.float32(3.0)) ** 2)
    tint = (scene.tint * rng.uniform(0.9, 1.1)).astype(np.float32)  # light colour times a per-view exposure
    radiance = albedo * (tint * (light * (1.0 - glow))[:, None] + glow[:, None])
    noise = rng.standard_normal(size=radiance.shape, dtype=np.float32) * np.float32(0.01)
    image = np.clip(radiance, 0.0, 1.0) ** np.float32(1 / 2.2) + noise  # gamma-encode, then sensor noise

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


def _render_scene(writer: LayoutWriter, options: SyntheticOptions, split: str, index: int,
                  scene_id: str) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """Generate one scene, write all its views through `writer`; return (id, K, pose, max depth) per view."""
    rng = _scene_rng(options.seed, split, index)
    scene, poses = camera_poses(make_scene(rng), options.views, rng)
    K = intrinsics(options.height, options.width)
    written = []
    for view, pose in enumerate(poses):
        sample_id = f"{scene_id}_v{view:02d}"
        out = render_view(scene, K, pose, options.height, options.width, rng)
        writer.add_image(sample_id, out["image"])
        writer.add_label(TASKS["semseg"], sample_id, out["semseg"])
        writer.add_label(TASKS["depth"], sample_id, out["depth"])
        writer.add_label(TASKS["normals"], sample_id, out["normals"])
        writer.add_label(TASKS["edge"], sample_id, boundaries_from_segmentation(out["semseg"]))
        written.append((sample_id, K, pose, float(out["depth"].max())))
    return written


def _check(options: SyntheticOptions) -> None:
    for name, low in (("train_scenes", 1), ("val_scenes", 0), ("views", 1), ("height", 16), ("width", 16),
                      ("seed", 0)):
        value = getattr(options, name)
        if not isinstance(value, int) or value < low:
            raise Mtl3dError(f"synthetic option {name} must be an integer >= {low}, got {value!r}")
    if options.views > 100:
        raise Mtl3dError(f"synthetic option views must be <= 100 (ids have two view digits), got {options.views}")


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
    max_depth = 0.0
    with LayoutWriter(out, overwrite=overwrite) as writer:
        args = [(writer, options, split, k, f"s{n:04d}") for n, (split, k) in enumerate(jobs)]
        pool = ProcessPoolExecutor(workers) if workers > 1 and len(jobs) > 1 else None
        try:
            results = pool.map(_render_scene, *zip(*args)) if pool else (_render_scene(*a) for a in args)
            for (split, _), views in zip(jobs, results):
                for sample_id, K, pose, view_max in views:
                    writer.add_camera(sample_id, K, pose, sample_id.split("_")[0])
                    ids[split].append(sample_id)
                    max_depth = max(max_depth, view_max)
                    if progress is not None:
                        progress(len(ids["train"]) + len(ids["val"]), total)
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
                                  "intrinsics": "NYUv2 focal lengths scaled to the image size"})
        return writer.commit(meta)
