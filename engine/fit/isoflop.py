"""The IsoFLOP analysis (Hoffmann et al. 2022, approach 2), per sparsity, beside the eq. 3 law.

Runs that share a training budget (their N D agree within a tolerance) and a sparsity form one
IsoFLOP curve: a parabola in log N fitted to their losses gives the budget's loss-optimal size
N_opt and data D_opt = (N D) / N_opt. Across budgets, N_opt(C) ~ C^a and D_opt(C) ~ C^b (a + b = 1
when C ~ N D). The law of eq. 3 implies the same exponents for every sparsity:
a = b_D / (b_N + b_D) and b = b_N / (b_N + b_D), since at fixed S the sparsity factor only scales
N's term. Intervals: a bootstrap over runs within each budget (approach 2's), and the law's from
the fit's own bootstrap samples.

Budgets are reported as training FLOPs C = k N D c_mul(S) (eq. 4's schedule); the exponents do not
depend on k or c_mul, which are constant at a fixed sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.fit.io import ResultsTable
from engine.fit.result import FitResult
from engine.planning.costs import c_mul

BOOTSTRAP = 200


@dataclass(frozen=True)
class BudgetOptimum:
    sparsity: float
    flops: float  # C = k N D c_mul(S), the budget's geometric mean
    budget_nd: float  # the budget as N x D (geometric mean over its runs)
    runs: int
    nonzeros_opt: float
    data_opt: float
    inside: bool  # the parabola's minimum lies within the budget's sizes (else an extrapolation)


@dataclass(frozen=True)
class ExponentFit:
    """N_opt ~ C^a and D_opt ~ C^b across budgets, with 95% bootstrap intervals."""

    a: float
    b: float
    a_interval: tuple[float, float] | None
    b_interval: tuple[float, float] | None
    budgets: int


@dataclass(frozen=True)
class IsoflopResult:
    optima: list[BudgetOptimum]
    exponents: dict[float, ExponentFit]  # sparsity -> exponents (only with >= 2 budgets)
    law_a: tuple[float, tuple[float, float] | None]  # eq. 3's b_D / (b_N + b_D), with interval
    law_b: tuple[float, tuple[float, float] | None]

    def to_json(self) -> dict[str, object]:
        return {
            "optima": [vars(o) for o in self.optima],
            "exponents": {str(s): {"a": e.a, "a_interval_95": e.a_interval, "b": e.b, "b_interval_95": e.b_interval,
                                   "budgets": e.budgets} for s, e in self.exponents.items()},
            "law": {"a": self.law_a[0], "a_interval_95": self.law_a[1], "b": self.law_b[0], "b_interval_95": self.law_b[1]},
        }


def budget_groups(products: np.ndarray, tolerance: float) -> np.ndarray:
    """A group index per run: runs whose N D lie within `tolerance` (relative) of their neighbours
    in sorted order share a budget."""
    order = np.argsort(products)
    logs = np.log(products[order])
    starts = np.concatenate([[True], np.diff(logs) > np.log1p(tolerance)])
    groups = np.empty(len(products), int)
    groups[order] = np.cumsum(starts) - 1
    return groups


def parabola_minimum(log_n: np.ndarray, loss: np.ndarray) -> float | None:
    """argmin over log N of the least-squares parabola through (log N, loss); None when it opens
    downwards (no minimum)."""
    curvature, slope, _ = np.polyfit(log_n, loss, 2)
    if curvature <= 0:
        return None
    return float(-slope / (2 * curvature))


def _optima(table: ResultsTable, groups: np.ndarray, min_sizes: int, rows: np.ndarray | None = None,
            k: float = 6.0) -> list[BudgetOptimum]:
    rows = np.arange(len(table)) if rows is None else rows
    found = []
    for s in np.unique(table.sparsity[rows]):
        for g in np.unique(groups[rows]):
            members = rows[(table.sparsity[rows] == s) & (groups[rows] == g)]
            log_n = np.log(table.nonzeros[members])
            if len(np.unique(log_n)) < min_sizes:
                continue
            best = parabola_minimum(log_n, np.log(table.loss[members]))
            if best is None:
                continue
            product = float(np.exp(np.mean(np.log(table.nonzeros[members] * table.data[members]))))
            found.append(BudgetOptimum(
                sparsity=float(s), flops=k * product * c_mul(float(s)), budget_nd=product, runs=len(members),
                nonzeros_opt=float(np.exp(best)), data_opt=product / float(np.exp(best)),
                inside=bool(log_n.min() <= best <= log_n.max()),
            ))
    return found


def _exponents(optima: list[BudgetOptimum]) -> dict[float, tuple[float, float, int]]:
    out = {}
    for s in sorted({o.sparsity for o in optima}):
        points = [o for o in optima if o.sparsity == s]
        if len(points) < 2:
            continue
        log_c = np.log([o.flops for o in points])
        a = float(np.polyfit(log_c, np.log([o.nonzeros_opt for o in points]), 1)[0])
        b = float(np.polyfit(log_c, np.log([o.data_opt for o in points]), 1)[0])
        out[s] = (a, b, len(points))
    return out


def _interval(values: list[float]) -> tuple[float, float] | None:
    values = [v for v in values if np.isfinite(v)]
    if len(values) < 10:
        return None
    low, high = np.percentile(values, (2.5, 97.5))
    return float(low), float(high)


def isoflop_analysis(table: ResultsTable, fit: FitResult | None, tolerance: float = 0.02, min_sizes: int = 3,
                     k: float = 6.0, seed: int = 0) -> IsoflopResult:
    """Approach 2 on the table's from-scratch runs, per sparsity; beside the law of `fit`."""
    rows = np.flatnonzero(table.from_scratch_mask())
    groups = budget_groups(table.nonzeros * table.data, tolerance)
    optima = _optima(table, groups, min_sizes, rows, k)
    point = _exponents(optima)
    rng = np.random.default_rng(seed)
    drawn: dict[float, list[tuple[float, float]]] = {s: [] for s in point}
    cells = [rows[(table.sparsity[rows] == s) & (groups[rows] == g)]
             for s in np.unique(table.sparsity[rows]) for g in np.unique(groups[rows])]
    for _ in range(BOOTSTRAP if point else 0):
        resampled = np.concatenate([rng.choice(cell, len(cell)) for cell in cells if len(cell)])
        for s, (a, b, _) in _exponents(_optima(table, groups, min_sizes, resampled, k)).items():
            if s in drawn:
                drawn[s].append((a, b))
    exponents = {s: ExponentFit(a, b, _interval([d[0] for d in drawn[s]]), _interval([d[1] for d in drawn[s]]), n)
                 for s, (a, b, n) in point.items()}
    law_a: tuple[float, tuple[float, float] | None] = (float("nan"), None)
    law_b: tuple[float, tuple[float, float] | None] = (float("nan"), None)
    if fit is not None:
        law = fit.coefficients
        law_a = (law.b_D / (law.b_N + law.b_D), None)
        law_b = (law.b_N / (law.b_N + law.b_D), None)
        if fit.bootstrap_samples is not None:
            b_n, b_d = fit.bootstrap_samples[:, 3], fit.bootstrap_samples[:, 5]
            law_a = (law_a[0], _interval(list(b_d / (b_n + b_d))))
            law_b = (law_b[0], _interval(list(b_n / (b_n + b_d))))
    return IsoflopResult(optima=optima, exponents=exponents, law_a=law_a, law_b=law_b)
