"""The sparse scaling law L(S, N, D) (paper eq. 1/3) in paper units and in the fitted form.

Paper units (Table 7 names, N and D raw):
    L(S, N, D) = (a_S (1 - S)^b_S + c_S) N^-b_N + (a_D / D)^b_D + c                   (eq. 3)

The fit works in a normalised, log-parameterised form so that every coefficient stays positive and
the optimiser sees numbers of order one: with n = N / n_scale and d = D / d_scale,
    L = (a_S' (1 - S)^b_S + c_S') n^-b_N + (a_D' / d)^b_D + c,
    a_S' = a_S n_scale^-b_N,  c_S' = c_S n_scale^-b_N,  a_D' = a_D / d_scale,
and the optimiser's vector is theta = log(a_S', b_S, c_S', b_N, a_D', b_D, c).

In that form L is a sum of four exponentials of simple functions of theta, so its exact first and
second derivatives are short closed forms (`loss_jacobian`, `loss_hessian_from_sums`), which the fit's
numpy solver uses instead of autodiff (objective.py says why; tests/test_fit_solver.py checks them
against JAX's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

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


class LawTerms(NamedTuple):
    """The pieces of L at normalised inputs, for K parameter vectors at n points: each (K, n) (or
    (K, 1) where it does not depend on the point). Shared by the loss and its derivatives."""

    size_a: np.ndarray  # a_S' (1 - S)^b_S n^-b_N
    size_c: np.ndarray  # c_S' n^-b_N
    data: np.ndarray  # (a_D' / d)^b_D
    constant: np.ndarray  # c, (K, 1)
    sparsity_log: np.ndarray  # b_S log(1 - S)
    size_log: np.ndarray  # b_N log n
    data_log: np.ndarray  # b_D log(a_D' / d)
    b_d: np.ndarray  # (K, 1)

    def loss(self) -> np.ndarray:
        return self.size_a + self.size_c + self.data + self.constant


def law_terms(thetas: np.ndarray, log_density: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> LawTerms:
    """L's pieces from log-parameters `thetas` (K, 7) at normalised inputs (n,): log_density =
    log(1 - S), log_n = log(N / n_scale), log_d = log(D / d_scale). Every term is one exp, so every
    coefficient stays positive; overflow (absurd trial parameters) gives inf, which the solver
    rejects."""
    log_a_s, log_b_s, log_c_s, log_b_n, log_a_d, log_b_d, log_c = (thetas[:, i : i + 1] for i in range(7))
    with np.errstate(over="ignore", invalid="ignore"):
        b_d = np.exp(log_b_d)
        sparsity_log = np.exp(log_b_s) * log_density
        size_log = np.exp(log_b_n) * log_n
        data_log = b_d * (log_a_d - log_d)
        return LawTerms(
            size_a=np.exp(log_a_s + sparsity_log - size_log), size_c=np.exp(log_c_s - size_log),
            data=np.exp(data_log), constant=np.exp(log_c), sparsity_log=sparsity_log,
            size_log=size_log, data_log=data_log, b_d=b_d,
        )


def loss_normalised(thetas: np.ndarray, log_density: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """L (K, n) at normalised inputs (eq. 3) for log-parameters `thetas` (K, 7)."""
    return law_terms(thetas, log_density, log_n, log_d).loss()


def loss_jacobian(terms: LawTerms) -> np.ndarray:
    """dL/dtheta as (K, 7, n): [k, j, i] = dL_i/dtheta_j of row k (parameters before points, so the
    solver's products read it contiguously). Each term is exp(u) with u simple in theta, so
    d exp(u) = exp(u) du."""
    size_a, data = terms.size_a, terms.data
    jacobian = np.empty((size_a.shape[0], 7, size_a.shape[1]))
    jacobian[:, 0] = size_a
    np.multiply(size_a, terms.sparsity_log, out=jacobian[:, 1])
    jacobian[:, 2] = terms.size_c
    np.multiply(-(size_a + terms.size_c), terms.size_log, out=jacobian[:, 3])
    np.multiply(data, terms.b_d, out=jacobian[:, 4])
    np.multiply(data, terms.data_log, out=jacobian[:, 5])
    jacobian[:, 6] = terms.constant
    return jacobian


# d2L/dtheta2 from dL: with d2 exp(u) = exp(u) (du du' + d2u), every entry of sum_n a_n d2L_n is
# a sum of a few "factor sums" sum_n a_n f_n dL_n/dtheta_j, for the factors f below. E.g. the
# (b_S, b_S) entry: a_S' term * s (s + 1), s = b_S log(1 - S), is dL/db_S * (s + 1).
SECOND_DERIVATIVE_FACTORS = ("1", "b_N log n", "b_S log(1 - S)", "b_D log(a_D' / d)", "b_D")
_SECOND_DERIVATIVE_TERMS = {  # (row, column) of the Hessian: (factor, dL column, sign), ...
    (0, 0): ((0, 0, 1),), (0, 1): ((0, 1, 1),), (0, 3): ((1, 0, -1),),
    (1, 1): ((2, 1, 1), (0, 1, 1)), (1, 3): ((1, 1, -1),),
    (2, 2): ((0, 2, 1),), (2, 3): ((1, 2, -1),), (3, 3): ((0, 3, 1), (1, 3, -1)),
    (4, 4): ((4, 4, 1),), (4, 5): ((0, 4, 1), (3, 4, 1)), (5, 5): ((3, 5, 1), (0, 5, 1)),
    (6, 6): ((0, 6, 1),),
}


def _second_derivative_map() -> np.ndarray:
    """(factors x 7, 7 x 7): flattened factor sums -> flattened symmetric Hessian."""
    mapping = np.zeros((len(SECOND_DERIVATIVE_FACTORS) * 7, 49))
    for (row, column), contributions in _SECOND_DERIVATIVE_TERMS.items():
        for factor, derivative, sign in contributions:
            mapping[factor * 7 + derivative, sorted({row * 7 + column, column * 7 + row})] += sign
    return mapping


_SECOND_DERIVATIVE_MAP = _second_derivative_map()


def second_derivative_factors(terms: LawTerms) -> list[np.ndarray | float]:
    """The factors f of SECOND_DERIVATIVE_FACTORS, each broadcastable to (K, n)."""
    return [1.0, terms.size_log, terms.sparsity_log, terms.data_log, terms.b_d]


def loss_hessian_from_sums(factor_sums: np.ndarray) -> np.ndarray:
    """sum_i a_i d2L_i/dtheta2 (K, 7, 7) from factor_sums[k, f, j] = sum_i a_ki f_i dL_i/dtheta_j
    (K, factors, 7)."""
    rows = factor_sums.shape[0]
    return (factor_sums.reshape(rows, -1) @ _SECOND_DERIVATIVE_MAP).reshape(rows, 7, 7)
