"""`engine schema [--check] [--output PATH]`: the JSON Schema of experiment specs.

Written from the pydantic models (field descriptions become its documentation) so editors
complete and check specs through their `# yaml-language-server: $schema=...` line. `--check`
exits 1 when the file on disk differs from what the models give (a stale checked-in schema).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from engine.errors import UserError
from spec.experiment import ExperimentSpec

DEFAULT_OUTPUT = Path("schemas") / "experiment.schema.json"
# A stable identifier naming the project, not a location: editors are pointed at the file itself
# (a `# yaml-language-server: $schema=<path or URL>` line, or their YAML plugin's settings).
SCHEMA_ID = "https://sparse-scaling-engine.dev/schemas/experiment.schema.json"
SCHEMA_TITLE = "sparse-scaling-engine experiment spec"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schema", help="write (or --check) schemas/experiment.schema.json", description=__doc__.split("\n\n", 1)[1]
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale instead of writing it")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT,
        help=f"schema file, relative to the working directory (default: {DEFAULT_OUTPUT.as_posix()})",
    )
    parser.set_defaults(handler=run)


def experiment_schema() -> dict[str, Any]:
    schema = ExperimentSpec.model_json_schema(mode="validation")
    header = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, "title": SCHEMA_TITLE}
    return header | {key: value for key, value in schema.items() if key != "title"}


def schema_text() -> str:
    return json.dumps(experiment_schema(), indent=2, ensure_ascii=False) + "\n"


def run(args: argparse.Namespace) -> int:
    expected = schema_text()
    if args.check:
        try:
            current = args.output.read_text()
        except OSError as error:
            raise UserError(f"{args.output}: cannot read ({error.strerror}); run `engine schema` to write it") from None
        if current != expected:
            print(f"{args.output}: stale, regenerate it with `engine schema`")
            return 1
        print(f"{args.output}: up to date")
        return 0
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(expected)
    except OSError as error:
        raise UserError(f"{args.output}: cannot write ({error.strerror})") from None
    print(f"wrote {args.output}")
    return 0
