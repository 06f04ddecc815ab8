"""The `engine` command line: a thin dispatcher over engine/cli/*.

Every subcommand module exposes `register(subparsers)` (adds its parser) and `run(args) -> int`
(the exit code). User errors are raised as `UserError` and printed as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from engine import __version__
from engine.errors import UserError
from spec.issues import SpecError

# Subcommands, in the order `engine --help` lists them.
COMMANDS = ("validate", "plan", "schema", "run", "inspect", "fit", "predict", "report", "suggest", "data")


class BrokenCommand(Exception):
    """A subcommand's module failed to import: the installation is broken, which is never silent."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine",
        description="Sparse scaling-law experiments: validate, plan, train, fit and report.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"engine.cli.{name}")
        except ImportError as error:
            raise BrokenCommand(f"the `{name}` command cannot be loaded ({error.__class__.__name__}: {error}); "
                                "reinstall the engine (pip install -e .)") from error
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except BrokenCommand as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
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
        if args.command == "run":  # runs keep their last checkpoint (and say which): the same command resumes
            command = shlex.join(["engine", *(sys.argv[1:] if argv is None else argv)])
            print(f"to resume, run the same command again:\n  {command}", file=sys.stderr)
        return 130
