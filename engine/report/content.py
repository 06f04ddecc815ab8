"""What the report says: a FitResult and its table turned into blocks (blocks.py)."""

from __future__ import annotations

import numpy as np

from engine.fit import paper
from engine.fit.findings import (
    COST_ALPHAS,
    NOT_ESTIMABLE,
    Estimate,
    Findings,
    data_unit,
    flops_per_param_example,
    is_paper_t5,
)
from engine.fit.gains import gain
from engine.fit.io import ResultsTable
from engine.fit.law import COEFFICIENT_NAMES, SPARSITY_COEFFICIENTS
from engine.fit.result import FitResult
from engine.fit.sopt import chinchilla_multiple
from engine.planning.costs import DENSE_COST_ALPHA, pruning_cost_alpha
from engine.report import figures
from engine.report.blocks import Block, Figure, Heading, Paragraph, Table


def fmt(value: float, digits: int = 4) -> str:
    if value is None or not np.isfinite(value):
        return "inf" if value is not None and value > 0 else "n/a"
    return f"{value:.{digits}g}"


def summary_blocks(findings: Findings) -> list[Block]:
    """What was learned, first: sentences with intervals, what is not pinned down, what would pin it."""
    return [Heading("Summary: what this data says"), *[Paragraph(sentence) for sentence in findings.summary]]


def chinchilla_blocks(findings: Findings) -> list[Block]:
    rows = [[name, estimate.text(4)] for name, estimate in findings.chinchilla_form.items()]
    note = ("The data have no sparse run, so this dense law is all they can tell: A = a_S + c_S, alpha = b_N, "
            "B = a_D^b_D, beta = b_D, E = c." if findings.dense_only else
            "The dense (S = 0) law of this fit in Hoffmann et al.'s form: A = a_S + c_S, alpha = b_N, B = a_D^b_D, "
            "beta = b_D, E = c.")
    return [Heading("Dense law, Chinchilla form: L = E + A / N^alpha + B / D^beta"), Paragraph(note),
            Table(["coefficient", "value [95% bootstrap interval]"], rows)]


def coefficient_blocks(fit: FitResult, dense_only: bool = False) -> list[Block]:
    intervals = fit.intervals()
    unclear = fit.poorly_determined()
    free = fit.settings.free_coefficients()
    rows = []
    for name in COEFFICIENT_NAMES:
        value = getattr(fit.coefficients, name)
        interval = "" if intervals is None else f"[{fmt(intervals[name][0], 3)}, {fmt(intervals[name][1], 3)}]"
        if dense_only and name in SPARSITY_COEFFICIENTS:
            rows.append([name, "n/a", "", f"**{NOT_ESTIMABLE}** (no sparse run)"])
            continue
        if name not in free:
            note = f"frozen from {fit.settings.freeze_dense_source or 'another fit'}"
        elif name in unclear:
            note = f"**not pinned down by this data**: {unclear[name]}"
        else:
            note = ""
        shown = f"({fmt(value, 3)})" if name in unclear else fmt(value, 4)
        rows.append([name, shown, interval, note])
    blocks: list[Block] = [
        Heading("Coefficients (Table 7 form, paper units: raw N and D)"),
        Table(["coefficient", "value", "95% bootstrap interval", "note"], rows),
        Paragraph(
            f"Objective (mean Huber, delta {fit.settings.huber_delta:g} on "
            f"{'log L' if fit.settings.log_loss else 'L'}; Table 7's Error): **{fit.objective:.6g}** over "
            f"{fit.rows_used} runs. Full-precision values are in `fit.json`."
            + (" Values in parentheses are the best fit's, but the data leave them undetermined: read their "
               "interval, not the number." if unclear else "")
        ),
    ]
    return blocks


def gain_blocks(findings: Findings, is_t5: bool) -> list[Block]:
    if findings.gains == {}:
        return []  # the spec's `analysis.gains` is null: no gains table
    heading = Heading("Sparsity gains (Table 2 form, eq. 7)")
    if findings.gains is None:
        return [heading, Paragraph(f"Gains are {NOT_ESTIMABLE}: no sparse run was fitted.")]
    header = ["", *[f"S = {s:g}" for s in findings.gains]]
    rows = [["this fit", *[f"{e.value:.3g}x" for e in findings.gains.values()]],
            ["95% interval", *[_interval_text(e) for e in findings.gains.values()]],
            ["within the fitted S", *["no: extrapolated" if e.extrapolated else "yes" for e in findings.gains.values()]]]
    if is_t5:
        rows.append(["paper, Table 2 (T5/C4)", *[f"{g:.2f}x" for g in paper.TABLE_2["t5_c4"]]])
    return [
        heading,
        Paragraph("Dense size multiplier that matches a sparse model with N non-zeros trained on the same data. "
                  f"Fitted sparsities span [{findings.ranges.sparsity[0]:g}, {findings.ranges.sparsity[1]:g}]; a gain "
                  "beyond them is the law's extrapolation, not a measurement."),
        Table(header, rows),
    ]


def _interval_text(estimate: Estimate) -> str:
    return "" if estimate.interval is None else f"[{estimate.interval[0]:.3g}, {estimate.interval[1]:.3g}]"


def prediction_blocks(findings: Findings, unit: str) -> list[Block]:
    """The law at the spec's extrapolation points, with intervals; marked where outside the data."""
    if not findings.predictions:
        return []
    rows = [[f"{s:g}", f"{n:.4g}", f"{d:.4g}", f"{e.value:.5g}", _interval_text(e),
             ", ".join(e.extrapolated) or "no"] for (s, n, d), e in findings.predictions]
    return [Heading("Predictions at the declared points"),
            Table(["S", "N", f"D ({unit})", "loss", "95% interval", "extrapolated in"], rows)]


def diagnostics_blocks(fit: FitResult) -> list[Block]:
    d = fit.diagnostics
    eig = d.hessian_eigenvalues
    by_weight = sorted(d.flattest_direction.items(), key=lambda kv: -abs(kv[1]))
    flattest = ", ".join(f"{k} {v:+.2f}" for k, v in by_weight if abs(v) > 0.1)
    text = (
        f"Verdict: **{d.verdict}**. {d.agreeing_starts} of {d.total_starts} random starts reached the best fit "
        f"(objective within 1e-9 relative, and every coefficient within 1e-4 relative or every fitted run's "
        f"prediction within 1e-6 relative). Gradient norm at the best "
        f"point: {d.best_gradient_norm:.2e} (of sum(Huber)/delta^2 with respect to the log-coefficients, whose "
        f"value there is {fit.objective * fit.rows_used / fit.settings.huber_delta**2:.4g}). "
        f"Distinct end points (mean Huber): {', '.join(f'{v:.6g}' for v in d.distinct_minima)}."
    )
    blocks: list[Block] = [Heading("Convergence diagnostics"), Paragraph(text)]
    if eig:
        blocks.append(Paragraph(
            f"Hessian eigenvalues at the best point (log-coefficients): {', '.join(f'{v:.3g}' for v in eig)}; "
            f"condition number {eig[-1] / max(eig[0], 1e-300):.3g}. Flattest direction: {flattest}."
        ))
    if fit.bootstrap_samples is not None:
        blocks.append(Paragraph(
            f"Bootstrap: {fit.bootstrap_samples.shape[0]} resamples of the runs, warm-started from the best fit, "
            f"{fmt(fit.bootstrap_seconds or 0, 3)} s. {d.bootstrap_unconverged} resamples stopped before their "
            "gradient was below 1e-4 (they were still moving along the flat direction above); they are kept "
            "at the point reached, so intervals along that direction are, if anything, too narrow."
        ))
    blocks.append(Figure("convergence.png", "End objective of every start; bootstrap distribution of the gains.",
                         figures.convergence(fit)))
    return blocks


def holdout_blocks(fit: FitResult, table: ResultsTable) -> list[Block]:
    if fit.holdout is None:
        return [Heading("Held-out check"),
                Paragraph("No held-out check (none requested, or too few runs left to fit without them).")]
    h = fit.holdout
    rows = [
        [fmt(table.sparsity[r], 3), fmt(table.nonzeros[r], 4), fmt(table.data[r], 4), fmt(m, 5), fmt(p, 5),
         f"{100 * (p / m - 1):+.2f}%"]
        for r, m, p in zip(h.rows, h.measured, h.predicted, strict=True)
    ]
    return [
        Heading("Held-out check"),
        Paragraph(
            f"The law refitted without the runs selected by `{h.expression}` ({len(h.rows)} runs) predicts them "
            f"with a mean absolute error of **{100 * h.mean_absolute_relative_error:.2f}%**."
        ),
        Table(["S", "N", "D", "measured", "predicted", "error"], rows),
    ]


def sopt_blocks(fit: FitResult, findings: Findings, table: ResultsTable, k: float, is_t5: bool) -> list[Block]:
    if findings.sopt_multiples == {}:
        return []  # the spec's `analysis.optimal_sparsity` is null
    heading = Heading("Optimal sparsity (sec. 3.3, Figure 4)")
    if findings.sopt_multiples is None:
        return [heading, Paragraph(f"Optimal sparsity is {NOT_ESTIMABLE}: no sparse run was fitted.")]
    costs = list(findings.sopt_multiples)
    sparsities = list(findings.sopt_multiples[costs[0]])
    rows = [[f"{s:g}" + (" (extrapolated)" if findings.sopt_multiples[costs[0]][s].extrapolated else ""),
             *[f"{findings.sopt_multiples[c][s].value:.3g}x {_interval_text(findings.sopt_multiples[c][s])}" for c in costs]]
            for s in sparsities]
    blocks: list[Block] = [
        heading,
        Paragraph(
            "How much longer than Chinchilla one must train before sparsity S is optimal, with 95% bootstrap "
            "intervals. Definition: at fixed non-zeros N, the compute C at which S_opt(N, C) = S, expressed as the "
            "data a dense N-parameter model would see with it, C / (k N), divided by the Chinchilla-optimal data "
            "D_chin(N) of the dense law (S = 0). It does not depend on N (the contours are parallel to the Chinchilla "
            "line) nor on k. Sparse costs use eq. 4 (cubic schedule from 25% to 75% of training); dense costs are "
            "those of the dense base model. Sparsities beyond the fitted ones are extrapolations."
        ),
        Table(["sparsity", *[f"{c} costs" for c in costs]], rows),
    ]
    if is_t5:
        sparse_alpha = pruning_cost_alpha()
        blocks.append(Paragraph(
            "Paper (sec. 3.3), T5: 50% is optimal at < 3x (sparse costs) and about 70x (dense costs) the Chinchilla "
            f"length; with Table 7's coefficients this code gives {chinchilla_multiple(paper.T5_C4, 0.5, sparse_alpha):.3g}x "
            f"and {chinchilla_multiple(paper.T5_C4, 0.5, DENSE_COST_ALPHA):.3g}x."
        ))
    blocks.append(Figure(
        "sopt_contours.png",
        f"Optimal sparsity over (N, C), C = {k:g} N D c_mul(S), for the declared costs; dashed: the Chinchilla line; "
        "dotted: the 95% bootstrap band of the S_opt = 0.5 contour.",
        figures.optimal_sparsity_contours(fit.coefficients, table, k, {c: COST_ALPHAS[c] for c in costs},
                                          fit.bootstrap_samples),
    ))
    return blocks


def isoflop_blocks(findings: Findings, table: ResultsTable, unit: str) -> list[Block]:
    """Approach 2 per sparsity, beside the exponents the eq. 3 law implies."""
    result = findings.isoflop
    if result is None:
        return []
    blocks: list[Block] = [Heading("IsoFLOP analysis (Hoffmann et al.'s approach 2)")]
    if not result.optima:
        return [*blocks, Paragraph("No budget has enough runs of distinct sizes at one sparsity for a parabola: "
                                   "an IsoFLOP design needs several sizes trained on the same N x D.")]
    law = (f"{result.law_a[0]:.3g} {_bounds(result.law_a[1])}", f"{result.law_b[0]:.3g} {_bounds(result.law_b[1])}")
    rows = [[f"S = {s:g}", str(e.budgets), f"{e.a:.3g} {_bounds(e.a_interval)}", f"{e.b:.3g} {_bounds(e.b_interval)}"]
            for s, e in result.exponents.items()]
    rows.append(["eq. 3 law (every S)", "", *law])
    blocks += [
        Paragraph("Runs that share a budget (N x D within the tolerance) and a sparsity form an IsoFLOP curve; "
                  "the minimum of a parabola in log N gives the budget's optimal N and D. Exponents: N_opt ~ C^a, "
                  "D_opt ~ C^b, fitted across budgets, with 95% bootstrap intervals over the runs of each budget; "
                  "the law's are b_D / (b_N + b_D) and b_N / (b_N + b_D)."),
        Table(["sparsity", "budgets", "a (N_opt ~ C^a)", "b (D_opt ~ C^b)"], rows),
        Table(["S", "budget C (FLOPs)", "runs", "N_opt", f"D_opt ({unit})", "minimum within the sizes"],
              [[f"{o.sparsity:g}", f"{o.flops:.3g}", str(o.runs), f"{o.nonzeros_opt:.4g}", f"{o.data_opt:.4g}",
                "yes" if o.inside else "no: extrapolated"] for o in result.optima]),
        Figure("isoflop.png", "IsoFLOP curves and the optimal size per budget.",
               figures.isoflop(table, result, result.law_a[0], unit)),
    ]
    return blocks


def _bounds(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f"[{interval[0]:.3g}, {interval[1]:.3g}]"


def pretrained_blocks(fit: FitResult, table: ResultsTable) -> list[Block]:
    """Table 4 for pretrained rows in a fitted table, through this fit's law."""
    from engine.report.studies import pretrained_vs_scratch_blocks

    if table.from_scratch_mask().all():
        return []
    return pretrained_vs_scratch_blocks(fit.coefficients, "this fit (from-scratch rows only)", table)


def paper_comparison_blocks(fit: FitResult, table: ResultsTable, paper_objective: float, paper_gradient: float) -> list[Block]:
    rows = [[name, fmt(getattr(paper.T5_C4, name), 3), fmt(getattr(fit.coefficients, name), 4)] for name in COEFFICIENT_NAMES]
    printed = paper.TABLE_7_ERROR["t5_c4"]
    rows.append(["Error (mean Huber)", f"{printed:.3g} (printed); {paper_objective:.4g} recomputed", f"{fit.objective:.4g}"])
    ours_vs = ", ".join(f"{gain(paper.T5_C4, s):.3f}" for s in paper.TABLE_2_SPARSITIES)
    return [
        Heading("Comparison with the paper (this is the paper's T5/C4 sweep)"),
        Table(["coefficient", "paper, Table 7", "this fit"], rows),
        Paragraph(
            f"Why they differ: both minimise the same objective on the same 48 runs, but the paper's coefficients "
            f"are not at its minimum. Evaluated here they give a mean Huber of {paper_objective:.4g} with a gradient "
            f"norm of {paper_gradient:.3g} (this fit: {fit.objective:.4g}, {fit.diagnostics.best_gradient_norm:.2g}). "
            "The reference notebook minimised the *mean* Huber loss, of order 1e-5, with scipy's BFGS at default "
            "tolerances (gtol 1e-5 on a gradient that is itself of order 1e-5 or less), so its 25 starts stopped "
            "early, between about 7.6e-6 and 1.4e-5, wherever they happened to be; the paper reports the best. "
            f"Minimised to convergence ({fit.diagnostics.agreeing_starts} of {fit.diagnostics.total_starts} starts "
            f"agree), the same objective goes {100 * (1 - fit.objective / paper_objective):.0f}% lower, with different "
            "exponents. The data term (a_D, b_D) "
            "and c are weakly determined by three training lengths (see the intervals), so moving along that "
            "flat direction changes them a lot while changing the loss predictions little. Rounding Table 7 to "
            f"three digits does not explain the gap: the printed Error ({paper.TABLE_7_ERROR['t5_c4']:.3g}) and the "
            f"recomputed one ({paper_objective:.4g}) differ by {100 * abs(paper_objective / printed - 1):.1f}%. "
            + _gain_verdict(fit)
        ),
        Paragraph(f"Table 2 gains recomputed from Table 7's T5 coefficients: {ours_vs} (paper: 1.59, 2.16, 2.63)."),
    ]


def _gain_verdict(fit: FitResult) -> str:
    intervals = fit.gain_intervals()
    if not intervals:
        return ""
    outside = [f"{s:g} ({published:.2f}x vs [{intervals[s][0]:.2f}, {intervals[s][1]:.2f}])"
               for s, published in zip(paper.TABLE_2_SPARSITIES, paper.TABLE_2["t5_c4"], strict=True)
               if s in intervals and not intervals[s][0] <= published <= intervals[s][1]]
    if not outside:
        return "The paper's Table 2 gains lie inside this fit's 95% bootstrap intervals."
    return ("The gains move too: the paper's Table 2 value lies outside this fit's 95% bootstrap interval at S = "
            + "; ".join(outside) + ".")


def report_blocks(fit: FitResult, table: ResultsTable, findings: Findings,
                  paper_objective: tuple[float, float] | None = None, own_table4: bool = True) -> list[Block]:
    """The report's sections; `own_table4` False leaves out Table 4 through this fit (a spec's
    analysis.pretrained_vs_scratch names the law to measure pretrained runs against instead)."""
    t5 = is_paper_t5(table)
    k = flops_per_param_example(table)
    unit = data_unit(table)
    fit_table = table.select(np.asarray(fit.fit_mask))
    blocks: list[Block] = [Heading("Sparse scaling-law fit", 1), *summary_blocks(findings)]
    blocks.append(Heading("Data and settings"))
    blocks.append(Paragraph(
        f"Data: `{table.source}` (sha256 {table.sha256[:16]}...), {len(table)} rows, {fit.rows_used} from-scratch "
        f"runs fitted; D in {unit}. Law (eq. 3): L(S, N, D) = (a_S (1-S)^b_S + c_S) N^-b_N + (a_D / D)^b_D + c. "
        f"Settings: Huber delta {fit.settings.huber_delta:g} on {'log L' if fit.settings.log_loss else 'L'}, "
        f"{fit.settings.starts} starts, seed {fit.settings.seed}, bootstrap {fit.settings.bootstrap}, "
        f"held out: {fit.settings.holdout}. Engine {fit.provenance.get('engine_version')}."
    ))
    if fit.settings.freeze_dense is not None:
        blocks.append(Paragraph(
            f"n:m-style refit (sec. 4.1): only a_S, b_S, c_S were fitted; b_N, a_D, b_D, c are frozen from "
            f"{fit.settings.freeze_dense_source}."
        ))
    if findings.dense_only:
        blocks += chinchilla_blocks(findings)
    blocks += coefficient_blocks(fit, findings.dense_only)
    if not findings.dense_only:
        blocks += chinchilla_blocks(findings)
    blocks += gain_blocks(findings, t5)
    blocks += prediction_blocks(findings, unit)
    blocks += diagnostics_blocks(fit)
    if t5 and paper_objective is not None:
        blocks += paper_comparison_blocks(fit, table, *paper_objective)
    blocks += [
        Heading("Fit quality"),
        Figure("predicted_vs_measured.png",
               "Predicted vs measured loss (Figure 1, left); held-out runs circled, predicted by the fit without them.",
               figures.predicted_vs_measured(fit_table, _reindexed(fit, table))),
        Figure("residuals.png", "Relative residuals of the full fit: predicted / measured - 1.",
               figures.residuals(fit_table, fit, unit)),
        Figure("loss_vs_nonzeros.png", "Loss minus c against non-zeros (Figure 2).",
               figures.loss_minus_c_vs_nonzeros(fit_table, fit, unit)),
        Figure("loss_vs_data.png", "Loss against data, colour = non-zeros (Figure 3).",
               figures.loss_vs_data(fit_table, fit, unit)),
    ]
    blocks += holdout_blocks(fit, table)
    blocks += sopt_blocks(fit, findings, fit_table, k, t5)
    blocks += isoflop_blocks(findings, fit_table, unit)
    if own_table4:
        blocks += pretrained_blocks(fit, table)
    return blocks


def _reindexed(fit: FitResult, table: ResultsTable) -> FitResult:
    """The fit with held-out row indices mapped into the from-scratch sub-table the figures use."""
    from dataclasses import replace

    if fit.holdout is None:
        return fit
    position = np.cumsum(np.asarray(fit.fit_mask)) - 1
    return replace(fit, holdout=replace(fit.holdout, rows=[int(position[r]) for r in fit.holdout.rows]))
