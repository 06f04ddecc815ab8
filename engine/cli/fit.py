"""`engine fit RESULTS`: fit the sparse scaling law to a results table and write fit.json + report."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.errors import UserError
from engine.fit.fitting import fit_law
from engine.fit.io import parse_column_map, read_table
from engine.fit.law import COEFFICIENT_NAMES
from engine.fit.result import FitResult, FitSettings, load_coefficients
from spec.analysis import IsoflopSettings

ISOFLOP_DEFAULTS = IsoflopSettings()  # `--isoflop` analyses as a spec's `analysis.isoflop: {}` does


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fit", help="fit L(S, N, D) to a results table (CSV or JSONL)",
        description="Fit the sparse scaling law (eq. 3) to a results table with canonical columns "
                    "sparsity, nonzeros, data, loss; writes DIR/fit.json and the report.",
    )
    parser.add_argument("results", type=Path, help="results table (.csv or .jsonl)")
    add_columns_option(parser)
    # Defaults are the spec's `analysis.fit` defaults (FitSettings): one place for both.
    defaults = FitSettings()
    parser.add_argument("--huber-delta", type=float, default=defaults.huber_delta,
                        help=f"Huber delta (default {defaults.huber_delta:g}; "
                             "the paper's ViT fit: 0.01 with --no-log-loss)")
    parser.add_argument("--log-loss", action=argparse.BooleanOptionalAction, default=defaults.log_loss,
                        help="Huber loss on log L, or on L with --no-log-loss "
                             f"(default: {'log L' if defaults.log_loss else 'L'})")
    parser.add_argument("--starts", type=int, default=defaults.starts, help=f"random starts (default {defaults.starts})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help=f"seed of the starts and the bootstrap (default {defaults.seed})")
    parser.add_argument("--bootstrap", type=int, default=defaults.bootstrap,
                        help=f"bootstrap resamples (default {defaults.bootstrap}; 0: none)")
    parser.add_argument("--holdout", default=defaults.holdout,
                        help="runs to hold out for the check: largest-nonzeros, none, or COLUMN OP NUMBER[,...] "
                             f"(default {defaults.holdout})")
    parser.add_argument("--isoflop", action="store_true",
                        help="also the IsoFLOP analysis (approach 2): runs sharing a budget N x D within 2%%, "
                             "at least 3 sizes each")
    parser.add_argument("--freeze-dense", type=Path, default=None, metavar="FIT.json",
                        help="fit only a_S, b_S, c_S; take b_N, a_D, b_D, c from this fit (n:m refit)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: fit/ next to RESULTS)")
    parser.add_argument("--no-report", action="store_true", help="write fit.json only")
    parser.set_defaults(handler=run)


def add_columns_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--columns", action="append", default=None, metavar="CANONICAL=YOURS[,...]",
                        help="map canonical names to your table's: loss=val-loss,data=tokens (repeatable; merged)")


def column_map(values: list[str] | None) -> dict[str, str]:
    """Every `--columns` given, merged into one map; one canonical column mapped to two different
    columns (in one option or across several) is a usage error rather than last-one-wins."""
    merged: dict[str, str] = {}
    for value in values or []:
        for item in value.split(","):
            for canonical, source in parse_column_map(item).items():
                if merged.get(canonical, source) != source:
                    raise UserError(f"--columns: {canonical} is mapped to both {merged[canonical]!r} and {source!r}",
                                    exit_code=2)
                merged[canonical] = source
    return merged


def summary_lines(result: FitResult) -> list[str]:
    intervals = result.intervals()
    unclear = result.poorly_determined()
    lines = [f"{'coefficient':<12} {'value':>16} {'95% interval':>28}"]
    for name in COEFFICIENT_NAMES:
        value = getattr(result.coefficients, name)
        interval = "" if intervals is None else f"[{intervals[name][0]:.4g}, {intervals[name][1]:.4g}]"
        flag = "  not pinned down" if name in unclear else ""
        if name not in result.settings.free_coefficients():
            flag = "  frozen"
        lines.append(f"{name:<12} {value:>16.6g} {interval:>28}{flag}")
    d = result.diagnostics
    lines.append(f"objective (mean Huber): {result.objective:.6g}   rows: {result.rows_used}")
    lines.append(f"convergence: {d.verdict}; {d.agreeing_starts}/{d.total_starts} starts agree; "
                 f"gradient norm {d.best_gradient_norm:.2e}")
    if result.gains is None:
        lines.append("gains: not estimable (no sparse run in the fitted data)")
    else:
        lines.append("gains: " + ", ".join(f"S={s:g}: {g:.3f}x" for s, g in result.gains.items()))
    if result.holdout is not None:
        lines.append(f"held out ({result.holdout.expression}, {len(result.holdout.rows)} runs): "
                     f"mean |error| {100 * result.holdout.mean_absolute_relative_error:.2f}%")
    return lines


def run(args: argparse.Namespace) -> int:
    columns = column_map(args.columns)
    table = read_table(args.results, columns)
    frozen = None
    if args.freeze_dense is not None:
        frozen = load_coefficients(args.freeze_dense).coefficients
    settings = FitSettings(
        huber_delta=args.huber_delta, log_loss=args.log_loss, starts=args.starts, seed=args.seed,
        bootstrap=args.bootstrap, holdout=args.holdout, freeze_dense=frozen,
        freeze_dense_source=None if args.freeze_dense is None else str(args.freeze_dense),
        columns=columns or None,
        isoflop=(ISOFLOP_DEFAULTS.budget_tolerance, ISOFLOP_DEFAULTS.min_sizes) if args.isoflop else None,
    )
    result = fit_law(table, settings)
    out_dir = args.out if args.out is not None else args.results.parent / "fit"
    try:
        if args.no_report:
            from engine.fit.findings import data_unit, derive_findings, flops_per_param_example

            findings = derive_findings(result, table, data_unit(table), flops_per_param_example(table))
            result.write(out_dir / "fit.json", findings.to_json())
        else:
            from engine.report import write_report

            write_report(out_dir, result, table)
    except OSError as error:
        raise UserError(f"{out_dir}: cannot write ({error.strerror or error})") from error
    print("\n".join(summary_lines(result)))
    print(f"wrote {out_dir / 'fit.json'}" + ("" if args.no_report else f" and {out_dir / 'index.html'}"))
    return 0 if result.diagnostics.converged else 3
