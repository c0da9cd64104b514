"""`mtl3d export`: the host network of a weights file as ONNX, checked against PyTorch with ONNX Runtime.

Only the host is exported (the regularizer is training-only), with one output per task named by the task and the
metadata `predict` and `evaluate` need (`onnx_backend.export_metadata`). A fixed export takes one image of one size;
`--dynamic` makes batch, height and width symbolic (sides must stay multiples of the host's size divisor).

Exporter: `torch.onnx.export(dynamo=True)`, the torch.export-based exporter (default since PyTorch 2.9; needs
onnxscript). The TorchScript exporter (`dynamo=False`) is deprecated and traces: wherever the model turns a size into
a Python int it bakes the traced size into the middle of the graph while the input stays dynamic, so the file fails
(or, for a resize, silently computes at the wrong size) at other sizes. torch.export records sizes symbolically; where
one gets fixed anyway it fixes the graph's input dims, which `check_dynamic` turns into an export error. It exports
all three hosts (baseline, MTI-Net, InvPT, ViT-L included) with fixed and dynamic shapes.

After writing, the file checks itself: ONNX Runtime on the CPU against PyTorch on the same random images (for a
dynamic export also at a second batch and size); every output's largest absolute difference must be within the
tolerance (1e-4 in float32), else the export fails naming the output, and no file is left at `--out`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mtl3dcli import fileio
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.models.build import model_from_weights
from mtl3dcli.onnx_backend import INPUT, INSTALL_HINT, export_metadata, ort_session
from mtl3dcli.progress import ProgressFactory
from mtl3dcli.sources import resolve_weights
from mtl3dcli.weights import load_weights

FORMATS = ("onnx",)
MIN_OPSET, DEFAULT_OPSET = 17, 18
TOLERANCE = 1e-4


class TaskOutputs(nn.Module):
    """A host as a graph with one output per task, in task order (the names of the ONNX outputs)."""

    def __init__(self, net: nn.Module, names: list[str]):
        super().__init__()
        self.net, self.names = net, names

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.net(image).outputs
        return tuple(outputs[name] for name in self.names)


def export_size(size: tuple[int, int] | None, default: tuple[int, int], divisor: int) -> tuple[int, int]:
    """`size` (default: the size the weights evaluate at), whose sides must be multiples of the host's divisor."""
    height, width = size or default
    if height % divisor or width % divisor:
        raise Mtl3dError(f"--size {height}x{width}: sides must be multiples of the host's size divisor {divisor} "
                         f"(e.g. {-(-height // divisor) * divisor}x{-(-width // divisor) * divisor})")
    return height, width


def to_onnx(module: TaskOutputs, example: torch.Tensor, dynamic: bool, opset: int) -> Any:
    """torch.onnx's dynamo exporter -> an ONNXProgram (names: input "image", outputs by task)."""
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter needs it; fail with the install hint, not deep inside
    except ImportError:
        raise Mtl3dError(f"export needs onnx, onnxscript and onnxruntime ({INSTALL_HINT})") from None
    dims = None
    if dynamic:
        dims = ({0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")},)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            return torch.onnx.export(module, (example,), dynamo=True, opset_version=opset, input_names=[INPUT],
                                     output_names=module.names, dynamic_shapes=dims, verbose=False)
        except Exception as exc:  # torch.export's errors come in many types; the first line says which guard
            raise Mtl3dError(f"torch.onnx could not export this host{' with --dynamic' if dynamic else ''}: "
                             f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}") from None


def check_inputs(size: tuple[int, int], divisor: int, dynamic: bool) -> list[torch.Tensor]:
    """Random images for the parity check: the export's shape, and for a dynamic export another batch and size."""
    generator = torch.Generator().manual_seed(1)
    shapes = [(1, 3, *size)]
    if dynamic:
        shapes.append((2, 3, size[0] + divisor, size[1] + 2 * divisor))
    return [torch.rand(shape, generator=generator) for shape in shapes]


def check_dynamic(session: Any) -> None:
    """A dynamic export whose input the exporter fixed anyway (a size turned into a constant in the host's code) is
    an error, not a file that fails at the first other size."""
    shape = session.get_inputs()[0].shape
    if any(isinstance(shape[axis], int) for axis in (0, 2, 3)):
        raise Mtl3dError(f"--dynamic: the exporter fixed the input shape to {shape} (the host turns a size into a "
                         "constant); export a fixed --size instead")


def check_parity(path: Path, module: TaskOutputs, inputs: list[torch.Tensor], tolerance: float,
                 dynamic: bool = False) -> dict[str, float]:
    """{output: largest |ONNX Runtime - PyTorch|} over `inputs`; an output beyond `tolerance` is an error, and so
    is a `dynamic` export with a fixed input shape."""
    session = ort_session(path, ["CPUExecutionProvider"])
    if dynamic:
        check_dynamic(session)
    worst = dict.fromkeys(module.names, 0.0)
    for image in inputs:
        with torch.no_grad():
            expected = module(image)
        try:
            got = session.run(module.names, {INPUT: image.numpy()})
        except Exception as exc:  # onnxruntime's own error types
            raise Mtl3dError(f"ONNX Runtime cannot run the export on a {tuple(image.shape)} input: "
                             f"{str(exc).strip().splitlines()[0]}") from None
        for name, ours, theirs in zip(module.names, expected, got):
            worst[name] = max(worst[name], float(np.abs(ours.numpy() - theirs).max()))
    for name, diff in worst.items():
        if not diff <= tolerance:
            raise Mtl3dError(f"ONNX Runtime output {name!r} differs from PyTorch by up to {diff:.3g} (tolerance "
                             f"{tolerance:g}); the export was not written")
    return worst


def run_export(weights: str | Path, out: Path, *, format: str = "onnx", size: tuple[int, int] | None = None,
               dynamic: bool = False, opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE,
               progress: ProgressFactory | None = None) -> dict[str, Any]:
    """Export the host of `weights` (a path or remote reference, downloaded with `progress`) to `out`; returns a
    summary with the parity figures ({"out", "size", "dynamic", "opset", "outputs", "max_abs_diff": {task: value},
    "bytes"})."""
    if format not in FORMATS:
        raise Mtl3dError(f"unknown --format {format!r}; available: {', '.join(FORMATS)}")
    if opset < MIN_OPSET:
        raise Mtl3dError(f"--opset must be {MIN_OPSET} or newer, got {opset}")
    loaded = load_weights(resolve_weights(weights, progress))
    model = model_from_weights(loaded).eval()  # the host only: the regularizer is never built
    config, divisor = loaded.config, model.net.size_divisor
    height, width = export_size(size, tuple(config.data.eval_size or config.data.size), divisor)
    names = [task.name for task in model.tasks]
    module = TaskOutputs(model.net, names).eval()
    example = torch.rand(2 if dynamic else 1, 3, height, width, generator=torch.Generator().manual_seed(0))
    program = to_onnx(module, example, dynamic, opset)
    channels = {task.name: task.channels(loaded.meta) for task in model.tasks}
    program.model.metadata_props.update(export_metadata(loaded, str(weights), divisor,
                                                        None if dynamic else (height, width), channels))
    with fileio.atomic_path(out) as tmp:
        program.save(str(tmp), external_data=False)
        diffs = check_parity(tmp, module, check_inputs((height, width), divisor, dynamic), tolerance, dynamic)
    return {"out": str(out), "size": [height, width], "dynamic": dynamic, "opset": opset, "outputs": names,
            "max_abs_diff": diffs, "bytes": out.stat().st_size}
