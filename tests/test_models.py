"""Backbones, local pretrained weights, the multi-task network and the regularizer's render outputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from safetensors.torch import save_file

from mtl3dcli.meta import DatasetMeta
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.backbones import build_backbone, load_pretrained
from mtl3dcli.models.build import build_model
from mtl3dcli.models.hosts.baseline import BaselineHost
from mtl3dcli.models.layers import bilinear_matrix, resize_bilinear
from mtl3dcli.models.regularizer_fused import resize_planes
from mtl3dcli.models.regularizer import Renders

META = DatasetMeta(name="m", tasks=["semseg", "depth", "normals", "edge"],
                   classes={"semseg": ["a", "b", "c", "d", "e"]}, depth_range=(0.5, 5.0))


def _check_features(backbone, size=(64, 64)):
    with torch.no_grad():
        feats = backbone(torch.rand(2, 3, *size))
    assert len(feats) == len(backbone.channels) == len(backbone.reductions)
    for f, c, r in zip(feats, backbone.channels, backbone.reductions):
        assert tuple(f.shape) == (2, c, size[0] // r, size[1] // r)


def test_tiny_backbone_channels_and_reductions():
    backbone = build_backbone("tiny", width=8)
    assert backbone.channels == [8, 16, 24, 32]
    assert backbone.reductions == [4, 8, 16, 32]
    _check_features(backbone, (64, 96))


@pytest.mark.parametrize("name, channels", [
    ("hrnet18", [18, 36, 72, 144]),
    ("resnet50", [256, 512, 1024, 2048]),
])
def test_real_backbones_declare_their_features(name, channels):
    backbone = build_backbone(name)
    assert backbone.channels == channels
    assert backbone.reductions == [4, 8, 16, 32]
    _check_features(backbone)


def test_unknown_backbone_lists_choices():
    with pytest.raises(Mtl3dError, match="unknown backbone 'vgg'.*tiny.*hrnet18"):
        build_backbone("vgg")


def test_load_pretrained_safetensors_loads_every_tensor(tmp_path):
    source = build_backbone("tiny", width=8)
    state = {k: v.clone() for k, v in source.encoder.state_dict().items()}
    state["fc.weight"] = torch.zeros(10, 32)  # a classifier the features-only encoder lacks: skipped
    path = tmp_path / "imagenet.safetensors"
    save_file(state, str(path))
    target = build_backbone("tiny", width=8)
    assert load_pretrained(target.encoder, path) == (len(state) - 1, 1)
    for key, value in target.encoder.state_dict().items():
        assert torch.equal(value, source.encoder.state_dict()[key]), key


def test_load_pretrained_torch_state_dict_with_prefix(tmp_path):
    """A `{'state_dict': {'module.<key>': ...}}` torch file (DDP-trained) loads after stripping the prefix."""
    source = build_backbone("tiny", width=8)
    state = {f"module.{k}": v.clone() for k, v in source.encoder.state_dict().items()}
    path = tmp_path / "imagenet.pth"
    torch.save({"state_dict": state}, path)
    target = build_backbone("tiny", width=8)
    assert load_pretrained(target.encoder, path) == (len(state), 0)
    first = next(iter(source.encoder.state_dict()))
    assert torch.equal(target.encoder.state_dict()[first], source.encoder.state_dict()[first])


def test_load_pretrained_errors(tmp_path):
    backbone = build_backbone("tiny", width=8)
    foreign = tmp_path / "other.safetensors"
    save_file({"classifier.weight": torch.zeros(3, 3), "stem.0.0.weight": torch.zeros(1)}, str(foreign))
    with pytest.raises(Mtl3dError, match="no tensor in .*other.safetensors matches the backbone"):
        load_pretrained(backbone.encoder, foreign)
    with pytest.raises(Mtl3dError, match="pretrained weights not found"):
        load_pretrained(backbone.encoder, tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(Mtl3dError, match="cannot read pretrained weights .*corrupt.safetensors"):
        load_pretrained(backbone.encoder, corrupt)


@pytest.mark.parametrize("head", ["hrnet", "light"])
def test_baseline_host_outputs_at_input_resolution(head):
    channels = {"semseg": 5, "depth": 1, "normals": 3, "edge": 1}
    net = BaselineHost(build_backbone("tiny", width=8), channels, head=head, head_channels=8).eval()
    assert net.feature_channels == 8 + 16 + 24 + 32
    image = torch.rand(2, 3, 40, 56)  # not a multiple of 32: outputs still match the input size
    with torch.no_grad():
        out = net(image)
    assert tuple(out.features.shape) == (2, 80, 10, 14)
    assert set(out.outputs) == set(channels) and out.aux == {}
    for name, c in channels.items():
        assert tuple(out.outputs[name].shape) == (2, c, 40, 56)


@pytest.mark.parametrize("shape, size", [((2, 6, 35, 40), (280, 320)),  # 8x
                                         ((3, 5, 37, 41), (100, 131)),  # not an integer factor
                                         ((2, 4, 48, 64), (24, 32))])   # downsampling (tri-plane resizing)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_resize_bilinear_of_large_inputs_equals_interpolate_bit_for_bit_with_gradients(shape, size, dtype):
    # Inputs above SEPARABLE_MAX_SIDE take their gradient from the channels-last kernel, which adds the same terms in
    # the same order as F.interpolate's own backward.
    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
    grad = torch.randn(*shape[:2], *size, dtype=dtype)
    reference = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    resized = resize_bilinear(x, size)
    assert resized.grad_fn is not None and type(resized.grad_fn) is not type(reference.grad_fn)
    assert torch.equal(resized, reference)
    (expected,) = torch.autograd.grad(reference, x, grad)
    (got,) = torch.autograd.grad(resized, x, grad)
    assert torch.equal(got, expected) and got.is_contiguous()
    with torch.no_grad():  # inference takes F.interpolate itself
        assert torch.equal(resize_bilinear(x, size), reference)


@pytest.mark.parametrize("shape, size", [((2, 6, 7, 9), (56, 72)),      # 8x, the rendered maps to the input
                                         ((3, 5, 13, 17), (100, 131)),  # not an integer factor
                                         ((2, 4, 24, 32), (12, 16)),    # exactly half: each output a 2x2 mean
                                         ((2, 3, 32, 30), (7, 5)),      # strong downsampling
                                         ((2, 3, 1, 1), (5, 7)),        # one pixel: copied everywhere
                                         ((1, 2, 5, 5), (5, 5))])       # same size: the identity
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_resize_bilinear_of_small_inputs_is_separable_and_equals_interpolate(shape, size, dtype, tol):
    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
    grad = torch.randn(*shape[:2], *size, dtype=dtype)
    reference = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    resized = resize_bilinear(x, size)
    assert type(resized.grad_fn).__name__ == "UnsafeViewBackward0"  # the matrix product, not an interpolation
    torch.testing.assert_close(resized, reference, rtol=tol, atol=tol)
    (expected,) = torch.autograd.grad(reference, x, grad)
    (got,) = torch.autograd.grad(resized, x, grad)
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol * 10)
    if size == (12, 16):  # align_corners False: every output of an exact halving is the mean of its 2x2 block
        blocks = x.detach().view(*shape[:2], 12, 2, 16, 2).mean(dim=(3, 5))
        torch.testing.assert_close(resized.detach(), blocks, rtol=tol, atol=tol)


def test_halving_is_the_block_mean_of_the_reshaped_sums_bit_for_bit():
    # the fused projector's exact halving (hrnet presets: 112x144 features, 56x72 planes): values and gradients equal
    # the sums over reshaped axes it replaced, and the interpolation's to float rounding
    x = torch.randn(2, 5, 14, 18, requires_grad=True)
    grad = torch.randn(2, 5, 7, 9)
    halved = resize_planes(x, (7, 9))
    reshaped = x.view(2, 5, 7, 2, 18).sum(3).view(2, 5, 7, 9, 2).sum(4) * 0.25
    assert torch.equal(halved, reshaped)
    (got,) = torch.autograd.grad(halved, x, grad)
    (expected,) = torch.autograd.grad(reshaped, x, grad)
    assert torch.equal(got, expected) and got.is_contiguous()
    torch.testing.assert_close(halved, F.interpolate(x, size=(7, 9), mode="bilinear", align_corners=False))
    # not an exact halving: bilinear resizing
    torch.testing.assert_close(resize_planes(x, (5, 6)), F.interpolate(x, size=(5, 6), mode="bilinear",
                                                                      align_corners=False))


def test_bilinear_matrix_rows_sum_to_one_and_read_two_neighbours():
    for n_in, n_out in [(7, 56), (13, 100), (24, 12), (1, 5), (30, 5)]:
        matrix = bilinear_matrix(n_in, n_out, torch.float64)
        torch.testing.assert_close(matrix.sum(1), torch.ones(n_out, dtype=torch.float64))
        assert ((matrix != 0).sum(1) <= 2).all() and (matrix >= 0).all()
    # 2 inputs -> 4 outputs: source positions -0.25 (clamped to 0), 0.25, 0.75, 1.25 (past the last input)
    expected = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(bilinear_matrix(2, 4, torch.float64), expected)


def test_resize_matrices_first_made_in_inference_mode_serve_training():
    with torch.inference_mode():
        resize_bilinear(torch.randn(1, 2, 5, 7), (11, 13))  # a user's predict, before training in one process
    x = torch.randn(1, 2, 5, 7, requires_grad=True)
    resize_bilinear(x, (11, 13)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_resize_bilinear_keeps_float32_under_cpu_autocast():
    x = torch.randn(2, 3, 12, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        resized = resize_bilinear(x, (96, 128))
    assert resized.dtype == torch.float32
    torch.testing.assert_close(resized, F.interpolate(x, size=(96, 128), mode="bilinear", align_corners=False))


def _regularizer(tmp_path, *extra):
    config = tiny_config(tmp_path, *extra)
    model = build_model(config, META)
    return model, model.regularizer


K32x48 = torch.tensor([[30.0, 0, 24], [0, 30.0, 16], [0, 0, 1]])


@pytest.mark.parametrize("camera, decode", [("orthographic", "point"), ("perspective", "point"),
                                           ("orthographic", "ray"), ("perspective", "ray")])
def test_regularizer_render_shapes_and_ranges(tmp_path, camera, decode):
    torch.manual_seed(0)
    model, reg = _regularizer(tmp_path, f"regularizer.camera={camera}", f"regularizer.decode={decode}")
    assert (reg.near, reg.far) == (0.5, 5.0)  # the dataset's depth range
    image = torch.rand(2, 3, 32, 48)
    cam = reg.view_camera(K32x48.expand(2, 3, 3), (32, 48))
    with torch.no_grad():
        planes = reg.planes(model.net(image).features)
        out = reg.render(planes, cam, stratified=True)
    assert tuple(planes.shape) == (2, 3, 4, 8, 12)  # 3 planes of C=4 at the fused feature size (32/4, 48/4)
    h, w = 8, 12  # regularizer.render_size
    assert isinstance(out, Renders)
    expected = {"semseg": 5, "depth": 1, "normals": 3, "edge": 1}
    assert list(out.tasks) == list(expected) and out.depth_tasks == ("depth",)
    assert list(out.decoded) == ["semseg", "normals", "edge"]
    for key, c in expected.items():
        assert tuple(out.tasks[key].shape) == (2, c, h, w), key
    assert out.tasks["depth"] is out.depth  # the depth task is the expected termination depth
    assert out.opacity.shape == (2, 1, h, w) and out.feature.shape == (2, 8, h, w)
    assert (out.opacity >= 0).all() and (out.opacity <= 1).all()
    assert (out.depth >= 0.5 - 1e-5).all() and (out.depth <= 5.0 + 1e-5).all()
    small = reg.render(planes, cam, size=(3, 5))
    assert tuple(small.tasks["semseg"].shape) == (2, 5, 3, 5)


@pytest.mark.parametrize("decode", ["point", "ray"])
def test_render_is_independent_of_chunking(tmp_path, decode):
    torch.manual_seed(0)
    model, reg = _regularizer(tmp_path, f"regularizer.decode={decode}")
    camera = reg.view_camera(K32x48.expand(2, 3, 3), (32, 48))
    with torch.no_grad():
        planes = reg.planes(model.net(torch.rand(2, 3, 32, 48)).features)
        whole = reg.render(planes, camera)
        reg.config.chunk = 30  # one row of 12 rays of both images per chunk: 8 pieces
        pieces = reg.render(planes, camera)
    for key in whole.tasks:
        torch.testing.assert_close(pieces.tasks[key], whole.tasks[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pieces.feature, whole.feature, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("camera, length", [("orthographic", 2.0), ("perspective", 4.5)])
def test_constant_density_renders_beer_lambert_opacity(tmp_path, camera, length):
    """sigma constant in the whole cube: opacity = 1 - exp(-sigma L), L = 2 cube units (orthographic: the rays cross
    the cube z = -1..1) or far - near = 5.0 - 0.5 metres (perspective: the pixel-aligned cube spans near..far)."""
    sigma = 0.3
    model, reg = _regularizer(tmp_path, f"regularizer.camera={camera}")
    reg.field.activation = lambda x: torch.full_like(x, sigma)
    cam = reg.view_camera(K32x48.expand(1, 3, 3), (32, 48))
    with torch.no_grad():
        planes = reg.planes(model.net(torch.rand(1, 3, 32, 48)).features)
        out = reg.render(planes, cam, stratified=True)
    expected = 1.0 - math.exp(-sigma * length)
    torch.testing.assert_close(out.opacity, torch.full_like(out.opacity, expected), rtol=1e-5, atol=1e-6)
    # midpoint samples of a homogeneous medium: depth = near + sum_i w_i t_i + (1 - opacity) * far, in metres
    n, delta = reg.config.samples, length / reg.config.samples
    weights = [math.exp(-sigma * delta * i) * (1 - math.exp(-sigma * delta)) for i in range(n)]
    t = sum(w * (i + 0.5) * delta for i, w in enumerate(weights)) + (1 - expected) * length
    depth = 0.5 + t * (4.5 / length)  # orthographic t in [0, 2] maps linearly onto [near, far]
    with torch.no_grad():
        mid = reg.render(planes, cam, stratified=False)
    torch.testing.assert_close(mid.depth, torch.full_like(mid.depth, depth), rtol=1e-5, atol=1e-5)
