"""The regularizer's two paths: the plain definition (models/regularizer.py) and the fused rewrites
(models/regularizer_fused.py) compute the same function, values and gradients to 1e-5, from the same parameters."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch
from conftest import tiny_config

from mtl3dcli.geometry import relative_pose
from mtl3dcli.meta import DatasetMeta
from mtl3dcli.models import regularizer as plain_module
from mtl3dcli.models.build import build_model
from mtl3dcli.models.layers import fuse_scales
from mtl3dcli.models.regularizer import Regularizer, current_field_name, trunc_exp
from mtl3dcli.models.regularizer_fused import (FusedRegularizer, _Composite, _CompositeOfTaskHidden,
                                               _DensityRowOfReluSum, _LinearOfReluSum, _ReluSum)

META = DatasetMeta(name="t", tasks=["semseg", "depth", "normals", "edge"], classes={"semseg": list("abcde")},
                   depth_range=(0.5, 5.0))
K = torch.tensor([[30.0, 0, 24], [0, 30.0, 16], [0, 0, 1]])
SIZE = (32, 48)


def _pair(tmp_path, *extra):
    """The same model built with the fused and the plain regularizer, sharing every parameter; its features."""
    torch.manual_seed(0)
    model = build_model(tiny_config(tmp_path, *extra), META)
    plain = build_model(tiny_config(tmp_path, *extra, "regularizer.fused=false"), META)
    plain.load_state_dict(model.state_dict())
    features = model.net(torch.rand(2, 3, *SIZE)).features.detach()
    return model.regularizer, plain.regularizer, features


def _render_and_grads(reg, features, camera_of, seed: int):
    """Render with a fixed stratified draw; the maps and the gradients of a loss of every map with respect to the
    features and every regularizer parameter."""
    features = features.clone().requires_grad_()
    planes = reg.planes(features)
    torch.manual_seed(seed)
    out = reg.render(planes, camera_of(reg), stratified=True)
    loss = sum((m.float() * torch.linspace(-1, 1, m.numel()).view(m.shape)).mean()
               for m in (*out.tasks.values(), out.opacity))
    grads = torch.autograd.grad(loss, [features, *reg.parameters()])
    return out, grads


def _own_view(reg):
    return reg.view_camera(K.expand(2, 3, 3), SIZE)


def _partner_view(reg):
    pose_a, pose_b = torch.eye(4).expand(2, 4, 4).clone(), torch.eye(4).expand(2, 4, 4).clone()
    pose_b[:, 0, 3] = 0.2  # B 20 cm to the right of A
    return reg.partner_camera(K.expand(2, 3, 3), SIZE, K.expand(2, 3, 3), SIZE, relative_pose(pose_a, pose_b))


def _moved_view(reg):
    turn = torch.eye(4).expand(2, 4, 4).clone()
    turn[:, 0, 0], turn[:, 0, 2], turn[:, 2, 0], turn[:, 2, 2] = 0.98, 0.199, -0.199, 0.98
    return reg.view_camera(K.expand(2, 3, 3), SIZE, turn)


@pytest.mark.parametrize("camera, decode, aggregation, activation, view", [
    ("orthographic", "point", "sum", "softplus", _own_view),
    ("orthographic", "ray", "sum", "softplus", _own_view),
    ("orthographic", "point", "mean", "trunc_exp", _moved_view),
    ("perspective", "ray", "concat", "softplus", _own_view),
    ("perspective", "point", "product", "softplus", _own_view),
    ("perspective", "point", "sum", "softplus", _partner_view),
    ("perspective", "ray", "sum", "trunc_exp", _partner_view),
])
def test_plain_and_fused_paths_agree_in_values_and_gradients(tmp_path, camera, decode, aggregation, activation,
                                                             view):
    fused, plain, features = _pair(tmp_path, f"regularizer.camera={camera}", f"regularizer.decode={decode}",
                                   f"regularizer.aggregation={aggregation}",
                                   f"regularizer.density_activation={activation}")
    assert type(fused) is FusedRegularizer and type(plain) is Regularizer
    for method in ("planes", "field_function", "rendered_values"):  # the rewrites are really taken
        assert getattr(FusedRegularizer, method) is not getattr(Regularizer, method), method
    out_f, grads_f = _render_and_grads(fused, features, view, seed=3)
    out_p, grads_p = _render_and_grads(plain, features, view, seed=3)
    assert list(out_f.tasks) == list(out_p.tasks) == ["semseg", "depth", "normals", "edge"]
    for key in out_f.tasks:
        torch.testing.assert_close(out_f.tasks[key], out_p.tasks[key], rtol=0, atol=1e-5)
    torch.testing.assert_close(out_f.opacity, out_p.opacity, rtol=0, atol=1e-5)
    torch.testing.assert_close(out_f.feature, out_p.feature, rtol=0, atol=1e-5)
    names = ["features", *(name for name, _ in fused.named_parameters())]
    for name, grad_f, grad_p in zip(names, grads_f, grads_p):
        torch.testing.assert_close(grad_f, grad_p, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_the_plain_module_defines_no_custom_autograd_function():
    tree = ast.parse(inspect.getsource(plain_module))
    bases = [ast.unparse(base) for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for base in node.bases]
    assert "nn.Module" in bases and not [b for b in bases if "Function" in b]
    assert "torch.autograd" not in inspect.getsource(plain_module)


def test_trunc_exp_is_exp_with_a_clamped_gradient():
    x = torch.tensor([-3.0, 0.0, 10.0, 20.0], dtype=torch.float64, requires_grad=True)
    y = trunc_exp(x)
    assert torch.equal(y.detach(), torch.exp(x.detach()))
    y.sum().backward()
    assert torch.equal(x.grad, torch.exp(torch.tensor([-3.0, 0.0, 10.0, 15.0], dtype=torch.float64)))


def test_named_layers_load_weights_saved_with_positional_names(tmp_path):
    model = build_model(tiny_config(tmp_path), META)
    state = model.state_dict()
    legacy = {}
    for key, value in state.items():
        old = key.replace("field.shared_hidden.", "field.shared.0.").replace("field.shared_out.", "field.shared.2.")
        old = old.replace(".hidden.", ".1.").replace(".out.", ".3.") if ".task_mlps." in old else old
        legacy[old] = value.clone() + 1.0 if value.is_floating_point() else value.clone()
    assert "regularizer.field.shared.2.weight" in legacy and "regularizer.field.task_mlps.semseg.3.bias" in legacy
    fresh = build_model(tiny_config(tmp_path), META)
    fresh.load_state_dict(legacy)  # strict: every old name found its layer
    assert torch.equal(fresh.regularizer.field.shared_out.weight, state["regularizer.field.shared_out.weight"] + 1)
    assert torch.equal(fresh.regularizer.field.task_mlps["semseg"].out.bias,
                       state["regularizer.field.task_mlps.semseg.out.bias"] + 1)
    assert current_field_name("task_mlps.edge.1.weight") == "task_mlps.edge.hidden.weight"
    assert current_field_name("shared_out.bias") == "shared_out.bias"


@pytest.mark.slow
def test_recomputing_autograd_functions_pass_gradcheck():
    # the custom backward passes of the fused path that recompute activations instead of keeping them, in float64
    g = torch.Generator().manual_seed(0)

    def rand(*shape, positive=False):
        x = torch.rand(*shape, generator=g, dtype=torch.float64) if positive else torch.randn(
            *shape, generator=g, dtype=torch.float64)
        return x.requires_grad_()

    # parts broadcasting like (B, h, w, 1, D), (B, 1, w, N, D), (B, h, 1, N, D)
    parts = (rand(2, 3, 4, 1, 5), rand(2, 1, 4, 6, 5), rand(2, 3, 1, 6, 5))
    assert torch.autograd.gradcheck(_LinearOfReluSum.apply, (*parts, rand(7, 5), rand(7)))
    # a feature that is a view of a wider output (as the density MLP's split gives it)
    out = rand(2, 3, 5, 9)
    assert torch.autograd.gradcheck(lambda w, o, W, b: _CompositeOfTaskHidden.apply(w, o[..., 1:], W, b),
                                    (rand(2, 3, 5, positive=True), out, rand(6, 8), rand(6)))

    def ray_decoding(a, b, c, weight, bias):
        # the density row and the compositing of one hidden layer, recomputed once in backward for both
        source = _ReluSum(a, b, c)
        sigma, hidden = _DensityRowOfReluSum.apply(a, b, c, weight, bias, source)
        return _Composite.apply(torch.sigmoid(sigma), hidden, source)

    assert torch.autograd.gradcheck(ray_decoding, (*parts, rand(1, 5), rand(1)))


@pytest.mark.parametrize("decode", ["point", "ray"])
def test_depth_alone_renders_on_both_paths(tmp_path, decode):
    # no task MLP to decode: the feature is composited (and only shown), depth is the expected termination distance
    fused, plain, features = _pair(tmp_path, "regularizer.tasks=[depth]", f"regularizer.decode={decode}")
    with torch.no_grad():
        renders = [reg.render(reg.planes(features), _own_view(reg)) for reg in (fused, plain)]
    assert [list(r.tasks) for r in renders] == [["depth"], ["depth"]]
    torch.testing.assert_close(renders[0].depth, renders[1].depth, rtol=0, atol=1e-5)
    torch.testing.assert_close(renders[0].feature, renders[1].feature, rtol=0, atol=1e-5)


@pytest.mark.parametrize("plane_size", [(4, 6), (3, 5)])
def test_planes_smaller_than_the_features_are_resized_before_the_projection(tmp_path, plane_size):
    # resize(conv(x)) = conv(resize(x)): the fused path convolves the resized features (4x6 halves 8x12 exactly,
    # 3x5 does not divide it), the plain path resizes the convolved planes; values and gradients agree
    fused, plain, features = _pair(tmp_path, f"regularizer.plane_size=[{plane_size[0]},{plane_size[1]}]")
    assert tuple(features.shape[-2:]) == (8, 12)
    planes, grads = [], []
    for reg in (fused, plain):
        x = features.clone().requires_grad_()
        out = reg.planes(x)
        assert out.shape == (2, 3, reg.config.plane_channels, *plane_size)
        loss = (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum()
        planes.append(out.detach())
        grads.append(torch.autograd.grad(loss, [x, *reg.projector.parameters()]))
    torch.testing.assert_close(planes[0], planes[1], rtol=0, atol=1e-5)
    for grad_f, grad_p in zip(*grads):
        torch.testing.assert_close(grad_f, grad_p, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("plane_size", [None, (4, 6), (3, 5), (12, 16)])
def test_fused_scales_are_projected_scale_by_scale(tmp_path, plane_size):
    # conv(fuse_scales(x)) = sum_i up(W_i x_i) + b: the fused path projects each scale of the host's features at its
    # own resolution (no plane_size; a larger one: then upsampled) or, for planes smaller than the features (an
    # exact halving or not), convolves the resized features; the plain path projects the fused map. Values and the
    # gradients of every scale and of the projector agree (in float64: exact but for rounding; float32 sums of the
    # upsampled planes differ by 1e-4 relative where they nearly cancel)
    extra = [] if plane_size is None else [f"regularizer.plane_size=[{plane_size[0]},{plane_size[1]}]"]
    fused, plain, _ = _pair(tmp_path, *extra)
    model = build_model(tiny_config(tmp_path), META)
    scales = [x.detach().double() for x in model.net(torch.rand(2, 3, *SIZE)).scales]
    assert len(scales) == 4 and len({tuple(x.shape[-2:]) for x in scales}) == 4
    planes, grads = [], []
    for reg in (fused.double(), plain.double()):
        inputs = [x.clone().requires_grad_() for x in scales]
        out = reg.planes(fuse_scales(inputs), inputs)
        assert out.shape == (2, 3, reg.config.plane_channels, *(plane_size or scales[0].shape[-2:]))
        loss = (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum()
        planes.append(out.detach())
        grads.append(torch.autograd.grad(loss, [*inputs, *reg.projector.parameters()]))
    torch.testing.assert_close(planes[0], planes[1], rtol=0, atol=1e-12)
    for grad_f, grad_p in zip(*grads):
        torch.testing.assert_close(grad_f, grad_p, rtol=1e-12, atol=1e-12)


def test_ray_decoding_keeps_no_per_sample_hidden_layer_for_backward(tmp_path):
    # the widest per-sample tensor of ray decoding, the shared MLP's hidden layer (B, h, w, N, H), is recomputed in
    # backward (`_ReluSum`): nothing the fused render saves for backward is that large, where the plain path keeps it
    fused, plain, features = _pair(tmp_path, "regularizer.decode=ray", "regularizer.chunk=100000")
    (h, w), config = fused.config.render_size, fused.config
    hidden_layer = features.shape[0] * h * w * config.samples * config.density_hidden

    def largest_saved(reg) -> int:
        sizes, planes = [], reg.planes(features.clone().requires_grad_())
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            reg.render(planes, _own_view(reg))
        return max(sizes)

    assert largest_saved(fused) < hidden_layer <= largest_saved(plain)
