"""Which stored examples a step takes, for finite datasets: a seeded split and epoch permutations.

The validation examples are held out by a fixed permutation of the seed; the rest are training
examples. Global training example g = step * batch + i lies in epoch g // n at position g % n of
that epoch's own permutation (seeded by seed and epoch), so step k always takes the same slice.
Data is never silently repeated: past the first epoch, "refuse" raises and "warn" warns and wraps.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from engine.data.base import EPOCH_STREAM, SPLIT_STREAM, rng_for
from engine.errors import UserError

OnExhausted = Literal["refuse", "warn"]


class DataRepeatWarning(UserWarning):
    """A finite dataset is being read for a second (or later) epoch, as the spec allowed."""


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # example indices, in storage order
    eval: np.ndarray


def hold_out(total: int, eval_fraction: float, eval_batch_size: int, seed: int, name: str) -> Split:
    """Hold out round_down(total * eval_fraction) examples (a whole number of eval batches, at
    least one batch) chosen by a permutation of the seed; the rest is training data."""
    eval_count = max(eval_batch_size, int(total * eval_fraction) // eval_batch_size * eval_batch_size)
    if total - eval_count < 1:
        raise UserError(
            f"{name}: {total} examples are too few to hold out {eval_count} for validation "
            f"(eval_batch_size {eval_batch_size}) and still train"
        )
    order = rng_for(seed, SPLIT_STREAM, 0).permutation(total)
    return Split(train=np.sort(order[eval_count:]), eval=np.sort(order[:eval_count]))


def exhaustion_message(name: str, available: int, needed: int) -> str:
    return (
        f"{name} holds {available} training examples but the run needs {needed} "
        f"({needed / available:.2f} epochs)"
    )


def check_budget(
    name: str, available: int, needed: int | None, on_exhausted: OnExhausted
) -> None:
    """Refuse (UserError) or warn up front when the run's examples exceed one epoch."""
    if needed is None or needed <= available:
        return
    message = exhaustion_message(name, available, needed)
    if on_exhausted == "refuse":
        raise UserError(f"{message}; refusing to repeat data (set on_exhausted: warn to allow it)")
    warnings.warn(f"{message}; repeating it with a fresh permutation per epoch",
                  DataRepeatWarning, stacklevel=3)


class EpochOrder:
    """Maps a step to the training examples it takes."""

    def __init__(
        self, train: np.ndarray, batch_size: int, seed: int, on_exhausted: OnExhausted, name: str
    ) -> None:
        self.train = train
        self.batch_size = batch_size
        self.seed = seed
        self.on_exhausted = on_exhausted
        self.name = name
        self._warned = False
        self._permutation = lru_cache(maxsize=4)(self._epoch_permutation)

    def _epoch_permutation(self, epoch: int) -> np.ndarray:
        return rng_for(self.seed, EPOCH_STREAM, epoch).permutation(len(self.train))

    def indices(self, step: int) -> np.ndarray:
        """Storage indices of the examples of training step `step`."""
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        available = len(self.train)
        first, end = step * self.batch_size, (step + 1) * self.batch_size
        if end > available:
            self._on_repeat(available, end)
        positions = np.arange(first, end)
        epochs, offsets = positions // available, positions % available
        chosen = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            here = epochs == epoch
            chosen[here] = self._permutation(int(epoch))[offsets[here]]
        return self.train[chosen]

    def _on_repeat(self, available: int, needed: int) -> None:
        message = exhaustion_message(self.name, available, needed)
        if self.on_exhausted == "refuse":
            raise UserError(f"{message}; refusing to repeat data (set on_exhausted: warn to allow it)")
        if not self._warned:
            warnings.warn(f"{message}; repeating it with a fresh permutation per epoch",
                          DataRepeatWarning, stacklevel=4)
            self._warned = True
