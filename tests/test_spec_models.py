"""The spec models: closed, described, and checking the rules of docs/spec-reference.md."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from spec.experiment import ExperimentSpec
from spec.paths import Level, level_of
from spec.sparsity import SparsitySpec
from spec.sweep import SweepSpec


def all_models(root: type[BaseModel]) -> set[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    todo = [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for field in model.model_fields.values():
            todo += list(_models_in(field.annotation))
    return seen


def _models_in(annotation: Any) -> set[type[BaseModel]]:
    from typing import get_args

    found = set(level_of(annotation, None).models)
    for argument in get_args(annotation):
        found |= _models_in(argument)
    return found


def test_every_field_of_every_model_is_described_and_closed() -> None:
    models = all_models(ExperimentSpec)
    assert len(models) > 30  # the walk really reaches the nested variants
    for model in models:
        assert model.model_config.get("extra") == "forbid", model
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_spec_package_does_not_import_jax() -> None:
    import subprocess
    import sys

    code = "import sys, spec.loading, spec.experiment; print('jax' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def sparsity(**fields: Any) -> SparsitySpec:
    return SparsitySpec.model_validate(fields)


def test_nm_level_must_be_one_minus_n_over_m() -> None:
    assert sparsity(level=0.5, pattern={"kind": "nm", "n": 2, "m": 4}).level == 0.5
    with pytest.raises(ValidationError, match="1 - n/m = 0.75"):
        sparsity(level=0.5, pattern={"kind": "nm", "n": 1, "m": 4})


def test_nm_needs_n_below_m() -> None:
    with pytest.raises(ValidationError, match="n must be smaller than m"):
        sparsity(level=0.0, pattern={"kind": "nm", "n": 4, "m": 4})


def test_dense_schedule_needs_level_zero() -> None:
    assert sparsity(level=0.0, schedule={"kind": "dense"}).level == 0.0
    with pytest.raises(ValidationError, match="level must be 0"):
        sparsity(level=0.5, schedule={"kind": "dense"})


def test_gmp_start_before_end() -> None:
    with pytest.raises(ValidationError, match="start must be before end"):
        sparsity(level=0.5, schedule={"kind": "gmp", "start": 0.75, "end": 0.25})


def test_pattern_string_suggests_the_mapping() -> None:
    with pytest.raises(ValidationError, match=r"write \{kind: nm, n: 1, m: 8\}"):
        sparsity(level=0.875, pattern="1:8")


def test_level_is_a_fraction() -> None:
    for bad in (1.0, -0.1, "0.5"):  # a quoted "0.5" stays text (strict types)
        with pytest.raises(ValidationError):
            sparsity(level=bad)


def test_models_are_frozen() -> None:
    spec = sparsity(level=0.5)
    with pytest.raises(ValidationError):
        spec.level = 0.75  # type: ignore[misc]


def test_sweep_expansion_counts_and_order() -> None:
    sweep = SweepSpec.model_validate(
        {"grid": {"a": [1, 2, 3], "b": ["x", "y"]}, "zip": {"c": [10, 20], "d": [0.1, 0.2]}}
    )
    points = [sweep.coordinates(indices) for indices in sweep.point_indices()]
    assert len(points) == 3 * 2 * 2
    assert points[0] == {"a": 1, "b": "x", "c": 10, "d": 0.1}
    assert points[1] == {"a": 1, "b": "x", "c": 20, "d": 0.2}  # zip rows vary fastest
    assert points[2] == {"a": 1, "b": "y", "c": 10, "d": 0.1}
    assert SweepSpec().point_indices() == [{}]  # no sweep: one run


def test_sweep_zip_lengths_must_match_and_axes_not_repeat() -> None:
    with pytest.raises(ValidationError, match="equal lengths"):
        SweepSpec.model_validate({"zip": {"a": [1, 2], "b": [1]}})
    with pytest.raises(ValidationError, match="both a grid and a zip axis"):
        SweepSpec.model_validate({"grid": {"a": [1]}, "zip": {"a": [2]}})
    with pytest.raises(ValidationError):
        SweepSpec.model_validate({"grid": {"a": []}})


def test_level_of_narrows_discriminated_unions_by_kind() -> None:
    annotation = ExperimentSpec.model_fields["optimizer"].annotation
    assert {m.__name__ for m in level_of(annotation, {"kind": "adamw"}).models} == {"AdamwOptimizer"}
    assert len(level_of(annotation, None).models) == 2
    assert level_of(dict[str, int], None) == Level(open=True)


def test_no_spec_model_takes_a_non_finite_number() -> None:
    """`.inf` / `.nan` are refused wherever a number is meant (allow_inf_nan=False on every model)."""
    assert all(model.model_config.get("allow_inf_nan") is False for model in all_models(ExperimentSpec))
    from spec.analysis import ExtrapolationPoint

    for value in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ValidationError, match="finite number"):
            ExtrapolationPoint.model_validate({"sparsity": 0.5, "nonzeros": value, "data": 1e9})
        with pytest.raises(ValidationError, match="finite number"):
            SparsitySpec.model_validate({"level": value})


@pytest.mark.parametrize("model, message", [
    ({"nonzeros": 1e200}, "less than or equal to 1000000000000000"),
    ({"d_model": 65540, "width_multiple": 4}, "less than or equal to 65536"),
])
def test_model_sizes_are_bounded(model: dict, message: str) -> None:
    from spec.model import VitModel

    base = {"layers": 1, "num_heads": 2, "mlp_ratio": 2.0, "image_size": 8, "patch_size": 4, "channels": 3, "num_classes": 4}
    with pytest.raises(ValidationError, match=message):
        VitModel.model_validate({"kind": "vit", "base": base, **model})
