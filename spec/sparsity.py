"""`sparsity:` how much, in what pattern, where, and on which schedule (docs/spec-reference.md).

The level S is the final fraction of zeros in every sparsified tensor. An n:m pattern keeps n of
every m consecutive weights along a kernel's fan_in, so its level is not free: 1 - n/m. It may be
left out (then it is derived, so a sweep can grid over patterns) or written, and must then agree.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from spec.common import SpecModel, cross_field_error


class UnstructuredPattern(SpecModel):
    """Any weight may be pruned: per tensor, the smallest magnitudes go."""

    kind: Literal["unstructured"] = Field(description="Pattern type.")


class NmPattern(SpecModel):
    """At most n non-zeros in each group of m consecutive weights along fan_in (axis 0), pruned
    gradually with the paper's Algorithm 1."""

    kind: Literal["nm"] = Field(description="Pattern type.")
    n: int = Field(gt=0, description="Non-zeros kept per group.")
    m: int = Field(gt=1, description="Group size; must divide every sparsified kernel's fan_in.")

    @model_validator(mode="after")
    def _n_below_m(self) -> NmPattern:
        if self.n >= self.m:
            raise cross_field_error(f"n must be smaller than m, got n={self.n}, m={self.m}", at="n")
        return self


Pattern = Annotated[UnstructuredPattern | NmPattern, Field(discriminator="kind")]


class GmpSchedule(SpecModel):
    """Gradual magnitude pruning with the cubic schedule s(t) = S - S (1 - t)^3 (Zhu & Gupta),
    t running from 0 at `start` to 1 at `end`, masks updated every `interval` steps. The paper
    uses start 0.25, end 0.75, interval 100."""

    kind: Literal["gmp"] = Field(description="Schedule type.")
    start: float = Field(default=0.25, ge=0, le=1, description="Fraction of the run at which pruning begins.")
    end: float = Field(default=0.75, ge=0, le=1, description="Fraction of the run at which the final level is reached.")
    interval: int = Field(default=100, gt=0, description="Steps between mask updates.")

    @model_validator(mode="after")
    def _start_before_end(self) -> GmpSchedule:
        if self.start >= self.end:
            raise cross_field_error(f"start must be before end, got start={self.start}, end={self.end}", at="start")
        return self


class OneshotSchedule(SpecModel):
    """Prune to the final level in one step, then train on with the mask fixed."""

    kind: Literal["oneshot"] = Field(description="Schedule type.")
    at: float = Field(ge=0, lt=1, description="Fraction of the run at which the model is pruned.")


class DenseSchedule(SpecModel):
    """No pruning at all; the level must be 0."""

    kind: Literal["dense"] = Field(description="Schedule type.")


Schedule = Annotated[GmpSchedule | OneshotSchedule | DenseSchedule, Field(discriminator="kind")]

_NM_STRING = re.compile(r"^\s*\d+\s*:\s*\d+\s*$")


class SparsitySpec(SpecModel):
    """Which weights are pruned, to what level, how and when."""

    level: float | None = Field(
        default=None,  # filled in from an n:m pattern, else required: never None after validation
        ge=0, lt=1,
        description=(
            "Final sparsity S in [0, 1): the fraction of zeros in each sparsified tensor. "
            "May be left out for an n:m pattern, whose level is 1 - n/m."
        ),
        examples=[0.5, 0.75, 0.875],
    )
    pattern: Pattern = Field(
        default_factory=lambda: UnstructuredPattern(kind="unstructured"),
        description="Sparsity pattern: {kind: unstructured} or {kind: nm, n: 2, m: 4}.",
        examples=[{"kind": "unstructured"}, {"kind": "nm", "n": 2, "m": 4}],
    )
    targets: Literal["backbone", "backbone_and_embeddings", "backbone_and_matched_embeddings"] = Field(
        default="backbone",
        description=(
            "Which weights are sparsified: every linear kernel of the transformer backbone (attention "
            "and MLP) at the level; (t5 only) backbone_and_embeddings also prunes the token embedding "
            "and LM head to the level and counts them in N; backbone_and_matched_embeddings prunes them "
            "as the paper does, only to the size of the smaller dense model with the backbone's "
            "non-zeros (level 1 - d'/d, about 1 - sqrt(1 - S)), and N counts the backbone only."
        ),
    )
    schedule: Schedule = Field(
        default_factory=lambda: GmpSchedule(kind="gmp"),
        description="When the sparsity appears: gmp (default 0.25 to 0.75, every 100 steps), oneshot, or dense.",
        examples=[{"kind": "gmp", "start": 0.25, "end": 0.75, "interval": 100}, {"kind": "oneshot", "at": 0.5}],
    )

    @field_validator("pattern", mode="before")
    @classmethod
    def _no_pattern_strings(cls, value: Any) -> Any:
        if isinstance(value, str):
            example = "{kind: nm, n: 2, m: 4}"
            if _NM_STRING.match(value):
                n, m = (part.strip() for part in value.split(":"))
                example = f"{{kind: nm, n: {n}, m: {m}}}"
            raise PydanticCustomError(
                "pattern_string",
                "patterns are mappings, not strings: write {example}",
                {"example": example},
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _level_from_nm_pattern(cls, data: Any) -> Any:
        """An n:m pattern fixes the level (1 - n/m), so sweeping patterns needs no level axis."""
        if isinstance(data, dict) and data.get("level") is None:
            pattern = data.get("pattern")
            if isinstance(pattern, dict) and pattern.get("kind") == "nm":
                n, m = pattern.get("n"), pattern.get("m")
                if isinstance(n, int) and isinstance(m, int) and 0 < n <= m:
                    return {**data, "level": 1 - n / m}
        return data

    @model_validator(mode="after")
    def _level_matches_pattern_and_schedule(self) -> SparsitySpec:
        if self.level is None:
            raise cross_field_error("level is required (it may be left out only for an n:m pattern)", at="level")
        dense = isinstance(self.schedule, DenseSchedule)
        if dense and self.level != 0:
            raise cross_field_error(f"a dense schedule prunes nothing, so level must be 0, got {self.level}", at="level")
        if isinstance(self.pattern, NmPattern):
            if dense:
                raise cross_field_error("a dense schedule prunes nothing; use pattern {kind: unstructured}", at="pattern")
            implied = 1 - self.pattern.n / self.pattern.m
            if not math.isclose(self.level, implied, abs_tol=1e-9):
                raise cross_field_error(
                    f"a {self.pattern.n}:{self.pattern.m} pattern ends at level 1 - n/m = {implied:g}, got level {self.level}",
                    at="level",
                )
        return self
