"""Cutting a training run short at a given step, as a kill would (for resume tests)."""

from __future__ import annotations

from collections.abc import Callable


class Interrupted(Exception):
    """Raised from train_run's progress callback: the run stops after its last checkpoint."""


def interrupt_at(step: int) -> Callable[[int, float], None]:
    """A train_run progress callback that stops the run once it reports `step`."""

    def on_progress(done: int, loss: float) -> None:
        if done == step:
            raise Interrupted

    return on_progress
