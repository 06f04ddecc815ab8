"""Fitting benchmark: the reference notebook's procedure vs `engine fit`, side by side, one process.

Reference (DESIGN.md section 4): scipy BFGS with default tolerances and numerical (finite
difference) gradients, minimising the *mean* Huber loss (delta 1e-3 on log L) in the notebook's
normalisation (N / 1e6, D / 1e5 steps), from 25 uniform random starts in [0, 1]^7.
Ours: `fit_law` with 25 starts (bootstrap and held-out check off, so the same work), cold (first
call in the process: tracing + XLA compilation included) and warm; then a 1,000-resample bootstrap.
"Cold" is a first-ever run only if JAX's persistent compilation cache is empty (the engine turns the
cache on, engine/fit/compile_cache.py): run with ENGINE_NO_COMPILE_CACHE=1 for the no-cache number;
a second invocation measures the cold start of every later `engine fit`.

    .venv/bin/python bench/bench_fit.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from engine.fit import paper
from engine.fit.bootstrap import run_bootstrap
from engine.fit.fitting import fit_law
from engine.fit.io import read_results
from engine.fit.law import Normalisation, theta_from_coefficients
from engine.fit.objective import make_fit_data
from engine.fit.result import FitSettings

T5 = Path(__file__).resolve().parents[1] / "experiments" / "data" / "t5_c4_paper.csv"
DELTA = 1e-3


def reference_fit(sparsity: np.ndarray, nonzeros: np.ndarray, steps: np.ndarray, loss: np.ndarray, seed: int) -> float:
    """The notebook's procedure; returns the best mean Huber of its 25 starts."""
    n, d, log_loss = nonzeros / 1e6, steps / 1e5, np.log(loss)

    def mean_huber(p: np.ndarray) -> float:
        a_s, b_s, c_s, b_n, a_d, b_d, c = p
        residual = np.log((a_s * (1 - sparsity) ** b_s + c_s) * n ** (-b_n) + (a_d / d) ** b_d + c) - log_loss
        size = np.abs(residual)
        return float(np.mean(np.where(size <= DELTA, 0.5 * residual**2, DELTA * (size - 0.5 * DELTA))))

    rng = np.random.default_rng(seed)
    ends = []
    with np.errstate(all="ignore"):
        for _ in range(25):
            result = minimize(mean_huber, rng.uniform(0.0, 1.0, 7), method="BFGS")
            if np.isfinite(result.fun):
                ends.append(result.fun)
    return min(ends), max(ends)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    table = read_results(T5)
    steps = table.numeric_column("steps")
    settings = FitSettings(**paper.T5_HUBER, starts=25, bootstrap=0, holdout="none", seed=0)

    started = time.perf_counter()
    cold_fit = fit_law(table, settings)
    ours_cold = time.perf_counter() - started
    warm_times = []
    for repeat in range(args.repeats):
        started = time.perf_counter()
        warm_fit = fit_law(table, FitSettings(**{**settings.__dict__, "seed": repeat + 1}))
        warm_times.append(time.perf_counter() - started)
    ours_warm = statistics.median(warm_times)

    reference_times, reference_best, reference_worst = [], [], []
    for repeat in range(args.repeats):
        started = time.perf_counter()
        best, worst = reference_fit(table.sparsity, table.nonzeros, steps, table.loss, seed=repeat)
        reference_times.append(time.perf_counter() - started)
        reference_best.append(best)
        reference_worst.append(worst)
    reference = statistics.median(reference_times)

    import jax

    fit_rows = np.ones(len(table), bool)
    norm = Normalisation.for_data(table.nonzeros, table.data)
    best_theta = theta_from_coefficients(cold_fit.coefficients, norm)
    bootstrap_times = []
    with jax.enable_x64(True):
        data = make_fit_data(table.sparsity, table.nonzeros, table.data, table.loss, norm)
        for repeat in range(2):
            boot = run_bootstrap(best_theta, data, fit_rows, norm, DELTA, True, np.ones(7), 1000,
                                 np.random.default_rng(repeat))
            bootstrap_times.append(boot.seconds)

    print("| measurement | time (s) | ratio vs reference | objective (mean Huber) |")
    print("|---|---|---|---|")
    print(f"| reference: scipy BFGS, numerical gradients, mean objective, 25 starts (median of {args.repeats}) "
          f"| {reference:.3f} | 1 | best {min(reference_best):.4g}, starts end in [{min(reference_best):.3g}, {max(reference_worst):.3g}] |")
    print(f"| engine fit, 25 starts, cold (trace + compile + solve) | {ours_cold:.3f} | {reference / ours_cold:.2f}x faster "
          f"| {cold_fit.objective:.6g} ({cold_fit.diagnostics.agreeing_starts}/25 agree, gradient {cold_fit.diagnostics.best_gradient_norm:.1e}) |")
    print(f"| engine fit, 25 starts, warm (median of {args.repeats}, new seeds) | {ours_warm:.3f} | {reference / ours_warm:.1f}x faster "
          f"| {warm_fit.objective:.6g} ({warm_fit.diagnostics.agreeing_starts}/25 agree) |")
    print(f"| bootstrap, 1,000 resamples, warm-started: first call (incl. compile) / second | "
          f"{bootstrap_times[0]:.2f} / {bootstrap_times[1]:.2f} | | {int((~boot.converged).sum())} resamples not converged in 300 steps |")
    import os

    cache = "off" if os.environ.get("ENGINE_NO_COMPILE_CACHE") == "1" else "on"
    print(f"persistent compilation cache: {cache}")
    print(f"Table 7 Error: {paper.TABLE_7_ERROR['t5_c4']:.3g}; cores: {jax.local_device_count()} device, "
          f"load-sensitive: ratios are measured in one process, same data.")


if __name__ == "__main__":
    main()
