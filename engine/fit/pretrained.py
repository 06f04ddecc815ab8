"""Pretrained-vs-scratch data equivalence (paper sec. 4.2, Table 4).

A model pruned from a pretrained checkpoint reaches a measured loss L_p at sparsity S with N
non-zeros after D_prune examples of pruning. The fitted (from-scratch) law says how much data a
from-scratch sparse run needs for the same loss: solve L(S, N, D) = L_p for D,
    (a_D / D)^b_D = L_p - (a_S (1 - S)^b_S + c_S) N^-b_N - c   =>   D = a_D / remainder^(1 / b_D).
Table 4 reports D / D_prune (pretraining cost excluded) and D / (D_pretrain + D_prune) (included).
If L_p is at or below the law's infinite-data limit, no amount of from-scratch data matches it: inf.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.fit.law import LawCoefficients, sparsity_factor


@dataclass(frozen=True)
class DataEquivalence:
    scratch_data: float  # D a from-scratch sparse run needs for the same loss
    excluding_pretraining: float  # scratch_data / prune_data
    including_pretraining: float  # scratch_data / (pretrain_data + prune_data)


def scratch_data_for_loss(
    coefficients: LawCoefficients, sparsity: float, nonzeros: float, loss: float
) -> float:
    remainder = loss - float(sparsity_factor(coefficients, sparsity)) * nonzeros ** (
        -coefficients.b_N
    ) - coefficients.c
    if remainder <= 0.0:
        return float("inf")
    return float(coefficients.a_D / remainder ** (1.0 / coefficients.b_D))


def data_equivalence(
    coefficients: LawCoefficients,
    sparsity: float,
    nonzeros: float,
    measured_loss: float,
    prune_data: float,
    pretrain_data: float,
) -> DataEquivalence:
    scratch = scratch_data_for_loss(coefficients, sparsity, nonzeros, measured_loss)
    return DataEquivalence(
        scratch_data=scratch,
        excluding_pretraining=scratch / prune_data,
        including_pretraining=scratch / (pretrain_data + prune_data),
    )


def equivalence_table(
    coefficients: LawCoefficients,
    sparsity: np.ndarray,
    nonzeros: np.ndarray,
    measured_loss: np.ndarray,
    prune_data: np.ndarray,
    pretrain_data: np.ndarray,
) -> list[DataEquivalence]:
    return [
        data_equivalence(coefficients, float(s), float(n), float(value), float(dp), float(dpre))
        for s, n, value, dp, dpre in zip(
            sparsity, nonzeros, measured_loss, prune_data, pretrain_data, strict=True
        )
    ]
