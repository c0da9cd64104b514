"""Cross-view supervision: view A's tri-plane rendered from a partner camera B, compared in B's frame, on B's pixels
that A sees; and the training step with it under CPU autocast (float16 and bfloat16 planes)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_config
from torch.utils.data import default_collate

from mtl3dcli.data.dataset import MultiTaskDataset
from mtl3dcli.data.transforms import train_transform
from mtl3dcli.engine.objective import Objective
from mtl3dcli.geometry import camera_rays, covisible, invert_pose, relative_pose, transform_vectors
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.models.build import build_model, resolve_tasks

META = DatasetMeta(name="m", tasks=["semseg", "depth", "normals", "edge"],
                   classes={"semseg": ["a", "b", "c", "d", "e"]}, depth_range=(0.5, 5.0))
SIZE = (32, 48)
K = torch.tensor([[30.0, 0.0, 24.0], [0.0, 30.0, 16.0], [0.0, 0.0, 1.0]])


def _rotation_y(degrees: float) -> torch.Tensor:
    """Rotation about the camera y axis (down): yaw."""
    a = math.radians(degrees)
    return torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])


def _perspective(tmp_path, *extra):
    model = build_model(tiny_config(tmp_path, "regularizer.camera=perspective", *extra), META)
    return model, model.regularizer


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angles (...) between vector fields (..., 3, H, W)."""
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-3).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


@pytest.mark.parametrize("decode", ["point", "ray"])
def test_identity_partner_reproduces_the_self_render(tmp_path, decode):
    # B = A (relative pose identity): the partner path (rays moved into A's frame, samples projected into A's cube,
    # normals rotated by the identity) must give the self-render (factored grid path) for every map
    model, reg = _perspective(tmp_path, f"regularizer.decode={decode}")
    Ks = K.expand(2, 3, 3)
    with torch.no_grad():
        planes = reg.planes(model.net(torch.rand(2, 3, *SIZE)).features)
        own = reg.render(planes, reg.view_camera(Ks, SIZE))
        partner = reg.render(planes, reg.partner_camera(Ks, SIZE, Ks, SIZE, torch.eye(4).expand(2, 4, 4)))
    for name in own.tasks:
        torch.testing.assert_close(partner.tasks[name], own.tasks[name], rtol=0, atol=1e-5)
    for key in ("depth", "opacity", "feature"):
        torch.testing.assert_close(getattr(partner, key), getattr(own, key), rtol=0, atol=1e-5)


@pytest.mark.parametrize("decode", ["point", "ray"])
def test_partner_rotated_about_y_sees_the_plane_normal_in_its_own_frame(tmp_path, decode):
    # The field is one opaque plane z = 2.5 m in A's frame (density from the xz plane, a function of cube z only)
    # whose decoded normal is (0, 0, -1) in A's frame. B sits at A's centre, yawed 20 degrees. B's label for that
    # plane, computed through the world from arbitrary camera-to-world poses, is R_b^T R_a (0, 0, -1); the render
    # must match it within 1 degree where B sees the plane (unrotated, it would be off by the full 20 degrees). B's
    # depth there is the plane's: its ray d_B (z = 1 in B) reaches z_A = 2.5 at t = 2.5 / (R_y d_B)_z.
    yaw, plane_depth = 20.0, 2.5
    model, reg = _perspective(tmp_path, f"regularizer.decode={decode}", "regularizer.samples=96")
    near, far = reg.near, reg.far
    cube_z = 2 * (plane_depth - near) / (far - near) - 1
    rows = 128
    row_z = -1 + (2 * torch.arange(rows) + 1) / rows
    planes = torch.zeros(1, 3, 4, rows, rows)
    planes[0, 1, 0] = ((row_z - cube_z).abs() < 0.03).float()[:, None]  # xz plane: rows are cube z

    # the real decoder, weights set by hand: density softplus(300 f0 - 20) (opaque in the slab, ~2e-9 elsewhere), a
    # constant shared feature 1, and task MLPs that ignore it and output their last bias: normals (0, 0, -1)
    field = reg.field
    with torch.no_grad():
        for p in field.parameters():
            p.zero_()
        field.shared_hidden.weight[0, 0] = 1.0
        field.shared_out.weight[0, 0], field.shared_out.bias[0] = 300.0, -20.0
        field.shared_out.bias[1:] = 1.0
        for mlp in field.task_mlps.values():
            mlp.hidden.bias.fill_(1.0)
        field.task_mlps["normals"].out.bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
    pose_a = torch.eye(4)
    pose_a[:3, :3] = _rotation_y(-35.0) @ torch.tensor([[1.0, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]])
    pose_a[:3, 3] = torch.tensor([0.3, -1.2, 0.7])
    pose_b = pose_a.clone()
    pose_b[:3, :3] = pose_a[:3, :3] @ _rotation_y(yaw)
    b_to_a = relative_pose(pose_a[None], pose_b[None])
    with torch.no_grad():
        out = reg.render(planes, reg.partner_camera(K[None], SIZE, K[None], SIZE, b_to_a), size=SIZE)
    normal_world = transform_vectors(pose_a[None], torch.tensor([[0.0, 0.0, -1.0]]))
    label_b = transform_vectors(invert_pose(pose_b[None]), normal_world)[0]  # (3,)
    seen = out.opacity[0, 0] > 0.5
    assert seen.float().mean() > 0.5  # most of B's view sees the plane inside A's frustum
    label = label_b[:, None, None].expand(3, *SIZE)
    angles = _angle_deg(out.tasks["normals"][0], label)[seen]
    assert angles.max() < 1.0
    unrotated = torch.tensor([0.0, 0.0, -1.0])[:, None, None].expand(3, *SIZE)
    assert _angle_deg(unrotated, label)[seen].min() == pytest.approx(yaw, abs=1e-3)
    rays_in_a = transform_vectors(b_to_a, camera_rays(K[None], *SIZE))[0]  # (H, W, 3)
    depth_b = plane_depth / rays_in_a[..., 2]
    assert (out.depth[0, 0][seen] - depth_b[seen]).abs().max() < 0.15  # the slab is 0.14 m thick


def _crossview_batch(root, config, size=SIZE):
    tasks = resolve_tasks(config)
    dataset = MultiTaskDataset(root, "train", tasks, train_transform(size, (1.0, 1.0), flip=True, jitter=0.0),
                               pairs=True, min_overlap=0.0, seed=3)
    return default_collate([dataset[0], dataset[4]])


def test_objective_masks_the_partner_pixels_a_cannot_see_and_logs_the_fraction(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, preset="demo-crossview")
    batch = _crossview_batch(tiny_dataset, config)
    assert batch["has_pair"].all()
    model = build_model(config, META)
    objective = Objective(model, config).train()
    total, terms = objective(batch)
    names = [t.name for t in model.regularizer.tasks]
    assert {f"cross/{name}" for name in names} | {"cross/visible"} <= set(terms)
    visible = float(terms["cross/visible"])
    # the fixture's views of a scene are 0.25 m and 6 degrees apart on a plane 2.5-3.5 m away: most pixels overlap,
    # but a partner's border strip lies outside A's frustum
    assert 0.5 < visible < 1.0
    loss_terms = [value for key, value in terms.items() if key != "cross/visible"]
    torch.testing.assert_close(total, torch.stack(loss_terms).sum())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_crossview_training_step_under_cpu_autocast(tiny_dataset, dtype):
    config = tiny_config(tiny_dataset, preset="demo-crossview")
    batch = _crossview_batch(tiny_dataset, config)
    model = build_model(config, META)
    objective = Objective(model, config).train()
    seen = {}
    planes = model.regularizer.planes

    def record(*args):
        out = planes(*args)
        seen["planes"] = out.dtype
        return out

    model.regularizer.planes = record
    with torch.autocast("cpu", dtype=dtype):
        total, terms = objective(batch)
    assert seen["planes"] == dtype
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in terms.values())
    total.backward()
    grads = [p.grad for p in model.regularizer.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("flip", [False, True])
def test_partner_labels_agree_once_rotated_through_the_relative_pose(tiny_dataset, flip):
    # The conventions the cross-view loss relies on, checked on the dataset pipeline (crops, scales and mirrored,
    # improper poses): a pixel of B covisible with A sees the surface A's label describes at the reprojected pixel,
    # and A's normal moved by the linear part of a_to_b is B's normal (the fixture's plane: exact up to uint8 encoding).
    tasks = resolve_tasks(tiny_config(tiny_dataset))
    transform = train_transform(SIZE, (0.9, 1.1), flip=flip, jitter=0.0)
    dataset = MultiTaskDataset(tiny_dataset, "train", tasks, transform, pairs=True, min_overlap=0.0, seed=5)
    for index in range(len(dataset)):
        sample = dataset[index]
        pair = sample["pair"]
        b_to_a = relative_pose(sample["pose"][None], pair["pose"][None])
        depth = {key: torch.where(s["valid"]["depth"], s["labels"]["depth"][0], 0.0)[None]
                 for key, s in (("a", sample), ("b", pair))}
        seen = covisible(depth["b"], pair["K"][None], depth["a"], sample["K"][None], b_to_a)[0]
        seen &= pair["valid"]["normals"]
        assert seen.float().mean() > 0.3
        normal_a = sample["labels"]["normals"][:, sample["valid"]["normals"]].mean(dim=1)  # one plane: one normal
        moved = transform_vectors(invert_pose(b_to_a), normal_a[None, None])[0, 0]
        angles = _angle_deg(moved[:, None, None], pair["labels"]["normals"][:, seen][:, None])
        assert angles.max() < 1.0, index
