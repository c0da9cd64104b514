"""CPU process settings: denormals flush to zero, freed memory is reused without page faults."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mtl3dcli.cpu import tune_cpu_process

FAULTS_OF_STEPS = """
import ctypes, resource, sys
from mtl3dcli.cpu import retain_freed_memory
if sys.argv[1] == "retain" and not retain_freed_memory():
    print(-1)
    raise SystemExit
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
SIZES = [mb << 20 for mb in (1, 2, 4, 8, 16, 48)]
def step():  # a step's activations (malloc is what PyTorch's CPU allocator calls), written, then freed together
    buffers = [libc.malloc(size) for size in SIZES]
    for buffer, size in zip(buffers, SIZES):
        ctypes.memset(buffer, 1, size)
    for buffer in buffers:
        libc.free(buffer)
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.slow
def test_cpu_training_reuses_freed_memory_without_page_faults():
    """Steps that allocate and free the same buffers: with `retain_freed_memory` the later steps reuse them; glibc's
    default gives the large ones back to the kernel and page-faults them in again every step (fresh processes, so
    the malloc settings of this one do not matter)."""
    def faults(mode: str) -> int:
        result = subprocess.run([sys.executable, "-c", FAULTS_OF_STEPS, mode], capture_output=True, text=True,
                                check=True)
        return int(result.stdout.split()[-1])

    retained = faults("retain")
    if retained < 0:
        pytest.skip("the C library is not glibc")
    assert faults("default") > 20_000  # 5 steps x (16 + 48 MB above the mmap ceiling) = 81,920 pages at most
    assert retained < 1_000


def test_denormals_flush_to_zero():
    torch.set_flush_denormal(False)  # the default (a Trainer of an earlier test may have tuned this process)
    denormal = torch.tensor([1e-39])  # below float32's smallest normal, 1.18e-38
    assert (denormal * 3.0).item() != 0.0
    try:
        tune_cpu_process()
        assert (denormal * 3.0).item() == 0.0
        assert (torch.tensor([1e-30]) * 3.0).item() == pytest.approx(3e-30)  # normal numbers are untouched
    finally:
        torch.set_flush_denormal(False)
