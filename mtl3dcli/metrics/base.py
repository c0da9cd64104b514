"""The streaming-meter contract shared by every metric, and batch checking."""

from __future__ import annotations

import abc

import torch

EPS = 1e-8  # the denominators' floor in MTL-PyTorch's eval (IoU = tp / max(tp + fp + fn, 1e-8))


class Meter(abc.ABC):
    """A streaming metric over one split: `update` adds a batch's sufficient statistics, `compute` scores them."""

    primary: str  # key of the headline score in `compute()`
    higher_is_better: bool
    protocol: str  # one line naming the definition, for reports
    slow: bool = False  # costly per image (boundary matching): validation during training may use a subset

    def __init__(self) -> None:
        self._stats = self._zeros()

    @abc.abstractmethod
    def _zeros(self) -> dict[str, torch.Tensor]:
        """Empty statistics (CPU, int64 or float64)."""

    @abc.abstractmethod
    def update(self, prediction: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> None:
        """Add one batch."""

    @abc.abstractmethod
    def compute(self) -> dict[str, float]:
        """All scores as plain floats, the primary one included."""

    def close(self) -> None:
        """Release what the meter holds besides its statistics (worker processes); safe to call twice, and after
        `compute`. An evaluation calls it however it ends (Ctrl-C included)."""


def check_batch(prediction: torch.Tensor, label: torch.Tensor, valid: torch.Tensor,
           channels: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check shapes and move to the CPU. channels None: class maps (B, H, W); else (B, C, H, W) with C = channels."""
    prediction, label, valid = (t.detach().cpu() for t in (prediction, label, valid))
    expected = valid.shape if channels is None else (valid.shape[0], channels, *valid.shape[1:])
    if valid.ndim != 3 or prediction.shape != expected or label.shape != expected:
        raise ValueError(f"expected prediction and label of shape {tuple(expected)} with valid (B, H, W), got "
                         f"{tuple(prediction.shape)}, {tuple(label.shape)}, {tuple(valid.shape)}")
    return prediction, label, valid.bool()
