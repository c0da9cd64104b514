"""Room layout: the structure (L-shapes, partition walls, columns, beams), wall items, furniture chosen by room
type and placed on a floor plan, rugs and ceiling lights: `make_scene`."""

from __future__ import annotations

import colorsys
import dataclasses
import math
from collections.abc import Callable

import numpy as np

from mtl3dcli.datasets.synthetic.furniture import (_bed, _cabinet, _centred, _counter, _desk, _extent, _floor_object,
                                                   _part, _pendant, _place, _sofa, _table_group, _wall_mounted)
from mtl3dcli.datasets.synthetic.scene import (CLASS_ID, Material, Primitive, Scene, WallItem, _Segment, _Solids,
                                               _random_colour, _room_segments, make_material)


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
