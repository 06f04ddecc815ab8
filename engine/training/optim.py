"""Optimizers and learning-rate schedules, built from plain arguments.

Adafactor here is optax's recipe (scale_by_factored_rms -> clip_by_block_rms -> learning rate ->
scale_by_param_block_rms) with the second moment unfactored (appendix A) and both RMS statistics
made sparsity-aware (appendix A.1): the relative step size uses the RMS of the *unpruned* weights
and update clipping uses the RMS of the updates of the unpruned weights. Otherwise a tensor pruned
to 87.5% has an RMS sqrt(1/8) of its kept weights' RMS and learns that much slower.

Which weights are pruned comes from the masks, not from `params != 0`: engine.sparsity's
masked_pruning passes its current masks to the inner optimizer as the `masks=` extra argument
(a pytree like params: bool arrays for sparsified tensors, scalar True elsewhere). Masks are exact
where `params != 0` is not: zero-initialised tensors (biases, the ViT head) are all zero but not
pruned, and on a mask-update step the weights about to be pruned are still non-zero. Without
masks (a dense run, or the optimizer used on its own) every weight counts as unpruned and the
statistics are the plain ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
PyTree = Any
Schedule = Callable[[Array], Array]
LearningRate = float | Schedule


def masked_rms(x: Array, mask: Array | None) -> Array:
    """RMS over the entries where mask is True (all entries if mask is None or a scalar)."""
    if mask is None or mask.ndim == 0:
        return jnp.sqrt(jnp.mean(jnp.square(x)))
    kept = jnp.sum(mask, dtype=jnp.float32)
    return jnp.sqrt(jnp.sum(jnp.where(mask, jnp.square(x), 0.0)) / jnp.maximum(kept, 1.0))


def _leaf_masks(updates: PyTree, masks: PyTree | None, sparsity_aware: bool) -> PyTree:
    """Masks aligned with updates; scalar True (plain RMS) when not sparsity-aware or absent."""
    if masks is None or not sparsity_aware:
        return jax.tree.map(lambda _: jnp.ones((), bool), updates)
    return masks


def scale_by_param_rms(
    min_scale: float = 1e-3, sparsity_aware: bool = True
) -> optax.GradientTransformationExtraArgs:
    """Relative step size: updates times max(RMS(param), min_scale), RMS over unpruned weights
    (appendix A.1) unless sparsity_aware is False (then optax's scale_by_param_block_rms)."""

    def update_fn(
        updates: PyTree, state: optax.EmptyState, params: PyTree | None = None,
        *, masks: PyTree | None = None, **_: Any,
    ) -> tuple[PyTree, optax.EmptyState]:
        if params is None:
            raise ValueError("scale_by_param_rms needs params: call update(updates, state, params)")
        leaf_masks = _leaf_masks(updates, masks, sparsity_aware)
        def scale(update: Array, param: Array, mask: Array) -> Array:
            return update * jnp.maximum(masked_rms(param, mask), min_scale)

        scaled = jax.tree.map(scale, updates, params, leaf_masks)
        return scaled, state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def clip_by_rms(
    threshold: float = 1.0, sparsity_aware: bool = True
) -> optax.GradientTransformationExtraArgs:
    """Adafactor's update clipping, u / max(1, RMS(u) / threshold), with the RMS over the updates
    of unpruned weights (appendix A.1); optax's clip_by_block_rms if sparsity_aware is False."""

    def update_fn(
        updates: PyTree, state: optax.EmptyState, params: PyTree | None = None,
        *, masks: PyTree | None = None, **_: Any,
    ) -> tuple[PyTree, optax.EmptyState]:
        leaf_masks = _leaf_masks(updates, masks, sparsity_aware)
        clipped = jax.tree.map(
            lambda u, m: u / jnp.maximum(1.0, masked_rms(u, m) / threshold), updates, leaf_masks
        )
        return clipped, state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def masked_global_norm(updates: PyTree, masks: PyTree | None) -> Array:
    """L2 norm over every leaf's entries where its mask is True (all entries of a leaf whose mask
    is a scalar, and of every leaf when masks is None)."""
    leaf_masks = _leaf_masks(updates, masks, sparsity_aware=True)
    squares = [
        jnp.sum(jnp.square(u)) if m.ndim == 0 else jnp.sum(jnp.where(m, jnp.square(u), 0.0))
        for u, m in zip(jax.tree.leaves(updates), jax.tree.leaves(leaf_masks), strict=True)
    ]
    return jnp.sqrt(sum(squares, jnp.zeros((), jnp.float32)))


def clip_by_global_norm(
    max_norm: float, sparsity_aware: bool = True
) -> optax.GradientTransformationExtraArgs:
    """optax.clip_by_global_norm with the norm over the gradients of unpruned weights only
    (over all of them if sparsity_aware is False: optax's clip, kept to measure the difference).

    A pruned weight's gradient is non-zero but its update is discarded (engine.sparsity's
    masked_pruning sets the weight back to zero), so counting it would clip the weights that do
    train harder the sparser the model: at 87.5% most of a kernel's gradient norm can sit on pruned
    entries. All gradients are scaled by the same factor, as in optax. Without masks (a dense run)
    it is optax's clip."""

    def update_fn(
        updates: PyTree, state: optax.EmptyState, params: PyTree | None = None,
        *, masks: PyTree | None = None, **_: Any,
    ) -> tuple[PyTree, optax.EmptyState]:
        # optax's norm and arithmetic when nothing is masked, so a dense run is unchanged to the bit.
        plain = masks is None or not sparsity_aware
        norm = optax.tree.norm(updates) if plain else masked_global_norm(updates, masks)
        below = norm < max_norm
        clipped = jax.tree.map(
            lambda u: jax.lax.select(below, u, (u / norm.astype(u.dtype)) * max_norm), updates
        )
        return clipped, state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def adafactor(
    learning_rate: LearningRate,
    *,
    decay_rate: float = 0.8,
    beta2_cap: float | None = None,
    clipping_threshold: float | None = 1.0,
    multiply_by_parameter_scale: bool = True,
    min_param_scale: float = 1e-3,
    sparsity_aware: bool = True,
    momentum: float | None = None,
    weight_decay: float | None = None,
    eps: float = 1e-30,
) -> optax.GradientTransformationExtraArgs:
    """Adafactor with an unfactored second moment (appendix A), T5 style by default.

    decay_rate: second-moment decay 1 - (step + 1)^-decay_rate (Shazeer & Stern 2018), capped at
    beta2_cap if given (Zhai et al. 2022). weight_decay is decoupled and follows the learning-rate
    schedule: the update is -lr * (adafactor_update + weight_decay * param).
    """

    def second_moment_decay(step: Array, exponent: float) -> Array:
        decay = 1.0 - (step.astype(jnp.float32) + 1.0) ** -exponent
        return decay if beta2_cap is None else jnp.minimum(decay, beta2_cap)

    chain: list[optax.GradientTransformation] = [
        optax.scale_by_factored_rms(
            factored=False, decay_rate=decay_rate, epsilon=eps, decay_rate_fn=second_moment_decay
        )
    ]
    if clipping_threshold is not None:
        chain.append(clip_by_rms(clipping_threshold, sparsity_aware))
    if multiply_by_parameter_scale:
        chain.append(scale_by_param_rms(min_param_scale, sparsity_aware))
    if momentum is not None:
        chain.append(optax.ema(momentum, debias=False))
    if weight_decay is not None:
        chain.append(optax.add_decayed_weights(weight_decay))
    chain.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*chain)


def adamw(
    learning_rate: LearningRate,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
) -> optax.GradientTransformationExtraArgs:
    """optax.adamw, accepting (and ignoring) the masks extra argument of masked_pruning."""
    return optax.with_extra_args_support(
        optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    )


# Learning-rate schedules: step -> learning rate. Each is a small pytree of numbers (jaxpruner's
# and optax's schedules are closures instead), so a run's numbers can enter the compiled step as
# arrays: runs of a sweep that differ only in length share one program. The functions below check
# their arguments and build them; the classes only compute.


@jax.tree_util.register_dataclass  # fields are pytree leaves, except those marked static
@dataclass(frozen=True)
class ConstantLR:
    peak: float

    def __call__(self, step: Array) -> Array:
        return jnp.asarray(self.peak, jnp.float32)


@jax.tree_util.register_dataclass  # fields are pytree leaves, except those marked static
@dataclass(frozen=True)
class RsqrtLR:
    peak: float
    warmup_steps: int
    linear_warmup: bool = field(default=False, metadata={"static": True})

    def __call__(self, step: Array) -> Array:
        step = jnp.asarray(step, jnp.float32)
        decay = self.peak * jnp.sqrt(self.warmup_steps / jnp.maximum(step, self.warmup_steps))
        if not self.linear_warmup:
            return decay
        return jnp.where(step < self.warmup_steps, self.peak * step / self.warmup_steps, decay)


def _ramp(step: Array, start: Array | float, end: Array | float, steps: Array | int) -> Array:
    """Linear from `start` at step 0 to `end` at `steps`, then `end`; `start` if steps is 0.
    optax.linear_schedule's arithmetic, operation for operation: an Adafactor run amplifies even a
    last-place difference in the rate (seen: 1e-4 in the parameters after 3 steps)."""
    done = jnp.clip(step, 0, steps)
    remaining = 1 - done / jnp.maximum(steps, 1)
    return jnp.where(steps > 0, (start - end) * remaining + end, start)


@jax.tree_util.register_dataclass  # fields are pytree leaves, except those marked static
@dataclass(frozen=True)
class CosineLR:
    peak: float
    warmup_steps: int
    total_steps: int
    end_value: float

    def __call__(self, step: Array) -> Array:
        # optax.warmup_cosine_decay_schedule's arithmetic (see _ramp)
        decay_steps = self.total_steps - self.warmup_steps
        done = jnp.minimum(step - self.warmup_steps, decay_steps)
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * done / jnp.maximum(decay_steps, 1)))
        alpha = self.end_value / self.peak
        decayed = self.peak * ((1 - alpha) * cosine + alpha)
        return jnp.where(step < self.warmup_steps, _ramp(step, 0.0, self.peak, self.warmup_steps), decayed)


@jax.tree_util.register_dataclass  # fields are pytree leaves, except those marked static
@dataclass(frozen=True)
class WarmupConstantCooldownLR:
    peak: float
    warmup_steps: int
    total_steps: int
    cooldown_steps: int

    def __call__(self, step: Array) -> Array:
        cooldown_start = self.total_steps - self.cooldown_steps
        warmup = _ramp(step, 0.0, self.peak, self.warmup_steps)
        cooldown = _ramp(step - cooldown_start, self.peak, 0.0, self.cooldown_steps)
        return jnp.where(step < self.warmup_steps, warmup,
                         jnp.where(step < cooldown_start, self.peak, cooldown))


LearningRateSchedule = ConstantLR | RsqrtLR | CosineLR | WarmupConstantCooldownLR


def constant_lr(peak: float) -> ConstantLR:
    return ConstantLR(peak)


def rsqrt_lr(peak: float, warmup_steps: int, linear_warmup: bool = False) -> RsqrtLR:
    """T5's inverse square root: peak * sqrt(warmup / max(step, warmup)), i.e. constant at peak
    during warmup (T5: peak 0.01, warmup 10k = 1/sqrt(max(step, 1e4))), or a linear ramp to peak
    if linear_warmup."""
    if warmup_steps < 1:
        raise ValueError(f"rsqrt schedule needs warmup_steps >= 1, got {warmup_steps}")
    return RsqrtLR(peak, warmup_steps, linear_warmup)


def cosine_lr(peak: float, warmup_steps: int, total_steps: int, end_value: float = 0.0) -> CosineLR:
    """Linear warmup from 0 to peak, then cosine decay to end_value at total_steps."""
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"cosine schedule needs 0 <= warmup_steps ({warmup_steps}) <= total steps "
                         f"({total_steps})")
    return CosineLR(peak, warmup_steps, total_steps, end_value)


def warmup_constant_cooldown_lr(
    peak: float, warmup_steps: int, total_steps: int, cooldown_steps: int
) -> WarmupConstantCooldownLR:
    """Linear warmup, constant at peak, linear cooldown to 0 over the last cooldown_steps."""
    if warmup_steps + cooldown_steps > total_steps:
        raise ValueError(
            f"warmup ({warmup_steps}) + cooldown ({cooldown_steps}) steps exceed total steps "
            f"({total_steps})"
        )
    return WarmupConstantCooldownLR(peak, warmup_steps, total_steps, cooldown_steps)
