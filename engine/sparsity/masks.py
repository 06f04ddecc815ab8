"""Magnitude masks with exact kept counts: unstructured top-k and gradual n:m (Algorithm 1).

A tensor of `size` weights at sparsity s keeps exactly round((1 - s) * size) weights, the rounding
engine.planning.sizing.nonzeros_at uses. Sorting a whole tensor is slow on CPU (about 0.6 s for a 768x3072
kernel), so the k-th largest score is found by bisection on its float32 bit pattern instead: for
non-negative floats the int32 bit pattern is monotone in the value, so 31 counting passes find the
exact k-th largest value. Scores tied with it are kept in flat (row-major) index order, lowest
first, so the kept count is exact and the mask deterministic.

Masks are pytrees shaped like the params: a bool array for every sparsified tensor and a scalar
True for every other leaf (it broadcasts, so `where(mask, x, 0)` works on every leaf alike).

Which tensors are sparsified is a pytree of Python ints shaped like the params (bools work too):
0 (False) for a dense tensor, else the group whose target the tensor follows, 1 (True) for the
backbone and 2 for T5's matched embeddings (engine.sparsity.pruning).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
PyTree = Any

_INF_BITS = 0x7F800000  # bit pattern of float32 +inf, the largest score Algorithm 1 produces
_BISECTION_STEPS = 31  # ceil(log2(_INF_BITS + 2)): enough to pin down any non-negative float32


@dataclass(frozen=True)
class Unstructured:
    """Any weights of a tensor may be pruned."""


@dataclass(frozen=True)
class NM:
    """At most n non-zeros in each group of m consecutive weights along axis 0 (fan_in)."""

    n: int
    m: int

    def __post_init__(self) -> None:
        if not 0 < self.n < self.m:
            raise ValueError(f"n:m pattern needs 0 < n < m, got {self.n}:{self.m}")

    @property
    def sparsity(self) -> float:
        return 1.0 - self.n / self.m


Pattern = Unstructured | NM


def keep_count(size: int, sparsity: float) -> int:
    """Weights kept in a tensor of `size` at `sparsity`: round((1 - s) * size), as sizing does."""
    return round((1.0 - sparsity) * size)


def _kth_largest_bits(bits: Array, keep: Array) -> Array:
    """Largest t with count(bits >= t) >= keep: the bit pattern of the keep-th largest score."""

    def halve(_: int, bounds: tuple[Array, Array]) -> tuple[Array, Array]:
        lo, hi = bounds  # invariant: count(bits >= lo) >= keep > count(bits >= hi)
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(bits >= mid, dtype=jnp.int32) >= keep
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

    bounds = (jnp.int32(0), jnp.int32(_INF_BITS + 1))
    return lax.fori_loop(0, _BISECTION_STEPS, halve, bounds)[0]


def topk_mask(scores: Array, keep: int | Array) -> Array:
    """Bool mask of exactly `keep` largest scores (non-negative float32, +inf allowed, no NaN);
    ties at the threshold go to the lowest flat indices."""
    bits = lax.bitcast_convert_type(scores.astype(jnp.float32), jnp.int32)
    keep = jnp.asarray(keep, jnp.int32)
    threshold = _kth_largest_bits(bits, keep)
    above = bits > threshold
    tied = bits == threshold
    tie_budget = keep - jnp.sum(above, dtype=jnp.int32)
    tie_rank = jnp.cumsum(tied.reshape(-1), dtype=jnp.int32).reshape(bits.shape)
    return above | (tied & (tie_rank <= tie_budget))


def check_nm_groups(shape: tuple[int, ...], pattern: NM, name: str) -> None:
    """n:m groups run along axis 0 (fan_in), so m must divide it."""
    if len(shape) == 0 or shape[0] % pattern.m != 0:
        raise ValueError(
            f"{name}: n:m groups of m={pattern.m} run along axis 0 (fan_in), "
            f"which must be divisible by m, but the tensor's shape is {shape}"
        )


def nm_protected_scores(scores: Array, pattern: NM) -> Array:
    """Algorithm 1's w': the n largest scores of each group of m along axis 0 set to +inf, so an
    unstructured top-k always keeps them (ties within a group: lower index first)."""
    groups = scores.reshape(scores.shape[0] // pattern.m, pattern.m, -1)
    mine, other = groups[:, :, None, :], groups[:, None, :, :]
    index = jnp.arange(pattern.m)
    earlier = (index[None, :] < index[:, None])[None, :, :, None]  # [., i, j, .]: j before i
    rank = jnp.sum((other > mine) | ((other == mine) & earlier), axis=2)  # 0 = largest
    protected = jnp.where(rank < pattern.n, jnp.inf, groups)
    return protected.reshape(scores.shape)


def magnitude_mask(weights: Array, keep: int | Array, pattern: Pattern) -> Array:
    """Keep the `keep` largest |w| (Algorithm 1 for n:m: at least n per group survive)."""
    scores = jnp.abs(weights).astype(jnp.float32)
    if isinstance(pattern, NM):
        scores = nm_protected_scores(scores, pattern)
    return topk_mask(scores, keep)


def path_name(path: tuple[Any, ...]) -> str:
    """The '/'-joined name of a pytree path, as engine.planning.sizing names parameters."""
    return "/".join(str(getattr(key, "key", getattr(key, "name", key))) for key in path)


def check_pattern(params: PyTree, sparsified: PyTree, pattern: Pattern) -> None:
    """Raise a ValueError naming the first sparsified tensor the pattern cannot apply to."""
    if not isinstance(pattern, NM):
        return
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, param), is_sparse in zip(leaves, jax.tree.leaves(sparsified), strict=True):
        if is_sparse:
            check_nm_groups(tuple(param.shape), pattern, path_name(path))


def dense_masks(params: PyTree, sparsified: PyTree) -> PyTree:
    """All-ones masks: a bool array per sparsified tensor, scalar True elsewhere."""
    return jax.tree.map(lambda p, s: jnp.ones(p.shape if s else (), bool), params, sparsified)


def masks_by_shape(
    params: PyTree,
    sparsified: PyTree,
    keep_for_size: Callable[[int, int], int | Array],
    pattern: Pattern,
) -> PyTree:
    """Magnitude masks of every sparsified tensor, keeping keep_for_size(size, group) weights each.

    Same-shaped tensors of a group (e.g. the query kernels of all layers) are stacked and masked
    under one vmap, so a model compiles one bisection loop per distinct shape, not one per tensor.
    """
    leaves, treedef = jax.tree.flatten(params)
    flags = treedef.flatten_up_to(sparsified)  # type: ignore[attr-defined]  # jaxlib's PyTreeDef has no stub here
    by_shape: dict[tuple[tuple[int, ...], int], list[int]] = {}
    for index, (leaf, group) in enumerate(zip(leaves, flags, strict=True)):
        if group:
            by_shape.setdefault((tuple(leaf.shape), int(group)), []).append(index)
    masks = [jnp.ones((), bool) for _ in leaves]
    for (shape, group), indices in by_shape.items():
        keep = keep_for_size(math.prod(shape), group)
        stacked = jnp.stack([leaves[i] for i in indices])
        stacked_masks = jax.vmap(lambda w, keep=keep: magnitude_mask(w, keep, pattern))(stacked)
        for position, index in enumerate(indices):
            masks[index] = stacked_masks[position]
    return jax.tree.unflatten(treedef, masks)


def compute_masks(
    params: PyTree, sparsified: PyTree, sparsity: float, pattern: Pattern = Unstructured()
) -> PyTree:
    """Masks of the given params at a fixed sparsity (e.g. to prune a restored pretrained model
    in one shot): every sparsified tensor keeps exactly keep_count(size, sparsity) weights."""
    check_pattern(params, sparsified, pattern)
    if isinstance(pattern, NM) and sparsity > pattern.sparsity + 1e-9:
        raise ValueError(f"sparsity {sparsity} exceeds what {pattern.n}:{pattern.m} allows")
    return masks_by_shape(params, sparsified, lambda size, _: keep_count(size, sparsity), pattern)


def apply_masks(params: PyTree, masks: PyTree) -> PyTree:
    """Pruned weights set to exactly zero."""
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, masks)
