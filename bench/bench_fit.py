"""Fitting benchmark: the reference notebook's procedure vs `engine fit`, side by side, one process.

Reference (docs/science.md): scipy BFGS with default tolerances and numerical (finite
difference) gradients, minimising the *mean* Huber loss (delta 1e-3 on log L) in the notebook's
normalisation (N / 1e6, D / 1e5 steps), from 25 uniform random starts in [0, 1]^7.
Ours: `fit_law` with 25 starts (bootstrap and held-out check off, so the same work): cold, in a new
Python process with an empty cache directory (XDG_CACHE_HOME pointed at a fresh one), as a user's
first `engine fit` on a machine sees it (the solver is numpy: nothing is compiled or cached), and
warm, in this process. Imports are outside the timings, as for the reference. Then a 1,000-resample
bootstrap. Data: the paper's T5 sweep, ../shared/data/t5-data.csv next to the repository when
present (its raw columns sparsity, scale, val-loss, steps), else the canonical copy
experiments/data/t5_c4_paper.csv.

    Run as part of the whole benchmark: .venv/bin/python -m bench (bench/run.py).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from engine.fit import paper
from engine.fit.bootstrap import run_bootstrap
from engine.fit.fitting import fit_law
from engine.fit.io import ResultsTable, read_table
from engine.fit.law import Normalisation, theta_from_coefficients
from engine.fit.objective import make_fit_data
from engine.fit.result import FitSettings

REPO = Path(__file__).resolve().parents[1]
SHARED_T5 = REPO.parent / "shared" / "data" / "t5-data.csv"
CANONICAL_T5 = REPO / "experiments" / "data" / "t5_c4_paper.csv"
DELTA = 1e-3


def t5_table() -> tuple[ResultsTable, str]:
    """The paper's T5 sweep and where it came from."""
    if SHARED_T5.is_file():
        with tempfile.TemporaryDirectory() as directory:
            canonical = Path(directory) / "t5.csv"
            paper.write_canonical_csv(paper.canonical_t5_rows(SHARED_T5), canonical)
            return read_table(canonical), "../shared/data/t5-data.csv"
    return read_table(CANONICAL_T5), "experiments/data/t5_c4_paper.csv"


def reference_fit(
    sparsity: np.ndarray, nonzeros: np.ndarray, steps: np.ndarray, loss: np.ndarray, seed: int,
    starts: int = 25,
) -> tuple[float, float]:
    """The notebook's procedure; returns the best and worst mean Huber of its starts."""
    n, d, log_loss = nonzeros / 1e6, steps / 1e5, np.log(loss)

    def mean_huber(p: np.ndarray) -> float:
        a_s, b_s, c_s, b_n, a_d, b_d, c = p
        residual = np.log((a_s * (1 - sparsity) ** b_s + c_s) * n ** (-b_n) + (a_d / d) ** b_d + c) - log_loss
        size = np.abs(residual)
        return float(np.mean(np.where(size <= DELTA, 0.5 * residual**2, DELTA * (size - 0.5 * DELTA))))

    rng = np.random.default_rng(seed)
    ends = []
    with np.errstate(all="ignore"):
        for _ in range(starts):
            result = minimize(mean_huber, rng.uniform(0.0, 1.0, 7), method="BFGS")
            if np.isfinite(result.fun):
                ends.append(result.fun)
    return min(ends), max(ends)


@dataclass(frozen=True)
class FitBench:
    data: str
    starts: int
    reference_s: float
    reference_best: float
    reference_worst: float
    cold_s: float  # a new process, empty cache directory
    warm_s: float
    objective: float
    agreeing_starts: int
    gradient_norm: float
    bootstrap_resamples: int
    bootstrap_first_s: float
    bootstrap_second_s: float
    bootstrap_unconverged: int


def _timed_fit(table: ResultsTable, settings: FitSettings):
    started = time.perf_counter()
    fit = fit_law(table, settings)
    return time.perf_counter() - started, fit


_FRESH_PROCESS_FIT = """
import time
from bench.bench_fit import t5_table, paper, fit_law, FitSettings
table, _ = t5_table()
settings = FitSettings(**paper.T5_HUBER, starts={starts}, bootstrap=0, holdout="none", seed=0)
started = time.perf_counter()
fit_law(table, settings)
print(time.perf_counter() - started)
"""


def fresh_process_fit_seconds(cache_home: Path, starts: int) -> float:
    """fit_law's time in a new Python process whose persistent caches live under `cache_home`."""
    environment = {**os.environ, "XDG_CACHE_HOME": str(cache_home), "PYTHONPATH": str(REPO)}
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    completed = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS_FIT.format(starts=starts)], env=environment, cwd=REPO,
        capture_output=True, text=True, check=True,
    )
    return float(completed.stdout.split()[-1])


def measure_fit(repeats: int, starts: int = 25, resamples: int = 1000) -> FitBench:
    table, source = t5_table()
    steps = table.numeric_column("steps")
    settings = FitSettings(**paper.T5_HUBER, starts=starts, bootstrap=0, holdout="none", seed=0)
    with_seed = lambda seed: FitSettings(**{**settings.__dict__, "seed": seed})  # noqa: E731

    with tempfile.TemporaryDirectory() as cache_home:
        cold_s = fresh_process_fit_seconds(Path(cache_home), starts)
    _, cold_fit = _timed_fit(table, settings)
    warm, reference, best, worst = [], [], [], []
    for repeat in range(repeats):  # alternate the two procedures (shared machine)
        warm.append(_timed_fit(table, with_seed(repeat + 1))[0])
        started = time.perf_counter()
        low, high = reference_fit(table.sparsity, table.nonzeros, steps, table.loss, seed=repeat, starts=starts)
        reference.append(time.perf_counter() - started)
        best.append(low)
        worst.append(high)

    norm = Normalisation.for_data(table.nonzeros, table.data)
    best_theta = theta_from_coefficients(cold_fit.coefficients, norm)
    boot_seconds = []
    data = make_fit_data(table.sparsity, table.nonzeros, table.data, table.loss, norm)
    for repeat in range(2):
        boot = run_bootstrap(best_theta, data, np.ones(len(table), bool), norm, DELTA, True,
                             np.ones(7), resamples, np.random.default_rng(repeat))
        boot_seconds.append(boot.seconds)
    diagnostics = cold_fit.diagnostics
    return FitBench(
        data=source, starts=starts, reference_s=statistics.median(reference),
        reference_best=min(best), reference_worst=max(worst), cold_s=cold_s,
        warm_s=statistics.median(warm), objective=cold_fit.objective,
        agreeing_starts=diagnostics.agreeing_starts, gradient_norm=diagnostics.best_gradient_norm,
        bootstrap_resamples=resamples, bootstrap_first_s=boot_seconds[0],
        bootstrap_second_s=boot_seconds[1], bootstrap_unconverged=int((~boot.converged).sum()),
    )
