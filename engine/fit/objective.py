"""The fitting objective: Huber loss of the law's residuals, on L or on log L (paper sec. 3.2, app. C).

Two reductions of the same quantity:
- `mean_huber`: what the paper reports (Table 7's Error column), the weighted mean Huber loss;
- `scaled_objective`: what the optimiser minimises, sum(w * huber) / delta^2. It has the same
  minimiser, but is of order (number of runs) instead of order delta^2, so the optimiser's
  tolerances are meaningful: the reference notebook's mean-reduced objective is ~1e-5 on the T5 data,
  below the default tolerances of scipy's BFGS, which therefore stops early.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from engine.fit.law import Normalisation, loss_normalised


class FitData(NamedTuple):
    """The runs in the fit's normalised units, as arrays the jitted objective takes."""

    log_density: jnp.ndarray  # log(1 - S)
    log_n: jnp.ndarray  # log(N / n_scale)
    log_d: jnp.ndarray  # log(D / d_scale)
    loss: jnp.ndarray  # measured L
    log_loss: jnp.ndarray  # log of the measured L (precomputed: the objective's inner loop is hot)


def make_fit_data(
    sparsity: np.ndarray, nonzeros: np.ndarray, data: np.ndarray, loss: np.ndarray, norm: Normalisation
) -> FitData:
    return FitData(
        log_density=jnp.asarray(np.log1p(-np.asarray(sparsity, np.float64))),
        log_n=jnp.asarray(np.log(np.asarray(nonzeros, np.float64) / norm.n_scale)),
        log_d=jnp.asarray(np.log(np.asarray(data, np.float64) / norm.d_scale)),
        loss=jnp.asarray(np.asarray(loss, np.float64)),
        log_loss=jnp.asarray(np.log(np.asarray(loss, np.float64))),
    )


def huber(residual: jnp.ndarray, delta: float) -> jnp.ndarray:
    """Huber's loss: quadratic within +-delta, linear outside (continuous first derivative)."""
    magnitude = jnp.abs(residual)
    return jnp.where(magnitude <= delta, 0.5 * residual**2, delta * (magnitude - 0.5 * delta))


def residuals(theta: jnp.ndarray, data: FitData, log_loss: bool) -> jnp.ndarray:
    """Prediction minus measurement, on log L when `log_loss` (the T5 setting), else on L."""
    prediction = loss_normalised(theta, data.log_density, data.log_n, data.log_d)
    if log_loss:
        return jnp.log(prediction) - data.log_loss
    return prediction - data.loss


def mean_huber(
    theta: jnp.ndarray, data: FitData, weights: jnp.ndarray, delta: float, log_loss: bool
) -> jnp.ndarray:
    """Weighted mean Huber loss: the paper's reported fitting error (Table 7, Error)."""
    return jnp.sum(weights * huber(residuals(theta, data, log_loss), delta)) / jnp.sum(weights)


def scaled_objective(
    theta: jnp.ndarray, data: FitData, weights: jnp.ndarray, delta: float, log_loss: bool
) -> jnp.ndarray:
    """sum(w * huber) / delta^2: same minimiser as `mean_huber`, scaled for the optimiser."""
    return jnp.sum(weights * huber(residuals(theta, data, log_loss), delta)) / delta**2
