"""`sweep:` grid (product) and zip axes over dotted field paths (docs/spec-reference.md).

Points = product(grid axes) x zip rows, in the order written (the last grid axis varies fastest).
Every point is the spec with the point's values set at their paths, validated as a concrete run.
Which paths exist is checked against the models in spec/paths.py; expansion is in spec/loading.py.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any

from pydantic import Field, model_validator

from spec.common import SpecModel, cross_field_error

# Sections whose fields may be swept: what a run computes. Analysis, run policy and the name
# describe the whole experiment, not one run.
SWEEPABLE_ROOTS = ("seed", "model", "sparsity", "init", "optimizer", "data")

Axis = Annotated[list[Any], Field(min_length=1)]


class SweepSpec(SpecModel):
    """The runs of an experiment: every combination of the grid axes, times the zipped rows."""

    grid: dict[str, Axis] = Field(
        default_factory=dict,
        description=(
            "Dotted field path -> list of values; every combination is a run, "
            "e.g. {model.nonzeros: [5000, 10000], sparsity.level: [0, 0.5]}."
        ),
        examples=[{"model.nonzeros": [5000, 10000], "sparsity.level": [0.0, 0.5], "data.steps": [150, 300]}],
    )
    zip: dict[str, Axis] = Field(
        default_factory=dict,
        description=(
            "Dotted field path -> list of values, all lists of equal length; the i-th values go "
            "together, e.g. {sparsity.pattern: [{kind: nm, n: 2, m: 4}, ...], sparsity.level: [0.5, ...]}."
        ),
        examples=[{"sparsity.pattern": [{"kind": "nm", "n": 2, "m": 4}, {"kind": "nm", "n": 1, "m": 4}],
                   "sparsity.level": [0.5, 0.75]}],
    )

    @model_validator(mode="after")
    def _axes_consistent(self) -> SweepSpec:
        lengths = {path: len(values) for path, values in self.zip.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{path}: {n}" for path, n in lengths.items())
            raise cross_field_error(f"zip lists must have equal lengths, got {listed}", at="zip")
        for path in self.grid:
            if path in self.zip:
                raise cross_field_error(f"`{path}` is both a grid and a zip axis", at="zip")
        return self

    def point_indices(self) -> list[dict[str, int]]:
        """Each point as axis path -> index into that axis's list, in expansion order."""
        grid = [range(len(values)) for values in self.grid.values()]
        grid_rows = [dict(zip(self.grid, indices, strict=True)) for indices in itertools.product(*grid)]
        rows = len(next(iter(self.zip.values()))) if self.zip else 1
        zip_rows = [dict.fromkeys(self.zip, row) for row in range(rows)]
        return [grid_row | zip_row for grid_row in grid_rows for zip_row in zip_rows]

    def coordinates(self, indices: dict[str, int]) -> dict[str, Any]:
        """A point's coordinates: axis path -> value as written in the sweep."""
        axes = self.grid | self.zip
        return {path: axes[path][index] for path, index in indices.items()}
