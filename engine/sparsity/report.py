"""Which tensors are sparsified, and how sparse they really are (for `engine inspect`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from engine.planning.sizing import EMBEDDING_TENSORS, ModelDims, is_sparsified
from engine.sparsity.masks import NM, path_name

PyTree = Any


BACKBONE, MATCHED_EMBEDDINGS = 1, 2  # the groups of engine.sparsity.pruning's schedules


def sparsified_tree(params: PyTree, dims: ModelDims, matched_embeddings: bool = False) -> PyTree:
    """Python ints shaped like params: 1 for the tensors engine.planning.sizing marks as
    sparsified, 2 for T5's token embedding and LM head when they are pruned to their own matched
    level (targets backbone_and_matched_embeddings), 0 elsewhere."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)

    def group(name: str) -> int:
        if is_sparsified(name, dims):
            return BACKBONE
        return MATCHED_EMBEDDINGS if matched_embeddings and name in EMBEDDING_TENSORS else 0

    flags = [group(path_name(path)) for path, _ in leaves]
    return jax.tree_util.tree_unflatten(treedef, flags)


@dataclass(frozen=True)
class TensorSparsity:
    """Realised sparsity of one tensor, counted from its exact zeros."""

    path: str
    shape: tuple[int, ...]
    size: int
    nonzeros: int
    sparsified: bool
    nm_valid: bool | None  # every group of m along axis 0 has at most n non-zeros; None if not n:m

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.size


def nm_valid(weights: np.ndarray, pattern: NM) -> bool:
    """True when each group of m consecutive weights along axis 0 holds at most n non-zeros."""
    if weights.ndim == 0 or weights.shape[0] % pattern.m != 0:
        return False
    groups = (weights != 0).reshape(weights.shape[0] // pattern.m, pattern.m, -1)
    return bool((groups.sum(axis=1) <= pattern.n).all())


def sparsity_report(
    params: PyTree, sparsified: PyTree, pattern: NM | None = None
) -> list[TensorSparsity]:
    """One row per tensor (host-side numpy; works on restored checkpoints)."""
    rows = []
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, param), is_sparse in zip(leaves, jax.tree.leaves(sparsified), strict=True):
        weights = np.asarray(param)
        rows.append(
            TensorSparsity(
                path=path_name(path),
                shape=tuple(weights.shape),
                size=int(weights.size),
                nonzeros=int(np.count_nonzero(weights)),
                sparsified=bool(is_sparse),
                nm_valid=nm_valid(weights, pattern) if (pattern and is_sparse) else None,
            )
        )
    return rows
