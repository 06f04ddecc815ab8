"""Bootstrap over runs (resampling rows with replacement), warm-started from the best fit.

Each resample is a vector of multiplicities (a multinomial draw) used as weights in the objective,
so every resample has the same array shapes and all of them are solved in one batched call. The
percentile intervals cover every coefficient and anything computed from them (gains, predictions).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engine.fit.law import COEFFICIENT_NAMES, Normalisation, coefficients_from_thetas
from engine.fit.multistart import SolverSettings, solve_batch
from engine.fit.objective import FitData

INTERVAL_PERCENTILES = (2.5, 97.5)
CONVERGED_GRADIENT = 1e-4  # on the scaled objective (order: number of runs)
# A 95% interval wider than this factor means the data cannot pin the coefficient down.
UNIDENTIFIED_RATIO = 10.0


@dataclass(frozen=True)
class BootstrapResult:
    samples: np.ndarray  # (B, 7) coefficients in paper units
    converged: np.ndarray  # (B,) gradient small at the end of the resample's solve
    seconds: float

    @property
    def resamples(self) -> int:
        return int(self.samples.shape[0])

    def interval(self, values: np.ndarray) -> tuple[float, float]:
        low, high = np.nanpercentile(values, INTERVAL_PERCENTILES)
        return float(low), float(high)

    def coefficient_intervals(self) -> dict[str, tuple[float, float]]:
        return {name: self.interval(self.samples[:, i]) for i, name in enumerate(COEFFICIENT_NAMES)}


def resample_weights(rng: np.random.Generator, fit_rows: np.ndarray, resamples: int) -> np.ndarray:
    """(B, n) multiplicities: rows in `fit_rows` resampled with replacement, others weight 0."""
    indices = np.flatnonzero(fit_rows)
    counts = rng.multinomial(indices.size, np.full(indices.size, 1.0 / indices.size), size=resamples)
    weights = np.zeros((resamples, fit_rows.size))
    weights[:, indices] = counts
    return weights


def run_bootstrap(
    best_theta: np.ndarray,
    data: FitData,
    fit_rows: np.ndarray,
    norm: Normalisation,
    delta: float,
    log_loss: bool,
    free: np.ndarray,
    resamples: int,
    rng: np.random.Generator,
    max_steps: int = 300,
) -> BootstrapResult:
    """Solve every resample from the best fit, all in one batch."""
    started = time.perf_counter()
    weights = resample_weights(rng, fit_rows, resamples)
    starts = np.repeat(best_theta[None, :], resamples, axis=0)
    solution = solve_batch(
        starts, weights, data, delta, log_loss, free=free,
        settings=SolverSettings(max_steps=max_steps), continuation=False,
    )
    return BootstrapResult(
        samples=coefficients_from_thetas(solution.theta, norm),
        converged=solution.gradient_norm <= CONVERGED_GRADIENT,
        seconds=time.perf_counter() - started,
    )
