"""The `engine` command line: a thin dispatcher over engine/cli/*.

Every subcommand module exposes `register(subparsers)` (adds its parser) and `run(args) -> int`
(the exit code). User errors are raised as `UserError` and printed as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from engine.errors import UserError
from spec.issues import SpecError

# Subcommands, in the order `engine --help` lists them.
COMMANDS = ("validate", "plan", "schema", "run", "inspect", "fit", "predict", "report", "data")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine",
        description="Sparse scaling-law experiments: validate, plan, train, fit and report.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"engine.cli.{name}")
        except ModuleNotFoundError as missing:
            if missing.name != f"engine.cli.{name}":
                raise
            continue  # a subcommand not built yet is simply not offered
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except SpecError as error:  # every problem of the spec, one `file:line:col: message` each
        for issue in error.issues:
            print(issue, file=sys.stderr)
        return 1
    except BrokenPipeError:  # `engine plan ... | head`: the reader left, nothing more to say
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
