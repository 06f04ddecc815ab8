"""Many solves of the law's objective at once: jit + vmap over starting points (and weights).

Each solve is a damped Newton method with exact derivatives from JAX (newton.py) on the scaled
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
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from engine.fit.law import COEFFICIENT_NAMES
from engine.fit.newton import minimise_damped_newton
from engine.fit.objective import FitData, mean_huber, scaled_objective

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


@partial(jax.jit, static_argnames=("log_loss", "max_steps", "gtol"))
def _solve_batch(
    thetas0: jnp.ndarray,
    weights: jnp.ndarray,
    data: FitData,
    free: jnp.ndarray,
    deltas: jnp.ndarray,
    log_loss: bool,
    max_steps: int,
    gtol: float,
) -> tuple[jnp.ndarray, ...]:
    def solve_one(theta0: jnp.ndarray, w: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
        def objective_at(delta: jnp.ndarray):
            def objective(theta: jnp.ndarray) -> jnp.ndarray:
                # Frozen entries stay at theta0's values and get no gradient (nor curvature).
                theta = jnp.where(free > 0, theta, jax.lax.stop_gradient(theta0))
                return scaled_objective(theta, data, w, delta, log_loss)

            return objective

        def stage(theta: jnp.ndarray, delta: jnp.ndarray):
            solution = minimise_damped_newton(objective_at(delta), theta, max_steps, gtol)
            theta = jnp.where(jnp.isfinite(solution.x).all(), solution.x, theta)
            return theta, solution.steps

        theta, steps = jax.lax.scan(stage, theta0, deltas)
        final_delta = deltas[-1]
        gradient = jax.grad(objective_at(final_delta))(theta) * free
        return (
            theta,
            mean_huber(theta, data, w, final_delta, log_loss),
            jnp.linalg.norm(gradient),
            jnp.sum(steps),
            steps[-1] >= max_steps,
        )

    return jax.vmap(solve_one)(thetas0, weights)


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
    `continuation=False` solves at `delta` directly (for warm starts). Call inside
    `jax.enable_x64(True)`: the fit needs float64.
    """
    if free is None:
        free = np.ones(NUM_COEFFICIENTS)
    stages = settings.continuation_stages if continuation else 1
    args = (jnp.asarray(thetas0, jnp.float64), jnp.asarray(weights, jnp.float64), data,
            jnp.asarray(free, jnp.float64), jnp.asarray(continuation_deltas(delta, stages)))
    statics = {"log_loss": bool(log_loss), "max_steps": settings.max_steps, "gtol": settings.gtol}
    cache = exported_solver_directory()
    if cache is None:
        theta, objective, gradient_norm, steps, at_limit = _solve_batch(*args, **statics)
    else:
        from engine.fit.exported import exported_call  # imports this module

        theta, objective, gradient_norm, steps, at_limit = exported_call(_solve_batch, args, statics, cache)
    return BatchSolution(
        theta=np.asarray(theta), mean_huber=np.asarray(objective),
        gradient_norm=np.asarray(gradient_norm), steps=np.asarray(steps),
        hit_step_limit=np.asarray(at_limit),
    )


def exported_solver_directory() -> Path | None:
    """Where exported solvers are kept: beside the persistent compilation cache, if there is one
    (engine.compile_cache); None means trace in every process."""
    directory = jax.config.jax_compilation_cache_dir
    return Path(directory) if directory and jax.process_count() == 1 else None


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
