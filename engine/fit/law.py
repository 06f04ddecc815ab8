"""The sparse scaling law L(S, N, D) (paper eq. 1/3) in paper units and in the fitted form.

Paper units (Table 7 names, N and D raw):
    L(S, N, D) = (a_S (1 - S)^b_S + c_S) N^-b_N + (a_D / D)^b_D + c                   (eq. 3)

The fit works in a normalised, log-parameterised form so that every coefficient stays positive and
the optimiser sees numbers of order one: with n = N / n_scale and d = D / d_scale,
    L = (a_S' (1 - S)^b_S + c_S') n^-b_N + (a_D' / d)^b_D + c,
    a_S' = a_S n_scale^-b_N,  c_S' = c_S n_scale^-b_N,  a_D' = a_D / d_scale,
and the optimiser's vector is theta = log(a_S', b_S, c_S', b_N, a_D', b_D, c).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import jax.numpy as jnp
import numpy as np

# The order of the seven coefficients everywhere (theta, JSON, tables): Table 7's column order.
COEFFICIENT_NAMES: tuple[str, ...] = ("a_S", "b_S", "c_S", "b_N", "a_D", "b_D", "c")
SPARSITY_COEFFICIENTS: tuple[str, ...] = ("a_S", "b_S", "c_S")
DENSE_COEFFICIENTS: tuple[str, ...] = ("b_N", "a_D", "b_D", "c")


@dataclass(frozen=True)
class LawCoefficients:
    """The seven coefficients of eq. 3 in paper units (N = non-zeros, D = examples or tokens)."""

    a_S: float
    b_S: float
    c_S: float
    b_N: float
    a_D: float
    b_D: float
    c: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, name) for name in COEFFICIENT_NAMES], dtype=np.float64)

    @classmethod
    def from_array(cls, values: np.ndarray | list[float]) -> LawCoefficients:
        return cls(**{name: float(v) for name, v in zip(COEFFICIENT_NAMES, values, strict=True)})

    @classmethod
    def from_mapping(cls, mapping: dict[str, float]) -> LawCoefficients:
        return cls(**{name: float(mapping[name]) for name in COEFFICIENT_NAMES})

    def replace(self, **changes: float) -> LawCoefficients:
        return LawCoefficients(**{**self.as_dict(), **changes})


@dataclass(frozen=True)
class Normalisation:
    """Units the fit works in: N / n_scale and D / d_scale, the data's geometric means.

    Centring log N and log D makes each amplitude nearly independent of its exponent (a_S' vs b_N,
    a_D' vs b_D), which cuts the optimiser's iterations roughly in half compared with powers of ten.
    """

    n_scale: float
    d_scale: float

    @classmethod
    def for_data(cls, nonzeros: np.ndarray, data: np.ndarray) -> Normalisation:
        def geometric_mean(values: np.ndarray) -> float:
            return float(np.exp(np.mean(np.log(np.asarray(values, np.float64)))))

        return cls(n_scale=geometric_mean(nonzeros), d_scale=geometric_mean(data))


def sparsity_factor(coefficients: LawCoefficients, sparsity: np.ndarray | float) -> np.ndarray:
    """a_S (1 - S)^b_S + c_S: the size term's multiplier at sparsity S (eq. 3)."""
    density = 1.0 - np.asarray(sparsity, dtype=np.float64)
    return coefficients.a_S * density**coefficients.b_S + coefficients.c_S


def predict_loss(
    coefficients: LawCoefficients,
    sparsity: np.ndarray | float,
    nonzeros: np.ndarray | float,
    data: np.ndarray | float,
) -> np.ndarray:
    """L(S, N, D) of eq. 3 in paper units (numpy, float64)."""
    size_term = sparsity_factor(coefficients, sparsity) * np.asarray(nonzeros, np.float64) ** (
        -coefficients.b_N
    )
    data_term = (coefficients.a_D / np.asarray(data, np.float64)) ** coefficients.b_D
    return size_term + data_term + coefficients.c


def theta_from_coefficients(coefficients: LawCoefficients, norm: Normalisation) -> np.ndarray:
    """Paper units -> the optimiser's log-parameter vector (see module docstring)."""
    size_rescale = norm.n_scale ** (-coefficients.b_N)
    normalised = [
        coefficients.a_S * size_rescale,
        coefficients.b_S,
        coefficients.c_S * size_rescale,
        coefficients.b_N,
        coefficients.a_D / norm.d_scale,
        coefficients.b_D,
        coefficients.c,
    ]
    return np.log(np.array(normalised, dtype=np.float64))


def coefficients_from_theta(theta: np.ndarray, norm: Normalisation) -> LawCoefficients:
    """The optimiser's log-parameter vector -> paper units (exact inverse of the above)."""
    return LawCoefficients.from_array(coefficients_from_thetas(np.asarray(theta)[None, :], norm)[0])


def coefficients_from_thetas(thetas: np.ndarray, norm: Normalisation) -> np.ndarray:
    """Vectorised coefficients_from_theta: (..., 7) log-parameters -> (..., 7) paper-unit values."""
    values = np.exp(np.asarray(thetas, np.float64))
    b_n = values[..., 3]
    out = values.copy()
    out[..., 0] *= norm.n_scale**b_n
    out[..., 2] *= norm.n_scale**b_n
    out[..., 4] *= norm.d_scale
    return out


def loss_normalised(
    theta: jnp.ndarray, log_density: jnp.ndarray, log_n: jnp.ndarray, log_d: jnp.ndarray
) -> jnp.ndarray:
    """L at normalised inputs from log-parameters (eq. 3), with three exps per point: the fit's
    inner loop, kept lean on purpose. log_density = log(1 - S), log_n = log(N / n_scale),
    log_d = log(D / d_scale). Overflow (absurd trial parameters) gives inf, which the line search
    rejects.
    """
    a_s, b_s, c_s, b_n, _, b_d, c = (jnp.exp(theta[i]) for i in range(7))
    size_term = (a_s * jnp.exp(b_s * log_density) + c_s) * jnp.exp(-b_n * log_n)
    data_term = jnp.exp(b_d * (theta[4] - log_d))  # (a_D' / d)^b_D
    return size_term + data_term + c


def is_positive_finite(coefficients: LawCoefficients) -> bool:
    return all(math.isfinite(v) and v > 0 for v in coefficients.as_dict().values())
