"""The report's figures (matplotlib, Agg backend), each a function returning PNG bytes.

Figure numbers refer to the paper: 1 (left) predicted vs measured, 2 loss - c vs N per training
length, 3 loss vs D per sparsity with the law's curves, 4 optimal-sparsity contours with the
Chinchilla line; plus residuals and convergence diagnostics.

Any design must give a readable figure of bounded size: small panels per value only while there
are few values (MAX_PANELS); past that one panel with the value as a colour scale (and a colour
bar). Every encoding (colour, marker) has a legend or a colour bar; D's unit is on its axis.
"""

from __future__ import annotations

import io

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, LogNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from engine.fit.io import ResultsTable  # noqa: E402
from engine.fit.isoflop import IsoflopResult  # noqa: E402
from engine.fit.law import LawCoefficients, predict_loss  # noqa: E402
from engine.fit.result import FitResult  # noqa: E402
from engine.fit.sopt import chinchilla_data, chinchilla_multiple, chinchilla_nonzeros, optimal_sparsity  # noqa: E402

SPARSITY_COLOURS = ("#1b1b1b", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
MARKERS = "os^Dvp*hX<>"
MAX_PANELS = 6  # more distinct values than this: one panel, the value as a colour scale
MAX_LEGEND = 8  # more lines than this: a colour bar instead of a legend
DPI = 110


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _sparsity_colour(levels: np.ndarray, sparsity: float) -> str:
    return SPARSITY_COLOURS[int(np.searchsorted(levels, sparsity)) % len(SPARSITY_COLOURS)]


def sparsity_groups(sparsity: np.ndarray) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(group of each run, label per group, representative S per group): each level its own group
    while there are few (a grid), else up to MAX_PANELS quantile bins (a scattered design), so a
    legend or a set of panels never grows with the number of distinct sparsities."""
    levels = np.unique(sparsity)
    if len(levels) <= MAX_LEGEND - 1:
        return np.searchsorted(levels, sparsity), [f"S = {s:g}" for s in levels], levels
    edges = np.unique(np.quantile(sparsity, np.linspace(0, 1, MAX_PANELS + 1)))
    group = np.clip(np.searchsorted(edges, sparsity, side="right") - 1, 0, len(edges) - 2)
    labels = [f"S in [{edges[i]:.3g}, {edges[i + 1]:.3g}{']' if i == len(edges) - 2 else ')'}" for i in range(len(edges) - 1)]
    representative = np.array([np.mean(sparsity[group == i]) if np.any(group == i) else edges[i]
                               for i in range(len(edges) - 1)])
    return group, labels, representative


def _log_axis(axis: plt.Axes, which: str = "x") -> None:
    """A log axis with readable labels: at 1, 2 and 5 per decade when the range spans under two
    decades (matplotlib's default would label nothing there), else at powers of ten only. Call it
    after plotting: it reads the axis's range."""
    target = axis.xaxis if which == "x" else axis.yaxis
    (axis.set_xscale if which == "x" else axis.set_yscale)("log")
    low, high = axis.get_xlim() if which == "x" else axis.get_ylim()
    decades = np.log10(max(high, 1e-300) / max(low, 1e-300))
    subs = (1.0, 2.0, 5.0) if decades < 2 else (1.0,)
    target.set_major_locator(matplotlib.ticker.LogLocator(subs=subs, numticks=12))
    target.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.2g}"))
    target.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _budgets(table: ResultsTable) -> np.ndarray | None:
    """The compute budgets N D of an IsoFLOP design (runs sharing a budget to 1%), or None when the
    runs do not group into a few budgets."""
    budget = table.nonzeros * table.data
    rounded = np.round(np.log(budget) / np.log(1.01))
    distinct = np.unique(rounded)
    if len(distinct) > 2 * MAX_PANELS or len(distinct) >= len(np.unique(table.data)):
        return None
    return np.exp(rounded * np.log(1.01))


def _data_label(unit: str) -> str:
    return f"data D ({unit})"


def _many(values: np.ndarray) -> bool:
    return len(np.unique(values)) > MAX_PANELS


def _group_colour(index: int) -> str:
    return SPARSITY_COLOURS[index % len(SPARSITY_COLOURS)]


def _sparsity_legend(axis: plt.Axes, labels: list[str], by_colour: bool = True) -> None:
    """The sparsity encoding's legend: colours, or (by_colour=False) markers."""
    handles = [Line2D([], [], color=_group_colour(i) if by_colour else "grey",
                      marker="o" if by_colour else MARKERS[i % len(MARKERS)], ls="", label=label)
               for i, label in enumerate(labels)]
    axis.legend(handles=handles, fontsize=7, title="sparsity", title_fontsize=7)


def predicted_vs_measured(table: ResultsTable, fit: FitResult) -> bytes:
    """Figure 1 (left): each run's measured loss against the law's prediction."""
    figure, axis = plt.subplots(figsize=(5.2, 4.8), layout="constrained")
    predicted = predict_loss(fit.coefficients, table.sparsity, table.nonzeros, table.data)
    group, labels, _ = sparsity_groups(table.sparsity)
    held = np.zeros(len(table), bool)
    if fit.holdout is not None:
        held[fit.holdout.rows] = True
    for i, label in enumerate(labels):
        rows = (group == i) & ~held
        axis.scatter(table.loss[rows], predicted[rows], s=22, color=_group_colour(i), label=label)
    if fit.holdout is not None and held.any():
        axis.scatter(table.loss[held], np.asarray(fit.holdout.predicted), s=60, facecolors="none",
                     edgecolors="crimson", linewidths=1.5, label="held out (fit without them)")
    low, high = float(min(table.loss.min(), predicted.min())), float(max(table.loss.max(), predicted.max()))
    axis.plot([low, high], [low, high], color="grey", lw=1, ls="--", zorder=0, label="prediction = measurement")
    axis.set_xlabel("measured loss")
    axis.set_ylabel("predicted loss")
    axis.set_title("Predicted vs measured")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    return _png(figure)


def loss_minus_c_vs_nonzeros(table: ResultsTable, fit: FitResult, unit: str) -> bytes:
    """Figure 2: loss - c against N (log-log). Few training lengths: a panel per length and a line
    per sparsity; many (an IsoFLOP design): one panel, D as colour, sparsity as marker."""
    law = fit.coefficients
    lengths = np.unique(table.data)
    group, labels, representative = sparsity_groups(table.sparsity)
    n_grid = np.geomspace(table.nonzeros.min() / 1.5, table.nonzeros.max() * 1.5, 100)
    if _many(lengths):
        # Many training lengths: one panel. An IsoFLOP design is coloured by its budgets (each a
        # U-shaped curve over N); any other design by D. Sparsity is the marker.
        figure, axis = plt.subplots(figsize=(6.4, 4.6), layout="constrained")
        budgets = _budgets(table)
        colour, label = (budgets, "compute budget N D (colour)") if budgets is not None else (table.data, _data_label(unit))
        norm = LogNorm(colour.min(), colour.max() * (1 + 1e-9))
        for i in range(len(labels)):
            rows = group == i
            points = axis.scatter(table.nonzeros[rows], table.loss[rows] - law.c, c=colour[rows], norm=norm,
                                  cmap="viridis", s=16, marker=MARKERS[i % len(MARKERS)])
        figure.colorbar(points, ax=axis, label=label)
        _sparsity_legend(axis, labels, by_colour=False)
        view = "IsoFLOP view: one curve per budget" if budgets is not None else f"{len(lengths)} distinct D as colour"
        axis.set_title(f"Loss minus c vs non-zeros ({view})", fontsize=10)
        axes = np.array([[axis]])
    else:
        columns = min(len(lengths), 3)
        rows_of_panels = int(np.ceil(len(lengths) / columns))
        figure, axes = plt.subplots(rows_of_panels, columns, figsize=(4.2 * columns, 3.6 * rows_of_panels),
                                    sharey=True, squeeze=False, layout="constrained")
        for panel, d in zip(axes.flat, lengths, strict=False):
            for i, s in enumerate(representative):
                rows = (table.data == d) & (group == i)
                panel.scatter(table.nonzeros[rows], table.loss[rows] - law.c, s=18, color=_group_colour(i))
                panel.plot(n_grid, predict_loss(law, s, n_grid, d) - law.c, color=_group_colour(i), lw=1.2)
            panel.set_title(f"D = {d:.3g} {unit}", fontsize=9)
        for panel in axes.flat[len(lengths):]:
            panel.set_visible(False)
        _sparsity_legend(axes[0, 0], labels)
        figure.suptitle("Loss minus c vs non-zeros per training length (points: runs; lines: the law)", fontsize=10)
    for panel in axes.flat:
        if panel.get_visible():
            _log_axis(panel, "x")
            _log_axis(panel, "y")
            panel.set_xlabel("non-zeros N")
            panel.grid(alpha=0.3, which="major")
    axes[0, 0].set_ylabel(f"loss - c  (c = {law.c:.3g})")
    return _png(figure)


def loss_vs_data(table: ResultsTable, fit: FitResult, unit: str) -> bytes:
    """Figure 3: loss against D per sparsity, points and law curves per size (colour = N)."""
    law = fit.coefficients
    sizes = np.unique(table.nonzeros)
    group, labels, representative = sparsity_groups(table.sparsity)
    columns = min(len(labels), 3)
    rows_of_panels = int(np.ceil(len(labels) / columns))
    figure, axes = plt.subplots(rows_of_panels, columns, figsize=(4.2 * columns, 3.6 * rows_of_panels),
                                sharey=True, squeeze=False, layout="constrained")
    norm = LogNorm(sizes.min(), sizes.max() * (1 + 1e-9))
    cmap = plt.get_cmap("viridis")
    d_grid = np.geomspace(table.data.min() / 1.5, table.data.max() * 1.5, 100)
    draw_curves = len(sizes) <= MAX_LEGEND  # a law curve per size only while they can be told apart
    for panel, (i, label) in zip(axes.flat, enumerate(labels), strict=False):
        rows = group == i
        panel.scatter(table.data[rows], table.loss[rows], c=table.nonzeros[rows], cmap=cmap, norm=norm, s=16)
        if draw_curves:
            for n in sizes:
                if np.any(rows & (table.nonzeros == n)):
                    panel.plot(d_grid, predict_loss(law, representative[i], n, d_grid), color=cmap(norm(n)), lw=1.1)
        panel.set_title(label, fontsize=9)
        _log_axis(panel, "x")
        panel.set_xlabel(_data_label(unit))
        panel.grid(alpha=0.3)
    panels = labels
    for panel in axes.flat[len(panels):]:
        panel.set_visible(False)
    axes[0, 0].set_ylabel("loss")
    figure.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="non-zeros N (colour)")
    figure.suptitle("Loss vs data: points are runs" + ("; lines, one joint law" if draw_curves else ""), fontsize=10)
    return _png(figure)


def optimal_sparsity_contours(law: LawCoefficients, table: ResultsTable | None, k: float,
                              costs: dict[str, float], samples: np.ndarray | None = None) -> bytes:
    """Figure 4: S_opt over (N, C) for each declared cost convention, with the Chinchilla line;
    with bootstrap samples, the 95% band of the S_opt = 0.5 contour (dotted)."""
    if table is not None:
        n_low, n_high = table.nonzeros.min() / 10, table.nonzeros.max() * 100
        c_mid = k * table.nonzeros * table.data
        c_low, c_high = c_mid.min() / 100, c_mid.max() * 1e4
    else:
        n_low, n_high, c_low, c_high = 1e6, 1e10, 1e16, 1e24
    n_grid, c_grid = np.geomspace(n_low, n_high, 160), np.geomspace(c_low, c_high, 160)
    n_mesh, c_mesh = np.meshgrid(n_grid, c_grid)
    levels = [0.0, 0.25, 0.5, 0.75, 0.875, 0.9375, 1.0]
    colour_norm = BoundaryNorm(levels, plt.cm.magma_r.N)
    figure, axes = plt.subplots(1, len(costs), figsize=(5.5 * len(costs), 4.4), sharey=True, squeeze=False,
                                layout="constrained")
    for axis, (title, alpha) in zip(axes[0], costs.items(), strict=True):
        s_opt = optimal_sparsity(law, n_mesh, c_mesh, k, alpha)
        filled = axis.contourf(n_mesh, c_mesh, s_opt, levels=levels, cmap="magma_r", norm=colour_norm)
        axis.contour(n_mesh, c_mesh, s_opt, levels=levels[1:-1], colors="white", linewidths=0.6)
        handles = []
        if samples is not None and len(samples):
            band = _contour_band(samples, n_grid, k, alpha, 0.5)
            if band is not None:
                for line in band:
                    axis.plot(n_grid, line, color="deepskyblue", lw=1, ls=":")
                handles.append(Line2D([], [], color="deepskyblue", ls=":", label="S_opt = 0.5, 95% bootstrap band"))
        n_star = chinchilla_nonzeros(law, c_grid, k)
        inside = (n_star >= n_low) & (n_star <= n_high)
        axis.plot(n_star[inside], c_grid[inside], color="cyan", lw=2, ls="--")
        handles.append(Line2D([], [], color="cyan", lw=2, ls="--", label="Chinchilla N*(C) at S = 0"))
        if table is not None:
            axis.scatter(table.nonzeros, k * table.nonzeros * table.data, s=8, color="black")
            handles.append(Line2D([], [], color="black", marker="o", ls="", ms=3, label="runs (dense-equivalent C)"))
        _log_axis(axis, "x")
        _log_axis(axis, "y")
        axis.set_xlim(n_low, n_high)
        axis.set_ylim(c_low, c_high)
        axis.set_xlabel("non-zeros N")
        axis.set_title(f"optimal sparsity, {title} costs", fontsize=10)
        axis.legend(handles=handles, fontsize=7, loc="upper left")
    axes[0, 0].set_ylabel(f"training compute C (FLOPs = {k:g} N D c_mul)")
    figure.colorbar(filled, ax=axes, ticks=levels, label="S_opt")
    return _png(figure)


def _contour_band(samples: np.ndarray, n_grid: np.ndarray, k: float, alpha: float,
                  level: float) -> tuple[np.ndarray, np.ndarray] | None:
    """2.5% and 97.5% over bootstrap laws of the compute at which S_opt(N, C) = `level`, per N: the
    contour is C = k N D_chin(N) m, with m the Chinchilla multiple of `level` (engine/fit/sopt.py)."""
    lines = []
    for row in samples:
        law = LawCoefficients.from_array(row)
        with np.errstate(all="ignore"):
            lines.append(k * n_grid * chinchilla_data(law, n_grid) * chinchilla_multiple(law, level, alpha))
    stacked = np.array(lines)
    stacked[~np.isfinite(stacked)] = np.nan
    if np.isnan(stacked).all():
        return None
    low, high = np.nanpercentile(stacked, (2.5, 97.5), axis=0)
    return low, high


def residuals(table: ResultsTable, fit: FitResult, unit: str) -> bytes:
    """Relative residuals, prediction / measured - 1 (positive: the law predicts a higher loss than
    measured), against N; colour = sparsity, marker = training length (few) or colour = D (many)."""
    predicted = predict_loss(fit.coefficients, table.sparsity, table.nonzeros, table.data)
    relative = predicted / table.loss - 1.0
    lengths = np.unique(table.data)
    group, labels, _ = sparsity_groups(table.sparsity)
    figure, axis = plt.subplots(figsize=(6.6, 4.0), layout="constrained")
    if len(lengths) <= len(MARKERS):
        for i in range(len(labels)):
            for j, d in enumerate(lengths):
                rows = (group == i) & (table.data == d)
                axis.scatter(table.nonzeros[rows], 100 * relative[rows], s=20, color=_group_colour(i),
                             marker=MARKERS[j % len(MARKERS)])
        colour_handles = [Line2D([], [], color=_group_colour(i), marker="o", ls="", label=label)
                          for i, label in enumerate(labels)]
        marker_handles = [Line2D([], [], color="grey", marker=MARKERS[j], ls="", label=f"D = {d:.3g}")
                          for j, d in enumerate(lengths)]
        first = axis.legend(handles=colour_handles, fontsize=7, loc="upper left", title="colour", title_fontsize=7)
        axis.add_artist(first)
        axis.legend(handles=marker_handles, fontsize=7, loc="upper right", title=f"marker ({unit})", title_fontsize=7)
    else:
        for i in range(len(labels)):
            rows = group == i
            points = axis.scatter(table.nonzeros[rows], 100 * relative[rows], c=table.data[rows], cmap="viridis",
                                  norm=LogNorm(lengths.min(), lengths.max()), s=16, marker=MARKERS[i % len(MARKERS)])
        figure.colorbar(points, ax=axis, label=_data_label(unit))
        _sparsity_legend(axis, labels, by_colour=False)
    axis.axhline(0.0, color="grey", lw=1)
    _log_axis(axis, "x")
    axis.set_xlabel("non-zeros N")
    axis.set_ylabel("predicted / measured - 1 (%)")
    axis.set_title("Residuals of the fit (positive: the law over-predicts the loss)", fontsize=10)
    axis.grid(alpha=0.3)
    return _png(figure)


def convergence(fit: FitResult) -> bytes:
    """End objective of every start (sorted) and the bootstrap's gain distributions."""
    samples, gains = fit.bootstrap_samples, fit.gains
    show_gains = samples is not None and bool(gains)
    figure, axes = plt.subplots(1, 2 if show_gains else 1, figsize=(11 if show_gains else 5.5, 3.8),
                                squeeze=False, layout="constrained")
    axis = axes[0, 0]
    ends = np.sort([start.objective for start in fit.diagnostics.starts])
    # Relative excess over the best end point; rounding-level differences are drawn at the floor.
    floor = 1e-16
    excess = np.maximum(np.where(np.isfinite(ends), ends / fit.objective - 1.0, 1e3), floor)
    axis.plot(np.arange(1, len(ends) + 1), excess, "o", ms=4, color="#1f77b4", label="end point of a start")
    axis.axhline(1e-9, color="crimson", lw=1, ls="--", label="agreement tolerance (1e-9)")
    axis.set_yscale("log")
    axis.set_ylim(floor / 3, max(1e-6, float(excess.max()) * 3))
    axis.set_xlabel("start (sorted by end objective)")
    axis.set_ylabel("end objective / best - 1")
    axis.set_title(f"{fit.diagnostics.agreeing_starts}/{fit.diagnostics.total_starts} starts agree "
                   f"(best mean Huber {fit.objective:.4g}); {fit.diagnostics.verdict}", fontsize=9)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, which="both")
    if samples is not None and gains:  # show_gains
        from engine.fit.gains import gains_from_samples

        axis = axes[0, 1]
        for index, s in enumerate(gains):
            colour = SPARSITY_COLOURS[(index + 1) % len(SPARSITY_COLOURS)]
            values = gains_from_samples(samples, s)
            values = values[np.isfinite(values)]
            axis.hist(values, bins=40, alpha=0.55, color=colour, label=f"S = {s:g} (line: best fit)")
            axis.axvline(gains[s], color=colour, lw=1.5)
        axis.set_xlabel("gain (eq. 7), x dense size")
        axis.set_ylabel("bootstrap resamples")
        axis.set_title(f"Bootstrap distribution of the gains ({samples.shape[0]} resamples)", fontsize=9)
        axis.legend(fontsize=8)
    return _png(figure)


def isoflop(table: ResultsTable, result: IsoflopResult, law_a: float, unit: str) -> bytes:
    """IsoFLOP curves (loss vs N per budget, a parabola each, the optimum marked) and N_opt(C)
    across budgets, with the exponent fitted per sparsity and the law's (dashed)."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.4), layout="constrained")
    budgets = np.array([o.flops for o in result.optima])
    norm = LogNorm(budgets.min(), budgets.max() * (1 + 1e-9))
    group, labels, _ = sparsity_groups(np.array([o.sparsity for o in result.optima]))
    for o, g in zip(result.optima, group, strict=True):
        rows = (table.sparsity == o.sparsity) & (np.abs(np.log(table.nonzeros * table.data / o.budget_nd)) < 0.05)
        colour = plt.cm.viridis(norm(o.flops))
        left.scatter(table.nonzeros[rows], table.loss[rows], s=16, color=colour, marker=MARKERS[g % len(MARKERS)])
        left.axvline(o.nonzeros_opt, color=colour, lw=0.6, ls=":")
    figure.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=left, label="budget C (FLOPs)")
    _sparsity_legend(left, labels, by_colour=False)
    _log_axis(left, "x")
    left.set_xlabel("non-zeros N")
    left.set_ylabel("loss")
    left.set_title("IsoFLOP curves (points: runs; dotted: each budget's optimum)", fontsize=9)
    left.grid(alpha=0.3)
    for i, label in enumerate(labels):
        points = [o for o, g in zip(result.optima, group, strict=True) if g == i]
        c = np.array([o.flops for o in points])
        n = np.array([o.nonzeros_opt for o in points])
        right.scatter(c, n, color=_group_colour(i), s=24, label=label)
        if len(points) >= 2:
            slope, intercept = np.polyfit(np.log(c), np.log(n), 1)
            grid = np.geomspace(c.min(), c.max(), 20)
            right.plot(grid, np.exp(intercept) * grid**slope, color=_group_colour(i), lw=1)
            right.plot(grid, n[0] * (grid / c[0]) ** law_a, color=_group_colour(i), lw=1, ls="--")
    right.plot([], [], color="grey", lw=1, label="fit across budgets: N_opt ~ C^a")
    right.plot([], [], color="grey", lw=1, ls="--", label=f"the law's exponent ({law_a:.3g})")
    _log_axis(right, "x")
    _log_axis(right, "y")
    right.set_xlabel("budget C (FLOPs)")
    right.set_ylabel("optimal non-zeros N_opt")
    right.set_title(f"N_opt per budget (D_opt = C / (k N_opt c_mul), in {unit})", fontsize=9)
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    return _png(figure)
