"""Furniture and clutter: each object built as parts in its own frame (x along the wall it stands against, y
away from it, z up, origin on the floor), then placed in the room."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mtl3dcli.datasets.synthetic.scene import CLASS_ID, Material, Primitive, _random_colour, _rotate_z, make_material


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
