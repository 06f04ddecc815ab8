"""Which runs to train next: a greedy Bayesian design that spends compute where it teaches most.

The fitted law's uncertainty is taken as a Gaussian over its log-parameters theta, with the
covariance of the fit's bootstrap samples (so flat directions the data cannot pin are as wide as
the bootstrap found them). A new run at (S, N, D) adds one observation y = f(theta; S, N, D) + noise
(f = L, or log L for a log-loss fit; the noise variance is the fit's residual variance), which
updates the covariance exactly as a linear Gaussian observation does (Sherman-Morrison):
    Sigma' = Sigma - (Sigma j)(Sigma j)^T / (noise + j^T Sigma j),   j = df/dtheta at the run.
A target g (a gain, a coefficient, a loss, S_opt, or all coefficients at once) has variance
grad g^T Sigma grad g. Greedily, the candidate with the largest variance reduction per FLOP is
taken (for `all`: the largest gain in log det of the information, the D-optimal criterion), the
covariance updated, and the next one chosen given the first, until the budget is spent: a run too
close to one already chosen teaches little, so a batch spreads out by itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import UserError
from engine.fit.gains import gain
from engine.fit.io import ResultsTable
from engine.fit.law import COEFFICIENT_NAMES, LawCoefficients, coefficients_from_theta, predict_loss, theta_from_coefficients
from engine.fit.result import FitResult
from engine.fit.sopt import optimal_sparsity
from engine.planning.costs import pruning_cost_alpha

STEP = 1e-6  # central differences in theta (log-parameters of order one)
NOISE_FLOOR = 1e-12


@dataclass(frozen=True)
class Candidate:
    """A run that could be trained: where it sits in (S, N, D) and what it costs."""

    sparsity: float
    nonzeros: float
    data: float
    flops: float
    coordinates: dict[str, Any] = field(default_factory=dict)  # sweep coordinates, when planned from a spec
    run_id: str | None = None


@dataclass(frozen=True)
class Target:
    """What to pin down: `gain:S`, a coefficient name, `loss:S,N,D`, `sopt:N,C` or `all`."""

    text: str
    kind: str
    args: tuple[float, ...] = ()

    def value(self, law: LawCoefficients, k: float) -> float:
        if self.kind == "gain":
            return float(gain(law, self.args[0]))
        if self.kind == "coefficient":
            return float(getattr(law, COEFFICIENT_NAMES[int(self.args[0])]))
        if self.kind == "loss":
            return float(predict_loss(law, *self.args))
        if self.kind == "sopt":
            return float(optimal_sparsity(law, self.args[0], self.args[1], k, pruning_cost_alpha()))
        raise ValueError(f"target {self.text!r} has no single value")


def parse_target(text: str) -> Target:
    """`gain:0.75`, `b_N`, `loss:0.5,1e8,1e10`, `sopt:1e8,1e20` or `all`; UserError otherwise."""
    text = text.strip()
    if text == "all" or text in COEFFICIENT_NAMES:
        return Target(text, "all") if text == "all" else Target(text, "coefficient", (COEFFICIENT_NAMES.index(text),))
    match = re.fullmatch(r"(gain|loss|sopt):(.+)", text)
    expected = {"gain": 1, "loss": 3, "sopt": 2}
    if match:
        kind, raw = match.groups()
        try:
            args = tuple(float(part) for part in raw.split(","))
        except ValueError:
            args = ()
        if len(args) == expected[kind] and all(np.isfinite(args)):
            if kind == "gain" and not 0 < args[0] < 1:
                raise UserError(f"--target {text}: the sparsity must be in (0, 1)", exit_code=2)
            if kind in ("loss", "sopt") and min(args[-2:]) <= 0:
                raise UserError(f"--target {text}: N, D and C must be positive", exit_code=2)
            return Target(text, kind, args)
    raise UserError(f"--target {text}: expected gain:S, a coefficient ({', '.join(COEFFICIENT_NAMES)}), "
                    "loss:S,N,D, sopt:N,C or all", exit_code=2)


@dataclass(frozen=True)
class Proposal:
    candidate: Candidate
    target_sd_after: float  # the target's predicted standard deviation once this run (and those before) is trained


@dataclass(frozen=True)
class Design:
    target: Target
    sd_before: float
    proposals: list[Proposal]
    budget: float
    spent: float
    noise_sd: float
    considered: int  # candidates left after removing runs already in the results


class LinearisedLaw:
    """The fit's law around its best point, in the fit's own response space (L or log L)."""

    def __init__(self, fit: FitResult, table: ResultsTable, k: float) -> None:
        self.fit, self.norm, self.k = fit, fit.normalisation, k
        self.theta = theta_from_coefficients(fit.coefficients, self.norm)
        self.log_loss = fit.settings.log_loss
        self.covariance = self._prior_covariance()
        fitted = table.select(np.asarray(fit.fit_mask))
        residuals = self.response(self.theta, fitted.sparsity, fitted.nonzeros, fitted.data) - self._observed(fitted.loss)
        dof = max(len(fitted) - len(fit.settings.free_coefficients()), 1)
        self.noise = max(float(np.sum(residuals**2) / dof), NOISE_FLOOR)

    def _observed(self, loss: np.ndarray) -> np.ndarray:
        return np.log(loss) if self.log_loss else loss

    def response(self, theta: np.ndarray, s: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return self._observed(predict_loss(coefficients_from_theta(theta, self.norm), s, n, d))

    def _prior_covariance(self) -> np.ndarray:
        samples = self.fit.bootstrap_samples
        if samples is None or len(samples) < 10:
            raise UserError("the fit has no bootstrap samples: refit with --bootstrap 200 or more; a suggestion "
                            "needs the law's uncertainty")
        thetas = np.array([theta_from_coefficients(LawCoefficients.from_array(row), self.norm) for row in samples])
        thetas = thetas[np.all(np.isfinite(thetas), axis=1)]
        free = np.array([name in self.fit.settings.free_coefficients() for name in COEFFICIENT_NAMES])
        covariance = np.cov(thetas, rowvar=False)
        covariance[~free, :] = 0.0  # frozen coefficients (an n:m refit) are known exactly
        covariance[:, ~free] = 0.0
        return covariance

    def jacobian(self, candidates: list[Candidate]) -> np.ndarray:
        """(runs, 7): d response / d theta at each candidate, by central differences."""
        s = np.array([c.sparsity for c in candidates])
        n = np.array([c.nonzeros for c in candidates])
        d = np.array([c.data for c in candidates])
        columns = []
        for i in range(7):
            step = np.zeros(7)
            step[i] = STEP
            columns.append((self.response(self.theta + step, s, n, d) - self.response(self.theta - step, s, n, d)) / (2 * STEP))
        return np.stack(columns, axis=1)

    def target_gradient(self, target: Target) -> np.ndarray:
        def value(theta: np.ndarray) -> float:
            return target.value(coefficients_from_theta(theta, self.norm), self.k)

        gradient = np.zeros(7)
        for i in range(7):
            step = np.zeros(7)
            step[i] = STEP
            gradient[i] = (value(self.theta + step) - value(self.theta - step)) / (2 * STEP)
        return gradient


def _score_function(target: Target, linear: LinearisedLaw) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, float]]:
    """(covariance, jacobian rows) -> (per-candidate information gain, the target's current sd)."""
    if target.kind == "all":
        free = np.array([name in linear.fit.settings.free_coefficients() for name in COEFFICIENT_NAMES])

        def d_optimal(covariance: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, float]:
            # The information gain of one observation is log(1 + j^T Sigma j / noise); the sd shown is the
            # coefficients' root-mean-square sd in log space, about their mean relative sd.
            spread = np.einsum("ij,jk,ik->i", rows, covariance, rows)
            return np.log1p(spread / linear.noise), float(np.sqrt(max(np.mean(np.diag(covariance)[free]), 0.0)))

        return d_optimal
    gradient = linear.target_gradient(target)

    def variance_reduction(covariance: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, float]:
        sigma_g = covariance @ gradient  # (7,)
        along = rows @ sigma_g  # (runs,) j^T Sigma grad g
        spread = np.einsum("ij,jk,ik->i", rows, covariance, rows)
        return along**2 / (linear.noise + spread), float(np.sqrt(max(gradient @ sigma_g, 0.0)))

    return variance_reduction


def suggest_runs(fit: FitResult, table: ResultsTable, candidates: list[Candidate], target: Target,
                 budget: float, k: float, batch: int | None = None) -> Design:
    """Greedy design (module docstring): runs from `candidates`, not already in `table`, whose FLOPs
    add up to at most `budget`; at most `batch` runs when given."""
    if budget <= 0:
        raise UserError(f"--budget must be positive, got {budget:g}", exit_code=2)
    linear = LinearisedLaw(fit, table, k)
    fresh = [c for c in candidates if not _already_run(c, table)]
    covariance = linear.covariance.copy()
    score = _score_function(target, linear)
    rows = linear.jacobian(fresh) if fresh else np.zeros((0, 7))
    flops = np.array([c.flops for c in fresh])
    _, sd_before = score(covariance, rows[:0])
    chosen: list[Proposal] = []
    spent, available = 0.0, np.ones(len(fresh), bool)
    while available.any() and (batch is None or len(chosen) < batch):
        affordable = available & (flops <= budget - spent)
        if not affordable.any():
            break
        gains, _ = score(covariance, rows)
        per_flop = np.where(affordable, gains / flops, -np.inf)
        best = int(np.argmax(per_flop))
        if gains[best] <= 0:
            break
        j = rows[best]
        sigma_j = covariance @ j
        covariance = covariance - np.outer(sigma_j, sigma_j) / (linear.noise + j @ sigma_j)
        spent += flops[best]
        available[best] = False
        _, sd_after = score(covariance, rows[:0])
        chosen.append(Proposal(fresh[best], sd_after))
    return Design(target, sd_before, chosen, budget, spent, float(np.sqrt(linear.noise)), len(fresh))


def _already_run(candidate: Candidate, table: ResultsTable) -> bool:
    """A deterministic run repeated teaches nothing: same run id, or the same (S, N, D)."""
    run_ids = table.extra.get("run_id")
    if candidate.run_id is not None and run_ids is not None and candidate.run_id in {str(r) for r in run_ids}:
        return True
    close = (np.isclose(table.sparsity, candidate.sparsity, rtol=0, atol=1e-9)
             & np.isclose(table.nonzeros, candidate.nonzeros, rtol=1e-9)
             & np.isclose(table.data, candidate.data, rtol=1e-9))
    return bool(close.any())
