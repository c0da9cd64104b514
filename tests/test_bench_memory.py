"""benchmarks/train_step.py's CPU tensor-memory measure against allocations of known size."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"


@pytest.fixture(scope="module")
def train_step():
    spec = importlib.util.spec_from_file_location("train_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tensor_peak_is_the_most_bytes_alive_at_once(train_step):
    before = torch.ones(2**20)

    def run():
        nonlocal before
        del before  # 4 MiB made before the measure, freed in it: neither counted nor subtracted
        a = torch.ones(2**18)  # 1 MiB of float32
        b = torch.ones(2**19)  # 2 MiB more: 3 MiB alive, the peak
        del a, b
        return torch.ones(2**18)  # 1 MiB alone afterwards

    assert train_step.tensor_peak_mb(run) == pytest.approx(3.0, abs=1e-6)


@pytest.mark.parametrize("grad, expected", [(True, 4.0), (False, 3.0)])
def test_tensor_peak_counts_what_autograd_keeps_for_backward(train_step, grad, expected):
    def run():
        x = torch.ones(2**18, requires_grad=grad)  # 1 MiB
        y = x.exp()
        z = y.sin()  # x, y, z: 3 MiB
        del y  # with grad, kept: sin's backward reads it
        return z.cos()  # 1 MiB more: 4 MiB with grad, 3 without

    assert train_step.tensor_peak_mb(run) == pytest.approx(expected, abs=1e-6)
