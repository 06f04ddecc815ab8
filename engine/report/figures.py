"""The report's figures (matplotlib, Agg backend), each a function returning PNG bytes.

Figure numbers refer to the paper: 1 (left) predicted vs measured, 2 loss - c vs N per training
length, 3 loss vs D per sparsity with the law's curves, 4 optimal-sparsity contours with the
Chinchilla line; plus residuals and convergence diagnostics.
"""

from __future__ import annotations

import io

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm  # noqa: E402

from engine.planning.costs import DENSE_COST_ALPHA, pruning_cost_alpha  # noqa: E402
from engine.fit.io import ResultsTable  # noqa: E402
from engine.fit.law import LawCoefficients, predict_loss  # noqa: E402
from engine.fit.result import FitResult  # noqa: E402
from engine.fit.sopt import chinchilla_nonzeros, optimal_sparsity  # noqa: E402

SPARSITY_COLOURS = ("#1b1b1b", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _sparsity_colour(levels: np.ndarray, sparsity: float) -> str:
    return SPARSITY_COLOURS[int(np.searchsorted(levels, sparsity)) % len(SPARSITY_COLOURS)]


def predicted_vs_measured(table: ResultsTable, fit: FitResult) -> bytes:
    """Figure 1 (left): each run's measured loss against the law's prediction."""
    figure, axis = plt.subplots(figsize=(5.2, 4.8))
    predicted = predict_loss(fit.coefficients, table.sparsity, table.nonzeros, table.data)
    levels = np.unique(table.sparsity)
    held = np.zeros(len(table), bool)
    if fit.holdout is not None:
        held[fit.holdout.rows] = True
        held_predicted = np.asarray(fit.holdout.predicted)
    for s in levels:
        rows = (table.sparsity == s) & ~held
        axis.scatter(table.loss[rows], predicted[rows], s=22, color=_sparsity_colour(levels, s), label=f"S = {s:g}")
    if held.any():
        axis.scatter(table.loss[held], held_predicted, s=60, facecolors="none", edgecolors="crimson",
                     linewidths=1.5, label="held out (fit without them)")
    low, high = float(min(table.loss.min(), predicted.min())), float(max(table.loss.max(), predicted.max()))
    axis.plot([low, high], [low, high], color="grey", lw=1, ls="--", zorder=0)
    axis.set_xlabel("measured loss")
    axis.set_ylabel("predicted loss")
    axis.set_title("Predicted vs measured")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return _png(figure)


def loss_minus_c_vs_nonzeros(table: ResultsTable, fit: FitResult) -> bytes:
    """Figure 2: loss - c against N (log-log), one panel per training length, a line per sparsity."""
    law = fit.coefficients
    lengths = np.unique(table.data)
    levels = np.unique(table.sparsity)
    columns = min(len(lengths), 4)
    rows_of_panels = int(np.ceil(len(lengths) / columns))
    figure, axes = plt.subplots(rows_of_panels, columns, figsize=(4.2 * columns, 3.6 * rows_of_panels),
                                sharey=True, squeeze=False)
    n_grid = np.geomspace(table.nonzeros.min() / 1.5, table.nonzeros.max() * 1.5, 100)
    for panel, d in zip(axes.flat, lengths, strict=False):
        for s in levels:
            rows = (table.data == d) & (table.sparsity == s)
            colour = _sparsity_colour(levels, s)
            panel.scatter(table.nonzeros[rows], table.loss[rows] - law.c, s=18, color=colour)
            panel.plot(n_grid, predict_loss(law, s, n_grid, d) - law.c, color=colour, lw=1.2, label=f"S = {s:g}")
        panel.set_xscale("log")
        panel.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide on short ranges
        panel.set_yscale("log")
        panel.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2g"))
        panel.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.2g"))
        panel.set_title(f"D = {d:.3g}", fontsize=10)
        panel.set_xlabel("non-zeros N")
        panel.grid(alpha=0.3, which="both")
    for panel in axes.flat[len(lengths):]:
        panel.set_visible(False)
    axes[0, 0].set_ylabel(f"loss - c  (c = {law.c:.3g})")
    axes[0, 0].legend(fontsize=8)
    figure.suptitle("Loss minus c vs non-zeros, per training length (points: runs; lines: law)")
    return _png(figure)


def loss_vs_data(table: ResultsTable, fit: FitResult) -> bytes:
    """Figure 3: loss against D, one panel per sparsity, points and law curves per size."""
    law = fit.coefficients
    levels = np.unique(table.sparsity)
    sizes = np.unique(table.nonzeros)
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(sizes)))
    columns = min(len(levels), 4)
    rows_of_panels = int(np.ceil(len(levels) / columns))
    figure, axes = plt.subplots(rows_of_panels, columns, figsize=(4.2 * columns, 3.6 * rows_of_panels),
                                sharey=True, squeeze=False)
    d_grid = np.geomspace(table.data.min() / 1.5, table.data.max() * 1.5, 100)
    for panel, s in zip(axes.flat, levels, strict=False):
        for colour, n in zip(colours, sizes, strict=True):
            rows = (table.sparsity == s) & (table.nonzeros == n)
            if not rows.any():
                continue
            panel.scatter(table.data[rows], table.loss[rows], s=18, color=colour)
            panel.plot(d_grid, predict_loss(law, s, n, d_grid), color=colour, lw=1.2, label=f"N = {n:.3g}")
        panel.set_xscale("log")
        panel.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide on short ranges
        panel.set_title(f"sparsity {s:g}", fontsize=10)
        panel.set_xlabel("data D")
        panel.grid(alpha=0.3, which="both")
    for panel in axes.flat[len(levels):]:
        panel.set_visible(False)
    axes[0, 0].set_ylabel("loss")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if len(labels) <= 8:
        axes[0, 0].legend(fontsize=7)
    figure.suptitle("Loss vs data per sparsity: one joint law (lines) for all panels")
    return _png(figure)


def optimal_sparsity_contours(law: LawCoefficients, table: ResultsTable | None, k: float) -> bytes:
    """Figure 4: S_opt over (N, C) for dense and sparse costs, with the Chinchilla line."""
    if table is not None:
        n_low, n_high = table.nonzeros.min() / 10, table.nonzeros.max() * 100
        c_mid = k * table.nonzeros * table.data
        c_low, c_high = c_mid.min() / 100, c_mid.max() * 1e4
    else:
        n_low, n_high, c_low, c_high = 1e6, 1e10, 1e16, 1e24
    n_grid = np.geomspace(n_low, n_high, 160)
    c_grid = np.geomspace(c_low, c_high, 160)
    n_mesh, c_mesh = np.meshgrid(n_grid, c_grid)
    levels = [0.0, 0.25, 0.5, 0.75, 0.875, 0.9375, 1.0]
    colour_norm = BoundaryNorm(levels, plt.cm.magma_r.N)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for axis, (title, alpha) in zip(axes, (("dense costs", DENSE_COST_ALPHA), ("sparse costs (eq. 4)", pruning_cost_alpha())), strict=True):
        s_opt = optimal_sparsity(law, n_mesh, c_mesh, k, alpha)
        filled = axis.contourf(n_mesh, c_mesh, s_opt, levels=levels, cmap="magma_r", norm=colour_norm)
        axis.contour(n_mesh, c_mesh, s_opt, levels=levels[1:-1], colors="white", linewidths=0.6)
        n_star = chinchilla_nonzeros(law, c_grid, k)
        inside = (n_star >= n_low) & (n_star <= n_high)
        axis.plot(n_star[inside], c_grid[inside], color="cyan", lw=2, ls="--", label="Chinchilla N*(C) at S=0")
        if table is not None:
            axis.scatter(table.nonzeros, k * table.nonzeros * table.data, s=8, color="black", label="runs (dense-equivalent C)")
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide on short ranges
        axis.set_yscale("log")
        axis.set_xlim(n_low, n_high)
        axis.set_ylim(c_low, c_high)
        axis.set_xlabel("non-zeros N")
        axis.set_title(f"optimal sparsity, {title}")
        axis.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel(f"training compute C (FLOPs, {k:g} N D c_mul)")
    bar = figure.colorbar(filled, ax=axes, ticks=levels)
    bar.set_label("S_opt")
    return _png(figure)


def residuals(table: ResultsTable, fit: FitResult) -> bytes:
    """Relative residuals (prediction / measured - 1) against N, by sparsity and training length."""
    predicted = predict_loss(fit.coefficients, table.sparsity, table.nonzeros, table.data)
    relative = predicted / table.loss - 1.0
    levels = np.unique(table.sparsity)
    lengths = np.unique(table.data)
    markers = "os^Dvp*h"
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    for s in levels:
        for j, d in enumerate(lengths):
            rows = (table.sparsity == s) & (table.data == d)
            axis.scatter(table.nonzeros[rows], 100 * relative[rows], s=20, color=_sparsity_colour(levels, s),
                         marker=markers[j % len(markers)], label=f"S={s:g}" if j == 0 else None)
    axis.axhline(0.0, color="grey", lw=1)
    axis.set_xscale("log")
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide on short ranges
    axis.set_xlabel("non-zeros N  (marker: training length, smallest D = circle)")
    axis.set_ylabel("prediction error (%)")
    axis.set_title("Residuals of the fit")
    axis.legend(fontsize=7, ncol=2)
    axis.grid(alpha=0.3)
    return _png(figure)


def convergence(fit: FitResult) -> bytes:
    """End objective of every start (sorted) and the bootstrap's gain distributions."""
    has_bootstrap = fit.bootstrap_samples is not None
    figure, axes = plt.subplots(1, 2 if has_bootstrap else 1, figsize=(11 if has_bootstrap else 5.5, 3.8), squeeze=False)
    axis = axes[0, 0]
    ends = np.sort([start.objective for start in fit.diagnostics.starts])
    # Relative excess over the best end point; rounding-level differences are drawn at the floor.
    floor = 1e-16
    excess = np.maximum(np.where(np.isfinite(ends), ends / fit.objective - 1.0, 1e3), floor)
    axis.plot(np.arange(1, len(ends) + 1), excess, "o", ms=4, color="#1f77b4")
    axis.axhline(1e-9, color="crimson", lw=1, ls="--", label="agreement tolerance (1e-9)")
    axis.set_yscale("log")
    axis.set_ylim(floor / 3, max(1e-6, float(excess.max()) * 3))
    axis.set_xlabel("start (sorted by end objective)")
    axis.set_ylabel("end objective / best - 1")
    axis.set_title(f"{fit.diagnostics.agreeing_starts}/{fit.diagnostics.total_starts} starts agree "
                   f"(best mean Huber {fit.objective:.4g}); {fit.diagnostics.verdict}", fontsize=9)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, which="both")
    if has_bootstrap:
        from engine.fit.gains import gains_from_samples

        axis = axes[0, 1]
        for s, colour in zip(fit.gains, ("#1f77b4", "#ff7f0e", "#2ca02c"), strict=False):
            values = gains_from_samples(fit.bootstrap_samples, s)
            values = values[np.isfinite(values)]
            axis.hist(values, bins=40, alpha=0.55, color=colour, label=f"S = {s:g}")
            axis.axvline(fit.gains[s], color=colour, lw=1.5)
        axis.set_xlabel("gain (eq. 7)")
        axis.set_ylabel("bootstrap resamples")
        axis.set_title(f"Bootstrap distribution of the gains ({fit.bootstrap_samples.shape[0]} resamples)", fontsize=9)
        axis.legend(fontsize=8)
    return _png(figure)
