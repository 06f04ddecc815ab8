"""The base class of every spec model and the one way a cross-field check reports an error."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

# Error type of checks that relate several fields. Partial specs (extends bases) skip them, and the
# error locator appends `at` (a dotted path below the checked model) to point at the culprit.
CROSS_FIELD = "cross_field"


class SpecModel(BaseModel):
    """Closed, immutable, strictly typed: unknown keys are errors, YAML's own types are kept
    (a quoted "4" is not an integer), and nothing changes after loading. No field takes an
    infinite or NaN number (YAML's `.inf`, `.nan`): every number a spec gives is meant finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def cross_field_error(message: str, at: str | None = None) -> PydanticCustomError:
    """An error from a check that relates fields; `at` names the field to point at."""
    return PydanticCustomError(CROSS_FIELD, message, {"at": at} if at else {})
