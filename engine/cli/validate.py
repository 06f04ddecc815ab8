"""`engine validate PATH... [--format text|json|github] [--plan] [--set PATH=VALUE]`: check specs.

Directories are searched recursively for *.yaml and *.yml. Files under a `bases/` directory are
partial specs meant to be extended: their syntax, keys and types are checked, completeness is not.
Data files named in a spec are not checked. With --plan, each valid spec's sweep is also expanded
into runs and checked for what only expansion reveals (unreachable sizes, n:m groups that do not
tile a layer, duplicate runs, pretrained sources that select no run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.validate_format import FORMATS, render
from engine.planning.checks import plan_issues
from spec.issues import Issue, Origin
from spec.loading import check_file, is_base

SPEC_SUFFIXES = (".yaml", ".yml")

EXIT_CODES = """\
exit codes:
  0  every spec is valid
  1  at least one spec is invalid (each problem is reported)
  2  bad usage, or an internal error (reported in one line)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check experiment specs (files or directories)",
        description=__doc__.split("\n\n", 1)[1],
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="spec files or directories")
    parser.add_argument(
        "--format", dest="output_format", choices=FORMATS, default="text",
        help="text: one `file:line:col: message` per problem and a summary (default); json: a list of "
             "{file, line, column, path, message, suggestion, override}; github: GitHub Actions "
             "::error annotations",
    )
    parser.add_argument(
        "--plan", action="store_true",
        help="also expand each spec's sweep into runs and check what only that reveals",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
        help="override a field before validation, e.g. --set model.base.layers=4 (repeatable)",
    )
    parser.set_defaults(handler=run)


def spec_files(path: Path) -> tuple[list[Path], list[Issue]]:
    """The spec files a command-line path stands for, or why there are none."""
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix in SPEC_SUFFIXES and p.is_file())
        if not found:
            return [], [Issue(Origin(str(path)), "no *.yaml or *.yml spec files in this directory")]
        return found, []
    if not path.exists():
        return [], [Issue(Origin(str(path)), "no such file or directory")]
    return [path], []


def check_paths(paths: list[Path], overrides: list[str], with_plan: bool) -> tuple[list[Issue], int, int]:
    """Every problem of the specs the paths stand for, the number of files checked and how many
    of them are valid."""
    issues: list[Issue] = []
    checked = valid = 0
    for path in paths:
        files, problems = spec_files(path)
        issues += problems
        for file in files:
            found = check_file(file, overrides)
            if not found and with_plan and not is_base(file):
                found = plan_issues(file, overrides)
            checked += 1
            valid += not found
            issues += found
    return issues, checked, valid


def summary(checked: int, valid: int, errors: int) -> str:
    text = f"{checked} spec file{'' if checked == 1 else 's'} checked, {valid} valid"
    if errors:
        text += f", {errors} error{'' if errors == 1 else 's'}"
    return text


def run(args: argparse.Namespace) -> int:
    try:
        issues, checked, valid = check_paths(args.paths, args.overrides, args.plan)
    except Exception as error:  # a bug, not a bad spec: one line and exit 2, never a traceback
        print(f"error: internal error in engine validate ({type(error).__name__}: {error})", file=sys.stderr)
        return 2
    report = render(issues, args.output_format)
    if report:
        print(report)
    # JSON readers get the list alone on stdout; the summary goes to stderr for them.
    print(summary(checked, valid, len(issues)), file=sys.stderr if args.output_format == "json" else sys.stdout)
    return 1 if issues else 0
