"""Sparsity schedules: pure functions of the step (jaxpruner's design), traceable under jit.

Each schedule says which sparsity the masks should have at a step (`sparsity_at`) and on which
steps the masks are recomputed (`is_update_step`). `progress` in [0, 1] reaches 1 exactly when the
schedule has arrived at its target; from then on the kept counts are the exact final ones
(round((1 - S) * size), as engine.planning.sizing.nonzeros_at counts them).

Schedules are pytrees of their numbers, so a run's schedule can enter the compiled step as arrays
and runs of a sweep that differ only in length or sparsity share one program. Their checks run
when the numbers are plain Python ones (when a spec is built), not on traced values.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

Array = jax.Array
Step = int | Array


def _concrete(*values: object) -> bool:
    """Plain numbers (checkable), not tracers or the placeholders JAX rebuilds pytrees with."""
    return all(isinstance(value, numbers.Real) for value in values)


def _check_target(target: float) -> None:
    if _concrete(target) and not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target}")


# Weights kept per tensor size once the target is reached, counted in Python as engine.planning.sizing
# counts them (a float32 count from a traced target can be one off); None: counted from a
# plain-number target when needed.
FinalKeep = Mapping[int, int] | None


@jax.tree_util.register_dataclass  # fields are pytree leaves, except those marked static
@dataclass(frozen=True)
class GradualSchedule:
    """Cubic gradual magnitude pruning (Zhu & Gupta 2017), eq. in sec. 3 of that paper:

        s(step) = S * (1 - (1 - t)^3),  t = clip((k - start_step) / (end_step - start_step), 0, 1)

    with k the step rounded down to the update interval, so s only changes on update steps. Masks
    are recomputed on every multiple of the interval from start_step until the first multiple at
    or after end_step (where t = 1 and the target is reached exactly).
    """

    target: float
    start_step: int
    end_step: int
    update_interval: int
    final_keep: FinalKeep = None

    def __post_init__(self) -> None:
        _check_target(self.target)
        if not _concrete(self.start_step, self.end_step, self.update_interval):
            return
        if self.update_interval < 1:
            raise ValueError(f"update_interval must be >= 1, got {self.update_interval}")
        if not 0 <= self.start_step < self.end_step:
            raise ValueError(
                f"need 0 <= start_step < end_step, got {self.start_step} and {self.end_step}"
            )

    def _last_update(self, step: Step) -> Array:
        step = jnp.asarray(step, jnp.int32)
        return step - step % self.update_interval

    def progress(self, step: Step) -> Array:
        k = self._last_update(step).astype(jnp.float32)
        return jnp.clip((k - self.start_step) / (self.end_step - self.start_step), 0.0, 1.0)

    def sparsity_at(self, step: Step) -> Array:
        return self.target * (1.0 - (1.0 - self.progress(step)) ** 3)

    def is_update_step(self, step: Step) -> Array:
        step = jnp.asarray(step, jnp.int32)
        on_interval = step % self.update_interval == 0
        in_window = (step >= self.start_step) & (step - self.update_interval < self.end_step)
        return on_interval & in_window


@jax.tree_util.register_dataclass  # fields are pytree leaves, except those marked static
@dataclass(frozen=True)
class OneShotSchedule:
    """Prune to the target at one step, then keep the masks fixed."""

    target: float
    step: int
    final_keep: FinalKeep = None

    def __post_init__(self) -> None:
        _check_target(self.target)
        if _concrete(self.step) and self.step < 0:
            raise ValueError(f"one-shot step must be >= 0, got {self.step}")

    def progress(self, step: Step) -> Array:
        return (jnp.asarray(step) >= self.step).astype(jnp.float32)

    def sparsity_at(self, step: Step) -> Array:
        return self.target * self.progress(step)

    def is_update_step(self, step: Step) -> Array:
        return jnp.asarray(step) == self.step


@jax.tree_util.register_dataclass  # fields are pytree leaves, except those marked static
@dataclass(frozen=True)
class DenseSchedule:
    """No pruning: masks stay all-ones (the dense baseline of a sweep)."""

    target: float = field(default=0.0, metadata={"static": True})

    def __post_init__(self) -> None:
        if self.target != 0.0:
            raise ValueError(f"a dense schedule has target 0, got {self.target}")

    def progress(self, step: Step) -> Array:
        return jnp.ones((), jnp.float32)

    def sparsity_at(self, step: Step) -> Array:
        return jnp.zeros((), jnp.float32)

    def is_update_step(self, step: Step) -> Array:
        return jnp.zeros((), bool)


Schedule = GradualSchedule | OneShotSchedule | DenseSchedule
