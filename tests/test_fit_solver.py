"""The numpy solver (objective.py, newton.py, multistart.py): its hand-written derivatives against
JAX autodiff of an independent transcription of eq. 3, its linear algebra, and its T5 result
against the numbers the earlier solver (JAX autodiff, jit + vmap) reached."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from engine.fit import multistart, newton, paper
from engine.fit.fitting import fit_law
from engine.fit.io import read_table
from engine.fit.law import LawCoefficients, Normalisation, loss_normalised, theta_from_coefficients
from engine.fit.objective import FitData, make_fit_data, mean_huber, scaled_objective_derivatives
from engine.fit.result import FitSettings

T5 = Path(__file__).resolve().parents[1] / "experiments" / "data" / "t5_c4_paper.csv"
# Where the earlier solver (JAX autodiff, jit + vmap) ended on T5 (seed 0, 25 starts, no held-out rows).
EARLIER_T5_MINIMUM = LawCoefficients(
    a_S=10.710823973853813, b_S=1.344968384547474, c_S=41.62083206239213, b_N=0.23168278010708815,
    a_D=676907960.2193671, b_D=0.3846382098777719, c=0.8303747496134823,
)
EARLIER_T5_OBJECTIVE = 4.880116594656039e-06


def _t5_data() -> tuple[FitData, np.ndarray, Normalisation]:
    table = read_table(T5)
    norm = Normalisation.for_data(table.nonzeros, table.data)
    return make_fit_data(table.sparsity, table.nonzeros, table.data, table.loss, norm), table.loss, norm


def _jax_objective(theta: jnp.ndarray, data: FitData, weights: jnp.ndarray, delta: float, log_loss: bool) -> jnp.ndarray:
    """sum(w huber) / delta^2 written from eq. 3 directly, for autodiff."""
    a_s, b_s, c_s, b_n, a_d, b_d, c = (jnp.exp(theta[i]) for i in range(7))
    density, n, d = jnp.exp(data.log_density), jnp.exp(data.log_n), jnp.exp(data.log_d)
    loss = (a_s * density**b_s + c_s) * n**-b_n + (a_d / d) ** b_d + c
    residual = jnp.log(loss) - jnp.log(data.loss) if log_loss else loss - data.loss
    size = jnp.abs(residual)
    return jnp.sum(weights * jnp.where(size <= delta, 0.5 * residual**2, delta * (size - 0.5 * delta))) / delta**2


@pytest.mark.parametrize("log_loss", [True, False])
@pytest.mark.parametrize("delta", [1e-3, 0.1])
def test_derivatives_match_jax_autodiff(log_loss: bool, delta: float) -> None:
    data, loss, norm = _t5_data()
    rng = np.random.default_rng(0)
    near_minimum = theta_from_coefficients(EARLIER_T5_MINIMUM, norm) + rng.normal(0.0, 1e-2, (4, 7))
    thetas = np.concatenate([multistart.random_starts(rng, 12, loss), near_minimum])
    weights = rng.integers(0, 3, (16, len(loss))).astype(np.float64)  # bootstrap-like multiplicities
    ours = scaled_objective_derivatives(thetas, data, weights, delta, log_loss)
    with jax.enable_x64(True):
        def objective(theta, w):
            return _jax_objective(theta, data, w, delta, log_loss)

        value = jax.vmap(objective)(thetas, weights)
        gradient = jax.vmap(jax.grad(objective))(thetas, weights)
        hessian = jax.vmap(jax.hessian(objective))(thetas, weights)
    for mine, theirs in ((ours.value, value), (ours.gradient, gradient), (ours.hessian, hessian)):
        theirs = np.asarray(theirs)
        assert np.max(np.abs(mine - theirs)) <= 1e-12 * np.max(np.abs(theirs))
    # Residuals in the Huber's quadratic part and in its linear part were both exercised.
    predictions = loss_normalised(thetas, data.log_density, data.log_n, data.log_d)
    residuals = np.log(predictions / loss) if log_loss else predictions - loss
    assert 0.0 < np.mean(np.abs(residuals) <= delta) < 1.0
    np.testing.assert_allclose(
        mean_huber(thetas, data, weights, delta, log_loss), ours.value * delta**2 / weights.sum(axis=1), rtol=1e-13
    )


def test_absurd_parameters_give_an_infinite_objective_not_an_error() -> None:
    data, loss, _ = _t5_data()
    thetas = np.zeros((2, 7))
    thetas[1, 6] = 800.0  # c = e^800 overflows
    derivatives = scaled_objective_derivatives(thetas, data, np.ones((2, len(loss))), 1e-3, True)
    assert np.isfinite(derivatives.value[0]) and not np.isfinite(derivatives.value[1])


def test_newton_steps_reject_indefinite_matrices_and_cap_the_length() -> None:
    hessian = np.stack([np.diag([2.0, 4.0]), np.diag([1.0, -1.0]), np.diag([1e-6, 1e-6])])
    gradient = np.array([[2.0, 4.0], [1.0, 1.0], [1.0, 0.0]])
    np.testing.assert_array_equal(newton.positive_definite(hessian), [True, False, True])
    with pytest.MonkeyPatch.context() as patch:  # numpy's public route gives the same answer
        patch.setattr(newton, "_cholesky_kernel", None)
        np.testing.assert_array_equal(newton.positive_definite(hessian), [True, False, True])
        np.testing.assert_array_equal(newton.positive_definite(hessian[[0, 2]]), [True, True])
    steps = newton.damped_newton_steps(hessian, gradient, np.zeros(3))
    np.testing.assert_allclose(steps[0], [-1.0, -1.0], rtol=1e-15)  # the plain Newton step
    assert np.isnan(steps[1]).all()
    np.testing.assert_allclose(steps[2], [-newton.MAX_STEP, 0.0], rtol=1e-15)
    # Enough damping makes the indefinite matrix definite: a short step along -g.
    damped = newton.damped_newton_steps(hessian[1:2], gradient[1:2], np.array([10.0]))
    assert np.isfinite(damped).all() and damped @ gradient[1] < 0


def test_newton_minimises_a_batch_of_quadratics_independently() -> None:
    centres = np.array([[1.0, -2.0], [0.5, 0.5], [3.0, 0.0]])
    curvature = np.array([1.0, 100.0, 0.01])

    def derivatives_at(x: np.ndarray, rows: np.ndarray, stages: np.ndarray):
        from engine.fit.objective import Derivatives

        offset = x - centres[rows]
        c = curvature[rows]
        return Derivatives(
            value=0.5 * c * np.sum(offset**2, axis=1), gradient=c[:, None] * offset,
            hessian=c[:, None, None] * np.eye(2)[None],
        )

    result = newton.minimise_damped_newton(derivatives_at, np.zeros((3, 2)), max_steps=100, gtol=1e-12)
    np.testing.assert_allclose(result.x, centres, atol=1e-10)
    assert (result.steps < 20).all()


def test_t5_fit_reaches_the_earlier_solvers_minimum() -> None:
    """The same objective to rounding, and the same coefficients."""
    fit = fit_law(read_table(T5), FitSettings(**paper.T5_HUBER, starts=25, bootstrap=0, holdout="none", seed=0))
    assert fit.objective == pytest.approx(EARLIER_T5_OBJECTIVE, rel=1e-12)
    for name, value in EARLIER_T5_MINIMUM.as_dict().items():
        assert getattr(fit.coefficients, name) == pytest.approx(value, rel=1e-9), name
    assert fit.diagnostics.agreeing_starts == 25
    assert fit.diagnostics.best_gradient_norm < 1e-8
