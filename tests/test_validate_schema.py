"""The published JSON Schema is fit for editors: a stable `$id`, a title, and examples on the main fields."""

from __future__ import annotations

import json
from pathlib import Path

from engine.cli.schema import SCHEMA_ID, SCHEMA_TITLE, schema_text

ROOT = Path(__file__).resolve().parent.parent


def test_schema_identity() -> None:
    schema = json.loads(schema_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA_ID.startswith("https://") and SCHEMA_ID.endswith("/experiment.schema.json")
    assert (schema["$id"], schema["title"]) == (SCHEMA_ID, SCHEMA_TITLE)


def test_main_fields_have_descriptions_and_examples() -> None:
    schema = json.loads(schema_text())
    definitions = schema["$defs"]
    main_fields = [
        schema["properties"]["name"],
        definitions["VitModel"]["properties"]["nonzeros"],
        definitions["VitModel"]["properties"]["d_model"],
        definitions["SparsitySpec"]["properties"]["level"],
        definitions["SparsitySpec"]["properties"]["pattern"],
        definitions["DataSpec"]["properties"]["steps"],
        definitions["DataSpec"]["properties"]["batch_size"],
        definitions["SweepSpec"]["properties"]["grid"],
    ]
    for field in main_fields:
        assert field["description"] and field["examples"], field


def test_checked_in_schema_is_what_the_models_give() -> None:
    assert (ROOT / "schemas" / "experiment.schema.json").read_text() == schema_text()
