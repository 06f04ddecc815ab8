"""`engine report DIR`: render the fit report from a fit directory (fit.json + the results it came
from) or a sweep output directory (results.csv; fitted with default settings if no fit exists)."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.fit import add_columns_option, column_map
from engine.errors import UserError
from engine.fit.fitting import fit_law
from engine.fit.io import read_table
from engine.fit.result import FitSettings, find_fit_json, load_fit_with_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="render the fit report (Markdown + HTML) of a fit or sweep directory")
    parser.add_argument("directory", type=Path, help="a fit directory (fit.json) or runs/<name>/ (results.csv)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the fit directory, or DIR/report)")
    add_columns_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.report import write_report

    directory: Path = args.directory
    if not directory.is_dir():
        raise UserError(f"{directory}: not a directory")
    fit_json = find_fit_json(directory)
    if fit_json is not None:
        result, table = load_fit_with_table(fit_json, column_map(args.columns))
        out_dir = args.out or fit_json.parent
        write_report(out_dir, result, table, write_fit_json=out_dir != fit_json.parent)
    else:
        results = directory / "results.csv"
        if not results.is_file():
            raise UserError(f"{directory}: neither fit.json nor results.csv found")
        columns = column_map(args.columns)
        table = read_table(results, columns)
        result = fit_law(table, FitSettings(columns=columns or None))
        out_dir = args.out or directory / "report"
        write_report(out_dir, result, table)
    print(f"wrote {out_dir / 'index.md'} and {out_dir / 'index.html'}")
    return 0
