"""Report sections for the paper's two extensions (section 4): n:m laws refitted against a frozen
dense law (Table 3) and models pruned from pretrained checkpoints against sparsifying from scratch
(Table 4)."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from engine.fit import paper  # noqa: E402
from engine.fit.gains import gain  # noqa: E402
from engine.fit.io import ResultsTable  # noqa: E402
from engine.fit.law import LawCoefficients, predict_loss  # noqa: E402
from engine.fit.pretrained import equivalence_table  # noqa: E402
from engine.fit.result import FitResult  # noqa: E402
from engine.report import figures  # noqa: E402
from engine.report.blocks import Block, Figure, Heading, Paragraph, Table  # noqa: E402


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None or not np.isfinite(value):
        return "inf" if value is not None and value > 0 else "n/a"
    return f"{value:.{digits}g}"


# --- n:m (section 4.1, Table 3) ------------------------------------------------------------------


@dataclass(frozen=True)
class NmGroup:
    """The runs of one group size m (the paper fits n:4 and n:8 separately) and their refit."""

    label: str  # "n:4"
    patterns: tuple[str, ...]  # "2:4", "1:4"
    table: ResultsTable  # its n:m rows, then the dense rows shared by all groups
    fit: FitResult
    dense_runs: int = 0  # S = 0 rows of the dense sweep included in the fit


def nm_refit_blocks(groups: list[NmGroup], dense: LawCoefficients, dense_source: str) -> list[Block]:
    levels = sorted({float(s) for group in groups for s in np.unique(group.table.sparsity) if s > 0})
    gain_rows, coefficient_rows = [], []
    for group in groups:
        intervals = _gain_intervals(group.fit, levels)
        cells = []
        for s in levels:
            value = float(gain(group.fit.coefficients, s))
            low_high = intervals.get(s)
            cells.append(f"{value:.2f}x" + (f" [{low_high[0]:.2f}, {low_high[1]:.2f}]" if low_high else ""))
        published = paper.TABLE_3.get(group.label)
        paper_cells = [f"{v:.2f}x" for v in published] if published and levels == [0.5, 0.75] else ["n/a"]
        runs = f"{len(group.table) - group.dense_runs} + {group.dense_runs} dense" if group.dense_runs else str(len(group.table))
        gain_rows.append([group.label, ", ".join(group.patterns), runs, *cells, " / ".join(paper_cells)])
        c = group.fit.coefficients
        coefficient_rows.append([group.label, fmt(c.a_S), fmt(c.b_S), fmt(c.c_S), f"{group.fit.objective:.3g}",
                                 group.fit.diagnostics.verdict])
    caveat = [] if all(group.dense_runs for group in groups) else [Paragraph(
        "Caution: no dense (S = 0) runs were available to this refit (the dense law came from a fit file, not a "
        "spec with results), so a_S + c_S, the law at S = 0, is extrapolated from the n:m levels alone and the "
        "gains are weakly determined.")]
    return [
        Heading("n:m sparsity (Table 3)"),
        *caveat,
        Paragraph(
            "Section 4.1's method: the dense part of the law (b_N, a_D, b_D, c) is frozen at the unstructured "
            f"fit of {dense_source}, and only the sparsity term a_S, b_S, c_S is refitted, separately for each "
            "group size m (n:4 holds 2:4 at S = 0.5 and 1:4 at 0.75; n:8 holds 4:8 and 2:8), on the paper's "
            "subset of the grid (every run with the fewest steps or the smallest model). The dense (S = 0) runs of "
            "the unstructured sweep join each group: S = 0 has no pattern, and without them the law at S = 0 "
            "(a_S + c_S), and with it every gain, would rest on two sparsity levels alone. Gains are eq. 7's dense "
            "size multipliers, with 95% bootstrap intervals; the paper's T5/C4 values beside them."
        ),
        Table(["group", "patterns", "runs", *(f"gain at S = {s:g}" for s in levels), "paper, Table 3"], gain_rows),
        Table(["group", "a_S", "b_S", "c_S", "objective (mean Huber)", "convergence"], coefficient_rows),
        Paragraph(
            f"Frozen: b_N = {fmt(dense.b_N)}, a_D = {fmt(dense.a_D)}, b_D = {fmt(dense.b_D)}, c = {fmt(dense.c)}; "
            f"the unstructured law's own gains at these levels: "
            + ", ".join(f"{float(gain(dense, s)):.2f}x at S = {s:g}" for s in levels) + "."
        ),
        Figure("nm_loss_vs_nonzeros.png",
               "Loss against non-zeros per n:m pattern at the shortest training length (Figure 6), with each "
               "group's refitted law; dashed: the unstructured law at the same levels.",
               nm_loss_vs_nonzeros(groups, dense)),
    ]


def _gain_intervals(fit: FitResult, levels: list[float]) -> dict[float, tuple[float, float]]:
    from engine.fit.gains import gain_interval

    if fit.bootstrap_samples is None:
        return {}
    return {s: gain_interval(fit.bootstrap_samples, s) for s in levels}


def nm_loss_vs_nonzeros(groups: list[NmGroup], dense: LawCoefficients) -> bytes:
    figure, axis = plt.subplots(figsize=(6, 4.6))
    colours = plt.get_cmap("tab10")
    index = 0
    for group in groups:
        patterns = np.asarray(group.table.extra.get("pattern", ["?"] * len(group.table)))
        shortest = group.table.data.min()
        for pattern in group.patterns:
            rows = (patterns == pattern) & (group.table.data == shortest)
            if not rows.any():
                continue
            s = float(group.table.sparsity[rows][0])
            colour = colours(index % 10)
            index += 1
            axis.scatter(group.table.nonzeros[rows], group.table.loss[rows], color=colour, s=24,
                         label=f"{pattern} (S = {s:g})")
            grid = np.geomspace(group.table.nonzeros[rows].min() * 0.8, group.table.nonzeros[rows].max() * 1.25, 50)
            ones = np.ones_like(grid)
            axis.plot(grid, predict_loss(group.fit.coefficients, s * ones, grid, shortest * ones), color=colour, lw=1.2)
            axis.plot(grid, predict_loss(dense, s * ones, grid, shortest * ones), color=colour, lw=1, ls="--")
    return _loss_vs_nonzeros_png(figure, axis, "n:m patterns, shortest training length")


# --- pruned pretrained models (section 4.2, Table 4) ---------------------------------------------


def pretrained_vs_scratch_blocks(law: LawCoefficients, law_source: str, table: ResultsTable) -> list[Block]:
    """Table 4: the data a from-scratch sparse run needs (by `law`) to reach each pruned run's loss,
    relative to the pruning data (exc.) and to pretraining + pruning data (inc.)."""
    pretrained = ~table.from_scratch_mask()
    heading = Heading("Pruned pretrained models vs sparsifying from scratch (Table 4)")
    if not pretrained.any():
        return [heading, Paragraph("No pretrained runs in this table.")]
    pretrain = _numbers(table.extra.get("pretrain_data") or [None] * len(table))
    unknown = np.flatnonzero(pretrained & ~np.isfinite(pretrain))
    rows_idx = np.flatnonzero(pretrained & np.isfinite(pretrain))
    note = [] if not len(unknown) else [Paragraph(
        f"{len(unknown)} pretrained run(s) have no `pretrain_data` (their source's D; a bare checkpoint source "
        "does not record it) and are left out" + (": " + ", ".join(str(table.extra["run_id"][r]) for r in unknown)
                                                   if "run_id" in table.extra else "") + ".")]
    if not len(rows_idx):
        return [heading, *note, Paragraph("So Table 4 cannot be computed.")]
    equivalences = equivalence_table(law, table.sparsity[rows_idx], table.nonzeros[rows_idx], table.loss[rows_idx],
                                     table.data[rows_idx], pretrain[rows_idx])
    widths = table.extra.get("d_model") or ["?"] * len(table)
    detail = [[str(widths[r]), fmt(table.sparsity[r], 3), fmt(table.nonzeros[r], 4), fmt(table.loss[r], 5),
               fmt(table.data[r], 4), fmt(pretrain[r], 4), fmt(e.scratch_data, 4),
               f"{fmt(e.excluding_pretraining, 3)}x", f"{fmt(e.including_pretraining, 3)}x"]
              for r, e in zip(rows_idx, equivalences, strict=True)]
    levels = sorted({float(table.sparsity[r]) for r in rows_idx})
    by_model: dict[str, dict[float, str]] = {}
    for r, e in zip(rows_idx, equivalences, strict=True):
        by_model.setdefault(str(widths[r]), {})[float(table.sparsity[r])] = (
            f"{fmt(e.excluding_pretraining, 3)}x / {fmt(e.including_pretraining, 3)}x")
    layout = [[f"d_model {model}", *(cells.get(s, "") for s in levels)] for model, cells in by_model.items()]
    paper_rows = [[name, *(f"{row[s][0]:.2f}x / {row[s][1]:.2f}x" if s in row else "" for s in levels)]
                  for name, row in paper.TABLE_4.items()]
    unreachable = sum(1 for e in equivalences if not np.isfinite(e.scratch_data))
    blocks: list[Block] = [
        heading,
        *note,
        Paragraph(
            "Section 4.2's method: each pretrained dense model is pruned over a small fraction of its training "
            f"budget; the from-scratch law of {law_source} is solved for the data D a run sparsified from scratch "
            "(at the same S and N) needs to reach the same loss. exc. = D_scratch / D_prune (the dense model "
            "exists already), inc. = D_scratch / (D_pretrain + D_prune) (its training counted too). Above 1x: "
            "pruning the pretrained model needed less data than sparsifying from scratch."
        ),
        Table(["model", *(f"S = {s:g}: exc. / inc." for s in levels)], layout),
        Table(["paper (ViT/JFT)", *(f"S = {s:g}: exc. / inc." for s in levels)], paper_rows),
        Table(["d_model", "S", "N", "measured loss", "D prune", "D pretrain", "scratch D", "exc.", "inc."], detail),
        Figure("pretrained_vs_scratch.png",
               "Loss of each pruned pretrained model against N, with the from-scratch law at the pruning data "
               "(dashed) and at pretraining + pruning data (solid).",
               pretrained_figure(law, table, rows_idx, pretrain)),
    ]
    if unreachable:
        blocks.insert(2, Paragraph(
            f"{unreachable} pruned run(s) reached a loss at or below the law's infinite-data limit for their S and N: "
            "no amount of from-scratch data matches them by this law (shown as inf)."))
    return blocks


def _loss_vs_nonzeros_png(figure: plt.Figure, axis: plt.Axes, title: str) -> bytes:
    axis.set_xscale("log")
    axis.set_xlabel("non-zeros N")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return figures._png(figure)


def _numbers(values: list[object]) -> np.ndarray:
    """A column as floats, NaN where a cell is blank or not a number."""
    def number(value: object) -> float:
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return float("nan")
    return np.array([number(v) for v in values], np.float64)


def pretrained_figure(law: LawCoefficients, table: ResultsTable, rows_idx: np.ndarray, pretrain: np.ndarray) -> bytes:
    figure, axis = plt.subplots(figsize=(6, 4.6))
    levels = np.unique(table.sparsity[rows_idx])
    for s in levels:
        rows = rows_idx[table.sparsity[rows_idx] == s]
        colour = figures._sparsity_colour(levels, s)
        axis.scatter(table.nonzeros[rows], table.loss[rows], color=colour, s=28, label=f"pruned, S = {s:g}")
        order = rows[np.argsort(table.nonzeros[rows])]
        n, ones = table.nonzeros[order], np.ones(len(order))
        axis.plot(n, predict_loss(law, s * ones, n, table.data[order]), color=colour, ls="--", lw=1)
        axis.plot(n, predict_loss(law, s * ones, n, table.data[order] + pretrain[order]), color=colour, lw=1)
    return _loss_vs_nonzeros_png(figure, axis, "Pruned pretrained vs the from-scratch law")


def design_blocks(summary: dict) -> list[Block]:
    """An adaptive study's rounds (engine/study/adaptive.py): the target before each round and at the
    end, and the compute spent against the whole grid's."""
    def interval(values: list[float] | None) -> str:
        return "" if not values else f"[{values[0]:.4g}, {values[1]:.4g}]"

    rows = [[str(r["round"]), str(len(r["run_ids"])), f"{r['target_sd']:.4g}", interval(r["target_interval"]),
             f"{r['flops_spent']:.3g}"] for r in summary["rounds"]]
    rows.append(["final", "", f"{summary['final_sd']:.4g}", interval(summary["final_interval"]), ""])
    return [
        Heading(f"Adaptive design: {summary['target']}"),
        Paragraph(
            f"The initial runs, then rounds of fit -> suggest -> train (`engine suggest`'s design). Spent "
            f"{summary['flops_spent']:.3g} training FLOPs (dense costs), {100 * summary['share_of_grid']:.0f}% of the "
            f"{summary['grid_flops']:.3g} the whole candidate grid would cost. Each row is the fit before that round."
        ),
        Table(["round", "runs", "target sd", "95% interval", "FLOPs spent by rounds"], rows),
    ]


def task_floor_blocks(reference: dict[str, float], fit: FitResult) -> list[Block]:
    """The built-in synthetic image task's known losses beside the fitted irreducible loss c: the
    task is drawn from a teacher, so its floor is known, which no real data set offers."""
    c = fit.coefficients.c
    intervals = fit.intervals()
    c_text = fmt(c) + ("" if intervals is None else f" [{fmt(intervals['c'][0])}, {fmt(intervals['c'][1])}]")
    rows = [
        ["fitted c (95% bootstrap interval)", c_text],
        ["teacher's loss on the validation set (the floor of the fitted losses)", fmt(reference["eval_floor"])],
        ["teacher's expected loss (the task's floor)", fmt(reference["floor"])],
        ["best input-blind predictor (class rates)", fmt(reference["trivial"])],
    ]
    floor = reference["eval_floor"]
    low, high = (c, c) if intervals is None else intervals["c"]
    if high < floor:
        verdict = (f"Here c lies below the floor ({fmt(floor)}), interval and all: the law's form, fitted to these "
                   "runs, extrapolates to a loss no model can reach, so c is a parameter of the fit here, not the "
                   "floor itself.")
    elif low > floor:
        verdict = f"Here c lies above the floor ({fmt(floor)}) by {fmt(low - floor)} or more."
    else:
        verdict = f"Here the interval of c contains the floor ({fmt(floor)})."
    return [
        Heading("Irreducible loss: fitted c against the task's known floor"),
        Paragraph(
            "The built-in synthetic images are labelled by a fixed random teacher with Bernoulli label noise, so "
            "the irreducible loss is known: the teacher's own cross-entropy (summed over classes, as the ViT loss). "
            "The law's c is the loss of an infinite model trained on infinite data; it lies at or above the floor "
            "(a model family that cannot express the teacher exactly stops short of it) and is extrapolated "
            "far beyond the runs, so read it with its interval. " + verdict
        ),
        Table(["quantity", "loss"], rows),
    ]
