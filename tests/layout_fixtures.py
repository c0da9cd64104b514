"""A tiny dataset in the common layout with analytic labels, so data tests need no generator and no download.

Each scene is one tilted world plane z = z0 + gx x + gy y seen by a few pinhole cameras. Everything is exact:
depth is the ray/plane intersection at each pixel centre, normals are the plane normal in the camera frame, the
segmentation is a pattern fixed in world coordinates (so views of a scene agree), edges derive from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtl3dcli.derive import boundaries_from_segmentation
from mtl3dcli.data.layout import LayoutWriter
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.tasks import TASKS

CLASSES = ["floor", "wall", "table", "chair"]
PALETTE = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [220, 220, 60]], dtype=np.float64)
SLOPE = (0.15, -0.1)


def plane_view(K: np.ndarray, pose: np.ndarray, size: tuple[int, int], z0: float = 3.0,
               slope: tuple[float, float] = SLOPE) -> dict[str, np.ndarray]:
    """Canonical label arrays (see mtl3dcli.tasks) and an RGB uint8 image of the plane z = z0 + gx x + gy y.

    K: (3, 3); pose: (4, 4) camera-to-world; size: (H, W). Returns image, semseg, depth, normals, edge.
    """
    height, width = size
    normal_world = np.array([-slope[0], -slope[1], 1.0])
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # (H, W, 3), camera frame, z = 1
    rotation, origin = pose[:3, :3], pose[:3, 3]
    depth = (z0 - normal_world @ origin) / (rays @ rotation.T @ normal_world)  # z-depth along each ray
    world = origin + (rays * depth[..., None]) @ rotation.T
    seg = (np.floor(world[..., 0] / 0.4).astype(np.int64) % 2 + 2 * (world[..., 1] > 0.1)).astype(np.uint8)
    normal_cam = rotation.T @ (normal_world / np.linalg.norm(normal_world))
    normal_cam = -normal_cam if normal_cam @ rays[height // 2, width // 2] > 0 else normal_cam
    shade = 0.6 + 0.4 * np.clip(-normal_cam[2], 0, 1) * np.cos(world[..., 1] * 3.0)[..., None] ** 2
    image = np.clip(PALETTE[seg] * shade, 0, 255).round().astype(np.uint8)
    return {
        "image": image,
        "semseg": seg,
        "depth": depth.astype(np.float32),
        "normals": np.broadcast_to(normal_cam, (height, width, 3)).astype(np.float32),
        "edge": boundaries_from_segmentation(seg),
    }


def camera(view: int, size: tuple[int, int], focal: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """K (3, 3) and camera-to-world pose (4, 4) of view `view`: shifted 0.25 m along x per view, yawed 6 degrees."""
    height, width = size
    K = np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    yaw = np.radians(6.0 * (view - 1))
    pose = np.eye(4)
    pose[:3, :3] = [[np.cos(yaw), 0.0, np.sin(yaw)], [0.0, 1.0, 0.0], [-np.sin(yaw), 0.0, np.cos(yaw)]]
    pose[:3, 3] = [0.25 * (view - 1), 0.0, 0.0]
    return K, pose


def sample_ids(scenes: int = 2, views: int = 3) -> list[str]:
    return [f"s{scene}_v{view}" for scene in range(scenes) for view in range(views)]


def write_layout(root: str | Path, *, scenes: int = 2, views: int = 3, size: tuple[int, int] = (24, 32),
                 tasks: tuple[str, ...] = ("semseg", "depth", "normals", "edge"), cameras: bool = True) -> Path:
    """Write the dataset to `root`: `scenes` x `views` samples "s<scene>_v<view>"; split "val" holds the last
    view of the last scene, "train" all others; cameras.json only when `cameras`."""
    ids = sample_ids(scenes, views)
    with LayoutWriter(root) as writer:
        for sample_id in ids:
            scene, view = (int(part[1:]) for part in sample_id.split("_"))
            K, pose = camera(view, size)
            arrays = plane_view(K, pose, size, z0=2.5 + 0.5 * scene)
            writer.add_image(sample_id, arrays["image"])
            for name in tasks:
                writer.add_label(TASKS[name], sample_id, arrays[name])
            if cameras:
                writer.add_camera(sample_id, K, pose, scene=f"s{scene}")
        writer.add_split("train", ids[:-1])
        writer.add_split("val", ids[-1:])
        meta = DatasetMeta(name="fixture", tasks=list(tasks), classes={"semseg": CLASSES},
                           palettes={"semseg": PALETTE.astype(int).tolist()}, depth_range=(0.5, 5.0))
        return writer.commit(meta)
