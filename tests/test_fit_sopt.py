"""S_opt: the closed form (dense costs), the monotone root (sparse costs) and the Chinchilla line,
each checked against direct numerical minimisation."""


import numpy as np
import pytest
from helpers import optimal_sparsity_numerical
from scipy.optimize import minimize_scalar

from engine.fit import paper
from engine.fit.law import LawCoefficients, predict_loss
from engine.fit.sopt import (
    chinchilla_data,
    chinchilla_multiple,
    chinchilla_nonzeros,
    contour_compute,
    optimal_sparsity,
)
from engine.planning.costs import DENSE_COST_ALPHA, pruning_cost_alpha

LAWS = [paper.VIT_JFT, paper.T5_C4, paper.T5_C4_NM]
ALPHAS = [DENSE_COST_ALPHA, pruning_cost_alpha(), pruning_cost_alpha(0.0, 1.0), 0.05]


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_closed_form_matches_numerical_minimisation_on_a_grid(law, alpha: float) -> None:
    k = 6.0
    interior = 0
    for n in np.geomspace(1e6, 1e10, 5):
        d_chin = chinchilla_data(law, n)
        for multiple in np.geomspace(0.1, 1e5, 9):
            compute = k * n * d_chin * multiple
            closed = float(optimal_sparsity(law, n, compute, k, alpha))
            numerical = optimal_sparsity_numerical(law, n, compute, k, alpha)
            assert closed == pytest.approx(numerical, abs=1e-6)
            interior += 0.0 < closed < 0.999
    assert interior >= 10  # the grid exercises the interior, not only S = 0


@pytest.mark.parametrize("law", LAWS[:2])
def test_contour_is_where_that_sparsity_is_optimal(law) -> None:
    for alpha in (DENSE_COST_ALPHA, pruning_cost_alpha()):
        for s in (0.3, 0.5, 0.75, 0.9):
            n = np.array([1e6, 1e8, 1e10])
            compute = contour_compute(law, s, n, 6.0, alpha)
            assert np.allclose(optimal_sparsity(law, n, compute, 6.0, alpha), s, atol=1e-9)


@pytest.mark.parametrize("law", LAWS[:2])
def test_chinchilla_line_minimises_the_dense_law_at_fixed_compute(law) -> None:
    k = 6.0
    for compute in (1e18, 1e21):
        def loss_at(log_n: float, compute: float = compute) -> float:
            n = np.exp(log_n)
            return float(predict_loss(law, 0.0, n, compute / (k * n)))

        best = minimize_scalar(loss_at, bounds=(np.log(1e3), np.log(1e13)), method="bounded", options={"xatol": 1e-10})
        assert float(chinchilla_nonzeros(law, compute, k)) == pytest.approx(np.exp(best.x), rel=1e-5)
        n_star = float(chinchilla_nonzeros(law, compute, k))
        assert float(chinchilla_data(law, n_star)) == pytest.approx(compute / (k * n_star), rel=1e-9)


def test_dense_is_optimal_when_compute_is_short() -> None:
    law = paper.T5_C4
    n = 1e8
    compute = 3.0 * n * chinchilla_data(law, n) * 0.5
    assert float(optimal_sparsity(law, n, compute, 3.0, DENSE_COST_ALPHA)) == 0.0


def test_chinchilla_multiple_of_a_bootstrap_sample_with_a_tiny_b_d_is_inf_not_an_error() -> None:
    """A bootstrap sample can have b_D near 0, so power ** (1 / b_D) exceeds a float: the multiple
    is inf (left out of the interval), where Python's float power raised OverflowError and the
    report was lost."""
    law = LawCoefficients(a_S=1.0, b_S=0.5, c_S=0.1, b_N=0.5, a_D=1.0, b_D=1e-4, c=0.1)
    assert chinchilla_multiple(law, 0.5, DENSE_COST_ALPHA) == np.inf
    assert np.isfinite(chinchilla_multiple(paper.T5_C4, 0.5, DENSE_COST_ALPHA))


def test_chinchilla_multiple_with_a_huge_b_s_is_inf_not_an_error() -> None:
    """Found by the slow soak test: a fit to a table with one absurd value ended at b_S = 832, so
    (1 - S)^(b_S + b_D) underflowed to 0 and the division raised ZeroDivisionError."""
    law = LawCoefficients(a_S=5e4, b_S=832.0, c_S=2e-253, b_N=0.76, a_D=2.8e17, b_D=0.043, c=1.4e-6)
    assert chinchilla_multiple(law, 0.75, DENSE_COST_ALPHA) == np.inf
