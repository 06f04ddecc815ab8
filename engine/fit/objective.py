"""The fitting objective: Huber loss of the law's residuals, on L or on log L (paper sec. 3.2, app. C).

Two reductions of the same quantity:
- `mean_huber`: what the paper reports (Table 7's Error column), the weighted mean Huber loss;
- the scaled objective sum(w * huber) / delta^2, what the optimiser minimises. It has the same
  minimiser, but is of order (number of runs) instead of order delta^2, so the optimiser's
  tolerances are meaningful: the reference notebook's mean-reduced objective is ~1e-5 on the T5 data,
  below the default tolerances of scipy's BFGS, which therefore stops early.

Everything is numpy, batched over K parameter vectors (rows of `thetas`, with one weight vector per
row), with the exact gradient and Hessian written out from the law's terms (law.py). Why not JAX
autodiff under jit: at 7 parameters and tens of runs the whole solve takes milliseconds, while XLA
took about 1.5 s to compile the batched Newton solver, twice the reference procedure's entire run.
tests/test_fit_solver.py checks these derivatives against JAX's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from engine.fit.law import Normalisation, law_terms, loss_hessian_from_sums, loss_jacobian, second_derivative_factors


class FitData(NamedTuple):
    """The runs in the fit's normalised units, each (n,)."""

    log_density: np.ndarray  # log(1 - S)
    log_n: np.ndarray  # log(N / n_scale)
    log_d: np.ndarray  # log(D / d_scale)
    loss: np.ndarray  # measured L
    log_loss: np.ndarray  # log of the measured L (precomputed: the objective's inner loop is hot)


class Derivatives(NamedTuple):
    """The scaled objective of each row with its exact derivatives."""

    value: np.ndarray  # (K,)
    gradient: np.ndarray  # (K, 7)
    hessian: np.ndarray  # (K, 7, 7)


def make_fit_data(
    sparsity: np.ndarray, nonzeros: np.ndarray, data: np.ndarray, loss: np.ndarray, norm: Normalisation
) -> FitData:
    loss = np.asarray(loss, np.float64)
    return FitData(
        log_density=np.log1p(-np.asarray(sparsity, np.float64)),
        log_n=np.log(np.asarray(nonzeros, np.float64) / norm.n_scale),
        log_d=np.log(np.asarray(data, np.float64) / norm.d_scale),
        loss=loss,
        log_loss=np.log(loss),
    )


def huber(residual: np.ndarray, delta: float) -> np.ndarray:
    """Huber's loss: quadratic within +-delta, linear outside (continuous first derivative):
    c (r - c / 2) with c = r clipped to +-delta."""
    clipped = np.clip(residual, -delta, delta)
    return clipped * (residual - 0.5 * clipped)


def _residuals(prediction: np.ndarray, data: FitData, log_loss: bool) -> np.ndarray:
    """Prediction minus measurement, on log L when `log_loss` (the T5 setting), else on L."""
    return np.log(prediction) - data.log_loss if log_loss else prediction - data.loss


def mean_huber(
    thetas: np.ndarray, data: FitData, weights: np.ndarray, delta: float, log_loss: bool
) -> np.ndarray:
    """Weighted mean Huber loss (K,) of `thetas` (K, 7) with `weights` (K, n): the paper's reported
    fitting error (Table 7, Error)."""
    terms = law_terms(thetas, data.log_density, data.log_n, data.log_d)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        losses = huber(_residuals(terms.loss(), data, log_loss), delta)
        return np.sum(weights * losses, axis=1) / np.sum(weights, axis=1)


def scaled_objective_derivatives(
    thetas: np.ndarray, data: FitData, weights: np.ndarray, delta: float | np.ndarray, log_loss: bool
) -> Derivatives:
    """sum(w * huber(r)) / delta^2 for `thetas` (K, 7) and `weights` (K, n), with its gradient and
    Hessian; `delta` is one number or one per row (K, 1). With r's first derivatives J and Huber's h', h'' (over delta^2):
        gradient = J' (w h'),  Hessian = J' diag(w h'') J + sum_i w_i h'_i d2r_i,
    where on log L, r = log L - log y: J = dL / L and d2r = d2L / L - J J'."""
    terms = law_terms(thetas, data.log_density, data.log_n, data.log_d)
    prediction = terms.loss()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        residual = _residuals(prediction, data, log_loss)
        clipped = np.clip(residual, -delta, delta)
        scaled_weights = weights / delta**2
        slope = scaled_weights * clipped  # w h'
        value = np.sum(slope * (residual - 0.5 * clipped), axis=1)  # as in huber()
        curvature = scaled_weights * (clipped == residual)  # w h'': 1 inside +-delta
        jacobian = loss_jacobian(terms)  # dL, (K, 7, n)
        if log_loss:  # J = dL / L; d2r = d2L / L - J J'
            jacobian /= prediction[:, None, :]
            curvature -= slope
        # One batched product gives J' diag(w h'') J and the sums the d2L part is made of (law.py);
        # the first of those, with the factor 1, is the gradient J' (w h').
        factors = second_derivative_factors(terms)
        left = np.empty((len(slope), 7 + len(factors), slope.shape[1]))
        np.multiply(jacobian, curvature[:, None, :], out=left[:, :7, :])
        for index, factor in enumerate(factors):
            np.multiply(slope, factor, out=left[:, 7 + index, :])
        products = np.matmul(left, np.swapaxes(jacobian, 1, 2))
        gradient = products[:, 7, :]
        hessian = products[:, :7, :] + loss_hessian_from_sums(products[:, 7:, :])
    return Derivatives(value=value, gradient=gradient, hessian=hessian)
