"""`engine validate PATH... [--set PATH=VALUE]`: check spec files, one line per problem.

Directories are searched recursively for *.yaml and *.yml. Files under a `bases/` directory are
partial specs meant to be extended: their syntax, keys and types are checked, completeness is not.
Exit 0 when every file is valid, 1 otherwise. Data files named in a spec are not checked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spec.issues import Issue, Origin
from spec.loading import check_file

SPEC_SUFFIXES = (".yaml", ".yml")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check experiment specs (files or directories)",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="spec files or directories")
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


def run(args: argparse.Namespace) -> int:
    issues: list[Issue] = []
    checked = valid = 0
    for path in args.paths:
        files, problems = spec_files(path)
        issues += problems
        for file in files:
            found = check_file(file, args.overrides)
            checked += 1
            valid += not found
            issues += found
    for issue in issues:
        print(issue)
    summary = f"{checked} spec file{'' if checked == 1 else 's'} checked, {valid} valid"
    if issues:
        summary += f", {len(issues)} error{'' if len(issues) == 1 else 's'}"
    print(summary)
    return 1 if issues else 0
