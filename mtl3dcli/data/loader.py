"""Batches on their way to the model: the run-long, resumable, sharded sampler and moving batches to a device."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    """The (epoch, index) keys of a whole run, for `MultiTaskDataset`.

    Each epoch is a permutation seeded by (seed, epoch), sharded rank::world and trimmed to whole batches on every
    rank. The stream starts at batch `start` (the optimizer steps already taken, so a resumed run sees exactly the
    batches the uninterrupted run saw) and never ends: one DataLoader, with persistent workers, serves the whole
    run, and the epoch travels inside each key instead of through a `set_epoch` the workers would not see.
    """

    def __init__(self, size: int, batch_size: int, seed: int, *, rank: int = 0, world: int = 1, start: int = 0):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world, self.start = rank, world, start

    @staticmethod
    def batches_per_epoch(size: int, batch_size: int, world: int) -> int:
        return (size // world) // batch_size

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's sample indices of one epoch, whole batches only."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(self.size, generator=generator)[self.rank::self.world]
        return order[:self.batches_per_epoch(self.size, self.batch_size, self.world) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = divmod(self.start, self.batches_per_epoch(self.size, self.batch_size, self.world))
        for e in itertools.count(epoch):
            indices = self.epoch_indices(e)[(skip if e == epoch else 0) * self.batch_size:]
            yield from ((e, i) for i in indices)


def move_batch(batch: Any, device: torch.device) -> Any:
    """Tensors (nested in dicts) to `device`; other values unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_batch(v, device) for k, v in batch.items()}
    return batch


def close_loader(loader: DataLoader) -> None:
    """Stop a DataLoader's worker processes now. Persistent workers otherwise live as long as the loader, and
    workers torn down at interpreter exit while a queue is still being fed print a traceback, which an error that
    stops a run must not add to its one line. (PyTorch has no public call for this: `_shutdown_workers` is the
    one its own iterator finalizer uses.)"""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None
