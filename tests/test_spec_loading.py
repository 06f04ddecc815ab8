"""Loading a spec: extends, --set overrides, sweep expansion into validated concrete runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from spec.issues import SpecError
from spec.loading import check_file, load_experiment
from spec.sparsity import OneshotSchedule

GOOD = Path(__file__).parent / "fixtures" / "specs" / "good"


def issue_lines(path: Path, overrides: list[str]) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_experiment(path, overrides)
    return [str(issue) for issue in caught.value.issues]


def test_extends_merges_child_over_base() -> None:
    experiment = load_experiment(GOOD / "extends_child.yaml")
    spec = experiment.points[0].spec
    assert spec.model.kind == "vit" and spec.model.base.image_size == 8  # from the base
    assert spec.optimizer.kind == "adafactor"  # from the base ...
    assert spec.optimizer.learning_rate.kind == "constant"  # ... with the child's schedule
    assert spec.data.batch_size == 8 and spec.extends == "bases/tiny_vit.yaml"


def test_extends_sweep_expansion() -> None:
    experiment = load_experiment(GOOD / "extends_child.yaml")
    assert len(experiment.points) == 3 * 2 * 2
    last = experiment.points[-1]
    assert last.coordinates == {
        "model.nonzeros": 4000,
        "data.steps": 60,
        "sparsity.level": 0.75,
        "sparsity.schedule": {"kind": "oneshot", "at": 0.5},
    }
    assert last.spec.model.nonzeros == 4000 and last.spec.data.steps == 60
    assert isinstance(last.spec.sparsity.schedule, OneshotSchedule)
    assert last.spec.sweep.grid == {}  # a concrete run carries no sweep


def test_child_sweep_replaces_the_bases_sweep(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(
        "name: grandchild\nextends: "
        + str(GOOD / "extends_child.yaml")
        + "\nsweep:\n  grid:\n    sparsity.level: [0.25]\n"
    )
    experiment = load_experiment(tmp_path / "child.yaml")
    assert [point.coordinates for point in experiment.points] == [{"sparsity.level": 0.25}]


def test_override_replaces_value_before_validation() -> None:
    experiment = load_experiment(GOOD / "minimal.yaml", ["model.base.layers=4", "optimizer.learning_rate.value=1e-2"])
    spec = experiment.points[0].spec
    assert spec.model.base.layers == 4
    assert spec.optimizer.learning_rate.value == 0.01  # YAML 1.2: 1e-2 is a float


def test_override_of_a_mapping_and_of_a_sweep_axis() -> None:
    experiment = load_experiment(
        GOOD / "extends_child.yaml",
        ["sweep.grid.model.nonzeros=[1000]", "sparsity.pattern={kind: unstructured}", "sweep.zip={}"],
    )
    assert [point.coordinates for point in experiment.points] == [
        {"model.nonzeros": 1000, "data.steps": 30},
        {"model.nonzeros": 1000, "data.steps": 60},
    ]


def test_override_errors_name_the_override() -> None:
    assert issue_lines(GOOD / "minimal.yaml", ["model.base.layers=x"]) == [
        "--set model.base.layers=x: model.base.layers: expected a valid integer, got the text 'x'"
    ]
    assert issue_lines(GOOD / "minimal.yaml", ["model.bse.layers=4"]) == [
        "--set model.bse.layers=4: model: unknown key `bse` (did you mean `base`?)"
    ]
    assert issue_lines(GOOD / "minimal.yaml", ["seed"]) == [
        "--set seed: expected PATH=VALUE, e.g. --set data.steps=100"
    ]
    assert issue_lines(GOOD / "minimal.yaml", ["name.x=1"]) == [
        "--set name.x=1: cannot set name.x: `name` is not a mapping"
    ]


def test_sweep_point_error_names_the_point(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text((GOOD / "minimal.yaml").read_text() + "sweep:\n  grid:\n    data.steps: [10, -1]\n")
    assert issue_lines(path, []) == [
        f"{path}:19:22: data.steps: expected greater than 0, got -1 (sweep point data.steps=-1)"
    ]


def test_error_in_every_point_is_reported_once_without_coordinates(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    text = (GOOD / "minimal.yaml").read_text().replace("batch_size: 4", "batch_size: four")
    path.write_text(text + "sweep:\n  grid:\n    data.steps: [10, 20, 30]\n")
    assert issue_lines(path, []) == [f"{path}:15:15: data.batch_size: expected a valid integer, got the text 'four'"]


def test_only_run_sections_can_be_swept(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text((GOOD / "minimal.yaml").read_text() + "sweep:\n  grid:\n    run.keep: [1, 2]\n")
    [line] = issue_lines(path, [])
    assert line.startswith(f"{path}:19:5: sweep.grid: `run.keep` cannot be swept")


def test_a_base_is_checked_as_a_partial_spec(tmp_path: Path) -> None:
    assert check_file(GOOD / "bases" / "tiny_vit.yaml") == []
    broken = tmp_path / "bases" / "broken.yaml"
    broken.parent.mkdir()
    broken.write_text("model:\n  kind: vit\n  base: {layers: two}\noptimiser: {}\n")
    assert [str(issue) for issue in check_file(broken)] == [
        f"{broken}:3:18: model.base.layers: expected a valid integer, got the text 'two'",
        f"{broken}:4:1: unknown key `optimiser` (did you mean `optimizer`?)",
    ]


def test_run_selectors_name_known_fields(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        (GOOD / "minimal.yaml").read_text()
        + "init:\n  kind: pretrained\n  source:\n    kind: run\n    spec: other.yaml\n"
        + "    where: {model.nonzeros: 100, data.stps: 10}\n"
    )
    assert issue_lines(path, []) == [f"{path}:22:34: init.source.where: unknown field `stps` in `data` (did you mean `steps`?)"]
