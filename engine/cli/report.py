"""`engine report DIR`: render the fit report from a fit directory (fit.json + the results it came
from) or a sweep output directory (results.csv; fitted with default settings if no fit exists)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.errors import UserError
from engine.fit.fitting import fit_law
from engine.fit.io import read_table
from engine.cli.fit import add_columns_option, column_map
from engine.fit.result import FitSettings, fit_result_from_json


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
    fit_json = next((p for p in (directory / "fit.json", directory / "report" / "fit.json") if p.is_file()), None)
    if fit_json is not None:
        try:
            document = json.loads(fit_json.read_text())
        except json.JSONDecodeError as error:
            raise UserError(f"{fit_json}: not valid JSON ({error.msg})") from error
        source = Path(document.get("provenance", {}).get("data_source", ""))
        if not source.is_absolute():
            candidates = [Path.cwd() / source, fit_json.parent / source, directory / "results.csv"]
        else:
            candidates = [source, directory / "results.csv"]
        results = next((p for p in candidates if p.is_file()), None)
        if results is None:
            raise UserError(f"{fit_json}: its results table {source} is not found")
        columns = document.get("settings", {}).get("columns") or {}
        table = read_table(results, _agreeing(columns, column_map(args.columns), fit_json))
        result = fit_result_from_json(document)
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


def _agreeing(fitted: dict[str, str], given: dict[str, str], fit_json: Path) -> dict[str, str]:
    """The fit's column map with `--columns` added; a column the fit read from elsewhere is an error."""
    for canonical, source in given.items():
        if fitted.get(canonical, source) != source:
            raise UserError(f"--columns: {canonical}={source}, but {fit_json} was fitted with "
                            f"{canonical}={fitted[canonical]}", exit_code=2)
    return {**fitted, **given}
