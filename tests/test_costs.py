"""engine/planning/costs.py: eq. 4 and its generalisation to any gradual schedule."""

import numpy as np
import pytest

from engine.planning.costs import (
    DENSE_COST_ALPHA,
    c_mul,
    c_mul_from_alpha,
    flops_per_param_example,
    pruning_cost_alpha,
)


def test_eq4_at_the_paper_schedule() -> None:
    for s in (0.0, 0.5, 0.75, 0.875):
        expected = (0.25 + 0.50 * (1 - 0.75 * s)) / (1 - s) + 0.25  # eq. 4 as printed
        assert c_mul(s) == pytest.approx(expected, rel=1e-12)


def _integrated_cost(sparsity: float, start: float, end: float, exponent: float) -> float:
    """density(t) / (1 - S) integrated over the run, numerically: the cost c_mul stands for."""
    t = np.linspace(0.0, 1.0, 200_001)
    phase = np.clip((t - start) / (end - start), 0.0, 1.0)
    sparsity_t = sparsity - sparsity * (1 - phase) ** exponent
    return float(np.trapezoid((1 - sparsity_t) / (1 - sparsity), t))


@pytest.mark.parametrize("start,end", [(0.25, 0.75), (0.0, 1.0), (0.1, 0.3)])
def test_c_mul_is_the_integrated_cost_of_any_cubic_schedule(start: float, end: float) -> None:
    for s in np.linspace(0.0, 0.95, 11):
        assert c_mul(s, start, end) == pytest.approx(_integrated_cost(s, start, end, 3.0), rel=1e-6)


@pytest.mark.parametrize("at", [0.0, 0.5, 1.0])
def test_c_mul_of_a_one_shot_prune(at: float) -> None:
    for s in np.linspace(0.0, 0.95, 11):  # dense until `at`, then 1 - S of the weights
        assert c_mul(s, at, at) == pytest.approx(at / (1 - s) + (1 - at), rel=1e-12)


def test_alpha_by_direct_integration_for_other_exponents() -> None:
    start, end, exponent, s = 0.2, 0.6, 2.0, 0.8  # a quadratic schedule
    expected = _integrated_cost(s, start, end, exponent)
    assert c_mul_from_alpha(s, pruning_cost_alpha(start, end, exponent)) == pytest.approx(expected, rel=1e-6)


def test_special_cases() -> None:
    assert pruning_cost_alpha() == pytest.approx(0.375)
    assert c_mul_from_alpha(0.5, DENSE_COST_ALPHA) == pytest.approx(1 / (1 - 0.5))  # the dense model of N / (1 - S)
    assert flops_per_param_example(True) == 3.0 and flops_per_param_example(False) == 6.0
    with pytest.raises(ValueError):
        pruning_cost_alpha(0.8, 0.2)
    with pytest.raises(ValueError):
        c_mul(1.0)
