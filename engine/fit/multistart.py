"""Many solves of the law's objective at once, batched over starting points (and weights).

Each solve is a damped Newton method with exact derivatives (newton.py) on the scaled
objective (objective.py), run through a short continuation in the Huber delta: first a large delta
(nearly least squares: smooth, quick to cross the law's curved valleys from a random start), then
10x smaller, down to the requested delta, each stage warm-started from the previous one. Only the
last stage's objective matters; the earlier ones only bring the start close. The same batched
solver serves the multi-start fit (many starts, one weight vector), the held-out refit and the
bootstrap (one warm start, many resampling weight vectors, no continuation). Coefficients can be
frozen (the n:m refit of sec. 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.fit.law import COEFFICIENT_NAMES
from engine.fit.newton import DerivativesAt, minimise_damped_newton
from engine.fit.objective import Derivatives, FitData, mean_huber, scaled_objective_derivatives

NUM_COEFFICIENTS = len(COEFFICIENT_NAMES)


@dataclass(frozen=True)
class SolverSettings:
    """Stopping rules of each stage (the objective is scaled to order "number of runs")."""

    max_steps: int = 1000
    gtol: float = 1e-9
    continuation_stages: int = 3  # deltas: 100x, 10x, 1x the requested delta


class BatchSolution(NamedTuple):
    """One row per solve."""

    theta: np.ndarray  # (K, 7) log-parameters in normalised units
    mean_huber: np.ndarray  # (K,) the paper's reported objective
    gradient_norm: np.ndarray  # (K,) 2-norm of d(scaled objective)/d(theta) over the free entries
    steps: np.ndarray  # (K,) Newton steps taken, all stages
    hit_step_limit: np.ndarray  # (K,) the last stage stopped at max_steps


def continuation_deltas(delta: float, stages: int) -> np.ndarray:
    """delta * 10^(stages-1), ..., delta * 10, delta."""
    return delta * 10.0 ** np.arange(stages - 1, -1, -1, dtype=np.float64)


def solve_batch(
    thetas0: np.ndarray,
    weights: np.ndarray,
    data: FitData,
    delta: float,
    log_loss: bool,
    free: np.ndarray | None = None,
    settings: SolverSettings = SolverSettings(),
    continuation: bool = True,
) -> BatchSolution:
    """Minimise the objective from each row of `thetas0` (K, 7) with the matching row of `weights`
    (K, n_runs). `free` (7,) marks the coefficients to fit (1) or keep at their start value (0).
    `continuation=False` solves at `delta` directly (for warm starts).
    """
    free = np.ones(NUM_COEFFICIENTS) if free is None else np.asarray(free, np.float64)
    thetas0 = np.asarray(thetas0, np.float64)
    weights = np.asarray(weights, np.float64)
    deltas = continuation_deltas(delta, settings.continuation_stages if continuation else 1)
    derivatives_at = _derivatives_at(thetas0, weights, data, free, deltas, log_loss)
    solution = minimise_damped_newton(derivatives_at, thetas0, settings.max_steps, settings.gtol, len(deltas))
    theta = solution.x
    return BatchSolution(
        theta=theta, mean_huber=mean_huber(theta, data, weights, delta, log_loss),
        gradient_norm=np.linalg.norm(solution.gradient, axis=1), steps=solution.steps,
        hit_step_limit=solution.last_stage_steps >= settings.max_steps,
    )


def _derivatives_at(
    thetas0: np.ndarray, weights: np.ndarray, data: FitData, free: np.ndarray, deltas: np.ndarray, log_loss: bool
) -> DerivativesAt:
    """The solver's view of row k's objective in stage s (Huber delta deltas[s]): frozen entries stay
    at thetas0[k]'s values and get no gradient (nor curvature)."""
    all_free = bool(free.all())
    free_pairs = free[:, None] * free[None, :]

    def derivatives_at(thetas: np.ndarray, rows: np.ndarray, stages: np.ndarray) -> Derivatives:
        delta = deltas[stages][:, None]
        if all_free:
            return scaled_objective_derivatives(thetas, data, weights[rows], delta, log_loss)
        thetas = np.where(free > 0, thetas, thetas0[rows])
        value, gradient, hessian = scaled_objective_derivatives(thetas, data, weights[rows], delta, log_loss)
        return Derivatives(value=value, gradient=gradient * free, hessian=hessian * free_pairs)

    return derivatives_at


def random_starts(rng: np.random.Generator, count: int, loss: np.ndarray) -> np.ndarray:
    """Uniform random starting points (K, 7) as log-parameters in the normalised units.

    The box is set by the data, not by the coefficients' units: at the data's centre (N = n_scale,
    D = d_scale, S = 0) the size term and the data term are each log-uniform in [1%, 100%] of the
    median loss (the size term split between a_S' and c_S' by a uniform fraction), the exponents
    are uniform in [0.1, 1], and c is uniform in [0, 1) times the smallest measured loss.
    """
    loss_scale = float(np.median(loss))
    size_term = loss_scale * 10.0 ** rng.uniform(-2.0, 0.0, count)
    data_term = loss_scale * 10.0 ** rng.uniform(-2.0, 0.0, count)
    share = rng.uniform(0.05, 0.95, count)
    b_s, b_n, b_d = (rng.uniform(0.1, 1.0, count) for _ in range(3))
    c = rng.uniform(0.0, 1.0, count) * float(np.min(loss))
    a_d = data_term ** (1.0 / b_d)  # (a_D' / d)^b_D at d = 1 is the data term
    values = np.stack(
        [share * size_term, b_s, (1.0 - share) * size_term, b_n, a_d, b_d, np.maximum(c, 1e-6)],
        axis=1,
    )
    return np.log(values)
