"""Exact ray casting: analytic ray-primitive intersections, vectorized over all pixels (nearest hit wins), and
the rendering of a view: depth, normals, classes, RGB (textures, Lambertian shading from the ceiling lights,
ambient, mild sensor noise)."""

from __future__ import annotations

import math

import numpy as np

from mtl3dcli.datasets.synthetic.scene import CLASS_ID, Primitive, Scene, _EPS, _Solids, _rotate_z, texture


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
