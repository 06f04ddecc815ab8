"""Sparsity gains (paper sec. 3.3.1, eq. 7; Table 2)."""

from __future__ import annotations

import numpy as np

from engine.fit.law import LawCoefficients


def gain(coefficients: LawCoefficients, sparsity: float | np.ndarray) -> np.ndarray:
    """Dense size multiplier matching a sparse model with the same data (eq. 7):
    gain(S) = ((a_S (1 - S)^b_S + c_S) / (a_S + c_S))^(-1 / b_N).
    """
    density = 1.0 - np.asarray(sparsity, np.float64)
    ratio = (coefficients.a_S * density**coefficients.b_S + coefficients.c_S) / (
        coefficients.a_S + coefficients.c_S
    )
    return ratio ** (-1.0 / coefficients.b_N)


def gains_from_samples(samples: np.ndarray, sparsity: float) -> np.ndarray:
    """eq. 7 for many coefficient vectors at once: samples (..., 7) in Table 7 order."""
    a_s, b_s, c_s, b_n = samples[..., 0], samples[..., 1], samples[..., 2], samples[..., 3]
    with np.errstate(over="ignore"):  # a resample with b_N near 0: an infinite gain, shown as such
        ratio = (a_s * (1.0 - sparsity) ** b_s + c_s) / (a_s + c_s)
        return ratio ** (-1.0 / b_n)


def gain_interval(samples: np.ndarray, sparsity: float) -> tuple[float, float]:
    """The 95% interval (2.5th and 97.5th percentiles, NaN resamples left out) of eq. 7 over samples."""
    low, high = np.nanpercentile(gains_from_samples(samples, sparsity), (2.5, 97.5))
    return float(low), float(high)
