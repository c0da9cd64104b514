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

Modules, each importing only those before it: `scene` (classes, materials, primitives, walls), `raycast`
(intersections and rendering a view), `cameras` (intrinsics and poses), `furniture` (objects as parts), `rooms`
(structure, wall items, furnishing: `make_scene`), `generate` (options and writing the dataset).
"""

from mtl3dcli.datasets.synthetic.cameras import NYU_FOCAL, camera_poses, draw_intrinsics, intrinsics, look_at
from mtl3dcli.datasets.synthetic.generate import SyntheticOptions, generate_synthetic, parse_fov_range
from mtl3dcli.datasets.synthetic.raycast import render_view
from mtl3dcli.datasets.synthetic.rooms import make_scene
from mtl3dcli.datasets.synthetic.scene import (CLASS_ID, SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, Material, Primitive,
                                               Scene, WallItem, make_material)

__all__ = ["CLASS_ID", "NYU_FOCAL", "SYNTHETIC_CLASSES", "SYNTHETIC_PALETTE", "Material", "Primitive", "Scene",
           "SyntheticOptions", "WallItem", "camera_poses", "draw_intrinsics", "generate_synthetic", "intrinsics",
           "look_at", "make_material", "make_scene", "parse_fov_range", "render_view"]
