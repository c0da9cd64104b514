"""Cameras: NYUv2's intrinsics or ones drawn per view, look-at poses, and a scene's views spread over an arc
around a shared region, clear of the furniture that would block them."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mtl3dcli.geometry import fov_focal, pinhole_intrinsics
from mtl3dcli.datasets.convert import NYU_K_640x480
from mtl3dcli.datasets.synthetic.scene import CLASS_ID, Primitive, Scene, _EPS, _Solids, _wall_point


NYU_FOCAL = (float(NYU_K_640x480[0, 0]), float(NYU_K_640x480[1, 1]))  # NYUv2 RGB focal lengths (pixels) at 640x480


DEFAULT_ARC_DEGREES = 90.0


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
        fx = fy = fov_focal(width, hfov)
    return pinhole_intrinsics(fx, fy, width / 2.0 + principal_offset[0], height / 2.0 + principal_offset[1])


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
