"""Weight sparsity: schedules, exact magnitude masks (unstructured and gradual n:m), the masked
optax wrapper that keeps masks in the optimizer state, and per-tensor sparsity reports."""

from engine.sparsity.masks import (
    NM,
    Pattern,
    Unstructured,
    apply_masks,
    compute_masks,
    dense_masks,
    keep_count,
    magnitude_mask,
    nm_protected_scores,
    topk_mask,
)
from engine.sparsity.pruning import MaskedPruningState, masked_pruning, scheduled_masks
from engine.sparsity.report import TensorSparsity, nm_valid, sparsified_tree, sparsity_report
from engine.sparsity.schedules import DenseSchedule, GradualSchedule, OneShotSchedule, Schedule

__all__ = [
    "NM",
    "DenseSchedule",
    "GradualSchedule",
    "MaskedPruningState",
    "OneShotSchedule",
    "Pattern",
    "Schedule",
    "TensorSparsity",
    "Unstructured",
    "apply_masks",
    "compute_masks",
    "dense_masks",
    "keep_count",
    "magnitude_mask",
    "masked_pruning",
    "nm_protected_scores",
    "nm_valid",
    "scheduled_masks",
    "sparsified_tree",
    "sparsity_report",
    "topk_mask",
]
