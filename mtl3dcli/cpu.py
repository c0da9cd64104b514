"""Process settings for fast CPU training and inference, applied once where a command picks the CPU.

- **Denormal floats flush to zero** (`torch.set_flush_denormal`). Some random initializations of the MTI-Net host
  produce denormal activations, on which x86 arithmetic is very slow: one forward pass of a 64x96 image took 14 s
  instead of 0.5 s (seeds 0 and 2; seed 1 had none). Values below 1.2e-38 become 0; the demo's losses are
  bit-identical with and without.
- **Freed memory stays in the process.** PyTorch allocates CPU tensors with the C library's malloc. A training step
  frees and re-allocates the same large activation buffers, and glibc gives them back to the kernel (blocks above
  its mmap threshold are unmapped, the heap top is trimmed), so the next step page-faults them in again, each page
  zeroed by the kernel: on the demo preset 1.9 million page faults and 8 s of system time per 120 steps, about a
  sixth of the step time. Raising glibc's mmap and trim thresholds (`mallopt`) keeps the buffers for reuse; peak
  memory stays what the largest step needs. A no-op where the C library is not glibc (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

import torch

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
RETAIN_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap; up to 1 GiB of free heap top is kept
FALLBACK_MMAP_BYTES = 32 << 20  # the largest mmap threshold older glibc versions accept on 64-bit


def tune_cpu_process() -> None:
    """Flush denormals to zero and keep freed memory in the process (both process-wide, both idempotent)."""
    torch.set_flush_denormal(True)
    retain_freed_memory()


@functools.cache
def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); True when glibc accepted them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap_set = mallopt(M_MMAP_THRESHOLD, RETAIN_BYTES) or mallopt(M_MMAP_THRESHOLD, FALLBACK_MMAP_BYTES)
    return bool(mmap_set) and bool(mallopt(M_TRIM_THRESHOLD, RETAIN_BYTES))
