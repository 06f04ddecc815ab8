"""`fit_law`: the whole fit of a results table (multi-start, diagnostics, held-out check, bootstrap).

    from engine.fit import fit_law, FitSettings, read_table
    table = read_table(Path("runs/vit_sweep/results.csv"))
    result = fit_law(table, FitSettings(huber_delta=1e-3, log_loss=True))
    result.write(Path("runs/vit_sweep/report/fit.json"))
"""

from __future__ import annotations

import datetime as _dt
import platform
from dataclasses import replace
from importlib.metadata import version

import numpy as np

import engine
from engine.errors import UserError
from engine.fit.bootstrap import run_bootstrap
from engine.fit.gains import gain
from engine.fit.io import ResultsTable
from engine.fit.law import (
    COEFFICIENT_NAMES,
    DENSE_COEFFICIENTS,
    LawCoefficients,
    Normalisation,
    coefficients_from_theta,
    loss_normalised,
    predict_loss,
    theta_from_coefficients,
)
from engine.fit.multistart import BatchSolution, random_starts, solve_batch
from engine.fit.objective import FitData, make_fit_data, mean_huber, scaled_objective_derivatives
from engine.fit.result import Diagnostics, FitResult, FitSettings, FittedRanges, HoldoutCheck, StartRecord
from engine.fit.selection import holdout_mask

# Starts agree with the best when their objective is within this relative distance and either
# their log-coefficients within AGREEMENT_THETA (a 1e-4 relative change of every coefficient) or
# their predictions for every fitted run within AGREEMENT_PREDICTION: the same fitted law, with a
# coefficient the data cannot pin down (say c -> 0, or a_S and c_S traded off) ended elsewhere along
# its flat direction. The report names such coefficients separately.
AGREEMENT_OBJECTIVE = 1e-9
AGREEMENT_THETA = 1e-4
AGREEMENT_PREDICTION = 1e-6
CONVERGED_GRADIENT = 1e-5  # on sum(Huber)/delta^2, whose value is of order (number of runs)


def _free_mask(settings: FitSettings) -> np.ndarray:
    free = settings.free_coefficients()
    return np.array([1.0 if name in free else 0.0 for name in COEFFICIENT_NAMES])


def _starts(settings: FitSettings, table: ResultsTable, norm: Normalisation, rng: np.random.Generator) -> np.ndarray:
    starts = random_starts(rng, settings.starts, table.loss)
    if settings.freeze_dense is not None:
        frozen = theta_from_coefficients(settings.freeze_dense, norm)
        for index, name in enumerate(COEFFICIENT_NAMES):
            if name in DENSE_COEFFICIENTS:
                starts[:, index] = frozen[index]
    return starts


def _multistart(
    starts: np.ndarray, weights: np.ndarray, data: FitData, settings: FitSettings, free: np.ndarray
) -> BatchSolution:
    return solve_batch(
        starts, np.repeat(weights[None, :], starts.shape[0], axis=0), data,
        settings.huber_delta, settings.log_loss, free=free,
    )


def _same_predictions(thetas: np.ndarray, best: int, data: FitData, weights: np.ndarray) -> np.ndarray:
    """(K,) whether each row's law predicts every fitted run within AGREEMENT_PREDICTION (relative)
    of the best row's."""
    with np.errstate(over="ignore", invalid="ignore"):
        predictions = loss_normalised(thetas, data.log_density, data.log_n, data.log_d)
        gaps = np.abs(predictions - predictions[best]) / np.abs(predictions[best])
        return np.max(np.where(weights > 0, gaps, 0.0), axis=1) <= AGREEMENT_PREDICTION


def _most_stationary(agrees: np.ndarray, gradient_norms: np.ndarray, lowest: int) -> int:
    """The best point: of the starts that reached the lowest objective, the one nearest stationarity.
    The lowest objective alone can pick a start that stopped short by a rounding-level margin (seen:
    gradient 4e-5 where the other 31 of 32 starts, at the same objective to 1e-15, reached 1e-10)."""
    if not agrees.any():
        return lowest
    candidates = np.flatnonzero(agrees)
    norms = np.where(np.isfinite(gradient_norms[candidates]), gradient_norms[candidates], np.inf)
    return int(candidates[np.argmin(norms)])


def _diagnose(
    solution: BatchSolution, data: FitData, weights: np.ndarray, settings: FitSettings, free: np.ndarray
) -> tuple[int, Diagnostics]:
    objectives = np.where(np.isfinite(solution.mean_huber), solution.mean_huber, np.inf)
    lowest = int(np.argmin(objectives))
    # Relative agreement, with an absolute floor at rounding level (a perfect fit has objective ~0).
    floor = 1e-14 * settings.huber_delta**2
    close_objective = np.abs(objectives - objectives[lowest]) <= AGREEMENT_OBJECTIVE * objectives[lowest] + floor
    close_theta = np.max(np.abs(solution.theta - solution.theta[lowest]) * free, axis=1) <= AGREEMENT_THETA
    agrees = close_objective & (close_theta | _same_predictions(solution.theta, lowest, data, weights))
    best = _most_stationary(agrees, solution.gradient_norm, lowest)
    # Distinct end points: objective values more than 1e-6 relative apart.
    distinct: list[float] = []
    for value in np.sort(objectives[np.isfinite(objectives)]):
        if not distinct or value > distinct[-1] * (1 + 1e-6) + floor:
            distinct.append(float(value))

    free_index = np.flatnonzero(free)
    hessian = scaled_objective_derivatives(
        solution.theta[best][None, :], data, np.asarray(weights, np.float64)[None, :], settings.huber_delta,
        settings.log_loss,
    ).hessian[0][np.ix_(free_index, free_index)]
    curvature_finite = bool(np.all(np.isfinite(hessian)))
    if curvature_finite:
        eigenvalues, eigenvectors = np.linalg.eigh(hessian)
        flattest = {COEFFICIENT_NAMES[i]: float(eigenvectors[j, 0]) for j, i in enumerate(free_index)}
    else:  # extreme tables (a D of 5e-324) overflow it: no eigen-analysis, and the verdict says why
        eigenvalues, flattest = np.array([]), {}

    gradient_norm = float(solution.gradient_norm[best])
    agreeing = int(agrees.sum())
    if not np.isfinite(objectives[best]):
        verdict = "not converged: no start reached a finite objective"
    elif agreeing < 2 and settings.starts > 1:
        verdict = f"not converged: the best point was reached by only {agreeing} of {settings.starts} starts"
    elif not curvature_finite:
        verdict = "not converged: the objective's curvature is not finite at the best point"
    elif gradient_norm > CONVERGED_GRADIENT:
        verdict = f"not converged: gradient norm {gradient_norm:.2e} at the best point"
    else:
        verdict = "converged"
    records = [
        StartRecord(objective=float(o), gradient_norm=float(g), steps=int(s), agrees_with_best=bool(a))
        for o, g, s, a in zip(solution.mean_huber, solution.gradient_norm, solution.steps, agrees, strict=True)
    ]
    return best, Diagnostics(
        verdict=verdict, best_gradient_norm=gradient_norm, agreeing_starts=agreeing,
        total_starts=settings.starts, distinct_minima=distinct[:10],
        hessian_eigenvalues=[float(v) for v in eigenvalues], flattest_direction=flattest, starts=records,
    )


def _provenance(table: ResultsTable, settings: FitSettings) -> dict[str, object]:
    return {
        "data_source": table.source,
        "data_sha256": table.sha256,
        "rows": len(table),
        "settings": settings.to_json(),
        "seed": settings.seed,
        "engine_version": engine.__version__,
        "jax_version": version("jax"),  # read, not imported: the fit does not use JAX (0.5 s to import)
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "method": "damped Newton (exact analytic Hessian), Huber-delta continuation, batched over "
                  "starts; float64; coefficients optimised as logs (always positive)",
    }


def check_enough_rows(rows: int, settings: FitSettings, what: str = "the fit") -> None:
    free = len(settings.free_coefficients())
    if rows <= free:
        raise UserError(
            f"too few runs for {what}: {rows} from-scratch row(s) for {free} free coefficients "
            f"(need at least {free + 1})"
        )


def fit_law(table: ResultsTable, settings: FitSettings | None = None) -> FitResult:
    """Fit eq. 3 to the table's from-scratch runs; see module docstring. Raises UserError on bad
    settings or too little data. Without settings: FitSettings() (the spec's defaults)."""
    settings = settings or FitSettings()
    if settings.huber_delta <= 0:
        raise UserError(f"--huber-delta must be positive, got {settings.huber_delta}", exit_code=2)
    if settings.starts < 1:
        raise UserError(f"--starts must be at least 1, got {settings.starts}", exit_code=2)
    if settings.bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0, got {settings.bootstrap}", exit_code=2)
    fit_rows = table.from_scratch_mask()
    check_enough_rows(int(fit_rows.sum()), settings)
    dense_only = bool(np.all(table.sparsity[fit_rows] == 0.0))  # sparsity's terms are not estimable
    held_out = holdout_mask(table, settings.holdout) & fit_rows
    rng = np.random.default_rng(settings.seed)
    norm = Normalisation.for_data(table.nonzeros[fit_rows], table.data[fit_rows])
    free = _free_mask(settings)

    data = make_fit_data(table.sparsity, table.nonzeros, table.data, table.loss, norm)
    weights = fit_rows.astype(np.float64)
    starts = _starts(settings, table, norm, rng)
    solution = _multistart(starts, weights, data, settings, free)
    best, diagnostics = _diagnose(solution, data, weights, settings, free)
    best_theta = solution.theta[best]
    coefficients = coefficients_from_theta(best_theta, norm)

    holdout = None
    remaining = int((fit_rows & ~held_out).sum())
    if held_out.any() and remaining > len(settings.free_coefficients()) and remaining < fit_rows.sum():
        holdout_weights = (fit_rows & ~held_out).astype(np.float64)
        held_solution = _multistart(starts, holdout_weights, data, settings, free)
        held_best = int(np.nanargmin(np.where(np.isfinite(held_solution.mean_huber), held_solution.mean_huber, np.inf)))
        held_coefficients = coefficients_from_theta(held_solution.theta[held_best], norm)
        rows = np.flatnonzero(held_out)
        holdout = HoldoutCheck(
            expression=settings.holdout, rows=[int(r) for r in rows], coefficients=held_coefficients,
            objective=float(held_solution.mean_huber[held_best]),
            predicted=[float(v) for v in predict_loss(
                held_coefficients, table.sparsity[rows], table.nonzeros[rows], table.data[rows])],
            measured=[float(v) for v in table.loss[rows]],
        )

    samples = None
    seconds = None
    if settings.bootstrap > 0:
        boot = run_bootstrap(
            best_theta, data, fit_rows, norm, settings.huber_delta, settings.log_loss, free,
            settings.bootstrap, rng,
        )
        samples, seconds = boot.samples, boot.seconds
        diagnostics = replace(diagnostics, bootstrap_unconverged=int((~boot.converged).sum()))

    return FitResult(
        coefficients=coefficients,
        objective=float(solution.mean_huber[best]),
        settings=settings,
        normalisation=norm,
        diagnostics=diagnostics,
        rows_used=int(fit_rows.sum()),
        fit_mask=[bool(v) for v in fit_rows],
        gains=None if dense_only else {s: float(gain(coefficients, s)) for s in settings.gain_sparsities},
        provenance=_provenance(table, settings),
        bootstrap_samples=samples,
        bootstrap_seconds=seconds,
        holdout=holdout,
        fitted_ranges=FittedRanges.of(table.select(fit_rows)),
    )


def objective_at(table: ResultsTable, coefficients: LawCoefficients, settings: FitSettings) -> tuple[float, float]:
    """(mean Huber, gradient norm of the scaled objective) of given coefficients on a table: how the
    report shows that published coefficients are not at this objective's minimum."""
    fit_rows = table.from_scratch_mask()
    norm = Normalisation.for_data(table.nonzeros[fit_rows], table.data[fit_rows])
    data = make_fit_data(table.sparsity, table.nonzeros, table.data, table.loss, norm)
    theta = theta_from_coefficients(coefficients, norm)[None, :]
    weights = fit_rows.astype(np.float64)[None, :]
    value = float(mean_huber(theta, data, weights, settings.huber_delta, settings.log_loss)[0])
    gradient = scaled_objective_derivatives(theta, data, weights, settings.huber_delta, settings.log_loss).gradient[0]
    return value, float(np.linalg.norm(gradient * _free_mask(settings)))
