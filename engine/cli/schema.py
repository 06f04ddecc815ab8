"""`engine schema [--check] [--output PATH] [--reference PATH]`: the JSON Schema of experiment
specs and the spec reference rendered from it.

Written from the pydantic models (field descriptions become its documentation) so editors
complete and check specs through their `# yaml-language-server: $schema=...` line, and
docs/spec-reference.md lists every field from the same schema. With neither --output nor
--reference both files are written (or checked); with either, only the files named. `--check`
exits 1 naming each file on disk that differs from what the models give (a stale checked-in file).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from engine.errors import UserError
from spec.experiment import ExperimentSpec
from spec.reference import render_reference

DEFAULT_OUTPUT = Path("schemas") / "experiment.schema.json"
DEFAULT_REFERENCE = Path("docs") / "spec-reference.md"
# A stable identifier naming the project, not a location: editors are pointed at the file itself
# (a `# yaml-language-server: $schema=<path or URL>` line, or their YAML plugin's settings).
SCHEMA_ID = "https://sparse-scaling-engine.dev/schemas/experiment.schema.json"
SCHEMA_TITLE = "sparse-scaling-engine experiment spec"
REFERENCE_COMMAND = "engine schema"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="write (or --check) schemas/experiment.schema.json and docs/spec-reference.md",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale instead of writing it")
    parser.add_argument(
        "--output", type=Path, default=None,
        help=f"schema file, relative to the working directory (default: {DEFAULT_OUTPUT.as_posix()})",
    )
    parser.add_argument(
        "--reference", type=Path, default=None,
        help=f"Markdown spec reference, relative to the working directory (default: {DEFAULT_REFERENCE.as_posix()})",
    )
    parser.set_defaults(handler=run)


class _FactoryDefaults(GenerateJsonSchema):
    """Also shows defaults made by a `default_factory` (pydantic leaves them out), so the reference
    says e.g. that `sparsity.schedule` defaults to gmp. Factories here take no data."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return factory()  # type: ignore[call-arg]
        return schema.get("default", NoDefault)


def experiment_schema(factory_defaults: bool = False) -> dict[str, Any]:
    """The published schema; with `factory_defaults`, also the defaults pydantic leaves out."""
    generator = _FactoryDefaults if factory_defaults else GenerateJsonSchema
    schema = ExperimentSpec.model_json_schema(mode="validation", schema_generator=generator)
    header = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, "title": SCHEMA_TITLE}
    return header | {key: value for key, value in schema.items() if key != "title"}


def schema_text() -> str:
    return json.dumps(experiment_schema(), indent=2, ensure_ascii=False) + "\n"


def reference_text() -> str:
    return render_reference(experiment_schema(factory_defaults=True), REFERENCE_COMMAND)


def targets(output: Path | None, reference: Path | None) -> list[tuple[Path, str]]:
    """The files this invocation writes or checks, each with its expected text."""
    if output is None and reference is None:
        output, reference = DEFAULT_OUTPUT, DEFAULT_REFERENCE
    found: list[tuple[Path, str]] = []
    if output is not None:
        found.append((output, schema_text()))
    if reference is not None:
        found.append((reference, reference_text()))
    return found


def _is_current(path: Path, expected: str) -> bool:
    try:
        return path.read_text() == expected
    except FileNotFoundError:
        return False
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None


def run(args: argparse.Namespace) -> int:
    files = targets(args.output, args.reference)
    if args.check:
        stale = [path for path, expected in files if not _is_current(path, expected)]
        for path in stale:
            state = "stale" if path.exists() else "missing"
            print(f"{path}: {state}, regenerate it with `engine schema`")
        for path, _ in files:
            if path not in stale:
                print(f"{path}: up to date")
        return 1 if stale else 0
    for path, expected in files:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected)
        except OSError as error:
            raise UserError(f"{path}: cannot write ({error.strerror})") from None
        print(f"wrote {path}")
    return 0
