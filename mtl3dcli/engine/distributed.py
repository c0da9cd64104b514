"""Multi-process training via `torchrun`: rank discovery, process group set-up and the deterministic sharded
sampler that also lets a resumed run skip the batches it already consumed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_type: str) -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    context = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return context


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def shutdown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation seeded by (seed, epoch), sharded rank::world, trimmed to whole batches
    on every rank, with the first `skip_batches` batches left out (resume)."""

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int, context: DistContext,
                 skip_batches: int = 0):
        self.size, self.batch_size, self.seed, self.epoch = size, batch_size, seed, epoch
        self.context, self.skip_batches = context, skip_batches

    @staticmethod
    def batches_per_epoch(size: int, batch_size: int, world: int) -> int:
        return (size // world) // batch_size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)[self.context.rank::self.context.world]
        usable = self.batches_per_epoch(self.size, self.batch_size, self.context.world) * self.batch_size
        yield from order[self.skip_batches * self.batch_size:usable].tolist()

    def __len__(self) -> int:
        per_rank = self.batches_per_epoch(self.size, self.batch_size, self.context.world)
        return max(0, per_rank - self.skip_batches) * self.batch_size
