"""Compute-optimal analyses from a fitted law (paper sec. 3.3, eqs. 4-6, Figure 4).

Cost model: C = k N D c_mul(S), with k = 6 (3 for encoder-decoder, engine/planning/costs.py), N the
non-zeros and c_mul(S) = alpha / (1 - S) + (1 - alpha): alpha = 1 for dense costs (training the
dense base model of size N / (1 - S)), alpha = 0.375 for the paper's sparse costs (eq. 4; any
gradual schedule has this form, engine.planning.costs.pruning_cost_alpha). A sparse model at (N, C) sees
D_S = C / (k N c_mul(S)) examples.

Derivation of S_opt (the extracted eq. 6 is garbled, so it is redone here). Write x = 1 - S and
L(x) = (a_S x^b_S + c_S) N^-b_N + (a_D k N c_mul / C)^b_D + c. With dc_mul/dS = alpha / x^2,
dL/dS = 0 gives
    a_S b_S x^(b_S - 1) N^-b_N = b_D (a_D k N / C)^b_D c_mul^(b_D - 1) alpha / x^2,          (5')
i.e., multiplying by x^2 and using c_mul = (alpha + (1 - alpha) x) / x,
    g(x) := x^(b_S + b_D) (alpha + (1 - alpha) x)^(1 - b_D) = K,
    K := b_D alpha (a_D k N / C)^b_D N^b_N / (a_S b_S).
g is strictly increasing on (0, 1] (its log-derivative is positive for any b_D > 0), and dL/dx < 0
exactly when g(x) < K, so the stationary point is the unique minimum; if K >= g(1) = 1, S = 0 is
optimal. Dense costs (alpha = 1) give the closed form
    S_opt = max(0, 1 - K^(1 / (b_S + b_D))).                                               (6')
For other alpha, g(x) = K is one monotone equation in x, solved to machine precision by bisection
in log x; the contour "S is optimal" is closed-form in the other direction (C as a function of N):
    C_S(N) = a_D k N / [a_S b_S x^(b_S + b_D) N^-b_N / (b_D alpha (alpha + (1 - alpha) x)^(b_D - 1))]^(1 / b_D).

Chinchilla line (dense law at S = 0, A = a_S + c_S): minimising A N^-b_N + (a_D k N / C)^b_D over N
at fixed C gives
    N*(C) = (b_N A / b_D)^(1 / (b_N + b_D)) (C / (k a_D))^(b_D / (b_N + b_D)),
and, for a given N, the Chinchilla-optimal data D_chin(N) = a_D (b_D / (b_N A))^(1 / b_D) N^(b_N / b_D).

"x times Chinchilla length" (sec. 3.3: "50% sparsity is optimal for < 2x longer training than
Chinchilla"): at fixed N, the compute C at which sparsity S becomes optimal, expressed as the data
a dense N-parameter model would see with it, C / (k N), divided by D_chin(N). Equivalently the
ratio C / C_chin(N). Because both the contour and the Chinchilla line scale as D ~ N^(b_N / b_D)
(the paper: contours are parallel to the Chinchilla line), it does not depend on N:
    multiple(S)^b_D = b_N (a_S + c_S) alpha (alpha + (1 - alpha) x)^(b_D - 1) / (a_S b_S x^(b_S + b_D)).
"""

from __future__ import annotations

import numpy as np

from engine.fit.law import LawCoefficients

BISECTION_STEPS = 200


def chinchilla_nonzeros(coefficients: LawCoefficients, compute: np.ndarray, k: float) -> np.ndarray:
    """N*(C): the dense compute-optimal size at S = 0."""
    law = coefficients
    dense_amplitude = law.a_S + law.c_S
    exponent_sum = law.b_N + law.b_D
    return (law.b_N * dense_amplitude / law.b_D) ** (1.0 / exponent_sum) * (
        np.asarray(compute, np.float64) / (k * law.a_D)
    ) ** (law.b_D / exponent_sum)


def chinchilla_data(coefficients: LawCoefficients, nonzeros: np.ndarray) -> np.ndarray:
    """D_chin(N): the data at which a dense N-parameter model is compute-optimal (independent of k)."""
    law = coefficients
    dense_amplitude = law.a_S + law.c_S
    return law.a_D * (law.b_D / (law.b_N * dense_amplitude)) ** (1.0 / law.b_D) * np.asarray(
        nonzeros, np.float64
    ) ** (law.b_N / law.b_D)


def _stationarity_constant(
    law: LawCoefficients, nonzeros: np.ndarray, compute: np.ndarray, k: float, alpha: float
) -> np.ndarray:
    """K of g(x) = K (module docstring), computed in logs to avoid overflow."""
    log_k = (
        np.log(law.b_D * alpha / (law.a_S * law.b_S))
        + law.b_D * (np.log(law.a_D * k) + np.log(nonzeros) - np.log(compute))
        + law.b_N * np.log(nonzeros)
    )
    return log_k


def optimal_sparsity(
    coefficients: LawCoefficients,
    nonzeros: np.ndarray | float,
    compute: np.ndarray | float,
    k: float,
    alpha: float,
) -> np.ndarray:
    """S_opt(N, C) for the cost model c_mul = alpha / (1 - S) + 1 - alpha (alpha = 1: dense costs).

    Closed form (6') for alpha = 1; otherwise bisection on the monotone g(x) = K in log x.
    """
    law = coefficients
    nonzeros, compute = np.broadcast_arrays(
        np.asarray(nonzeros, np.float64), np.asarray(compute, np.float64)
    )
    log_k = _stationarity_constant(law, nonzeros, compute, k, alpha)
    exponent_sum = law.b_S + law.b_D
    if alpha == 1.0:
        log_x = np.minimum(log_k / exponent_sum, 0.0)
        return -np.expm1(log_x)

    def log_g(log_x: np.ndarray) -> np.ndarray:
        return exponent_sum * log_x + (1.0 - law.b_D) * np.log(alpha + (1.0 - alpha) * np.exp(log_x))

    # Bracket: (alpha + (1 - alpha) x) lies in [alpha, 1], which bounds the root on both sides.
    first = log_k / exponent_sum
    second = (log_k - (1.0 - law.b_D) * np.log(alpha)) / exponent_sum
    low = np.minimum(np.minimum(first, second), 0.0) - 1.0
    high = np.zeros_like(low)
    for _ in range(BISECTION_STEPS):
        middle = 0.5 * (low + high)
        too_high = log_g(middle) > log_k
        high = np.where(too_high, middle, high)
        low = np.where(too_high, low, middle)
    log_x = np.where(log_k >= 0.0, 0.0, 0.5 * (low + high))  # g(1) = 1 <= K: dense is optimal
    return -np.expm1(log_x)


def contour_compute(
    coefficients: LawCoefficients, sparsity: float, nonzeros: np.ndarray, k: float, alpha: float
) -> np.ndarray:
    """C_S(N): the compute at which `sparsity` is optimal for N non-zeros (closed form, eq. 5)."""
    law = coefficients
    x = 1.0 - sparsity
    nonzeros = np.asarray(nonzeros, np.float64)
    rhs = law.a_S * law.b_S * x ** (law.b_S + law.b_D) * nonzeros ** (-law.b_N) / (
        law.b_D * alpha * (alpha + (1.0 - alpha) * x) ** (law.b_D - 1.0)
    )
    return law.a_D * k * nonzeros / rhs ** (1.0 / law.b_D)


def chinchilla_multiple(coefficients: LawCoefficients, sparsity: float, alpha: float) -> float:
    """How many times the Chinchilla-optimal training length (at fixed N) until `sparsity` is
    optimal (module docstring for the definition); independent of N and of k."""
    law = coefficients
    x = np.float64(1.0 - sparsity)
    # numpy, not Python floats: a bootstrap sample with a tiny b_D, or a huge b_S whose x^b_S
    # underflows to 0, gives inf (left out of its interval) instead of raising.
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        power = (
            law.b_N * (law.a_S + law.c_S) * alpha * (alpha + (1.0 - alpha) * x) ** (law.b_D - 1.0)
            / (law.a_S * law.b_S * x ** (law.b_S + law.b_D))
        )
        return float(power ** (1.0 / np.float64(law.b_D)))
