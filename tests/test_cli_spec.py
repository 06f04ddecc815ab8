"""`engine validate`, `engine plan` and `engine schema` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main
from engine.cli.schema import SCHEMA_ID, schema_text

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
FIXTURES = Path(__file__).parent / "fixtures" / "specs"
# Example specs; experiments/data/ holds data files, bases/ partial specs.
EXAMPLES = sorted(
    path for path in EXPERIMENTS.rglob("*.yaml") if not {"bases", "data"} & set(path.relative_to(EXPERIMENTS).parts)
)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_example_validates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["validate", str(EXPERIMENTS)], capsys)
    assert code == 0, out
    assert out.strip().endswith("valid") and "error" not in out


def test_examples_are_all_there() -> None:
    names = {p.relative_to(EXPERIMENTS).as_posix() for p in EXAMPLES}
    assert {
        "vit_sweep.yaml", "t5_sweep.yaml", "nm_sweep.yaml", "prune_pretrained.yaml", "adaptive_sweep.yaml",
        "paper/vit_jft.yaml", "paper/t5_c4.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.relative_to(EXPERIMENTS).as_posix())
def test_example_opens_with_schema_line_and_explains_itself(path: Path) -> None:
    lines = path.read_text().splitlines()
    prefix = "# yaml-language-server: $schema="
    assert lines[0].startswith(prefix)
    schema = (path.parent / lines[0].removeprefix(prefix)).resolve()
    assert schema == (ROOT / "schemas" / "experiment.schema.json").resolve()
    header = "\n".join(line for line in lines[1:] if line.startswith("#"))
    assert f"engine plan experiments/{path.relative_to(EXPERIMENTS).as_posix()}" in header
    assert "Expected run time" in header


def test_schema_is_current(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run_cli(["schema", "--check"], capsys)
    assert code == 0, out


def test_schema_check_fails_when_stale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "experiment.schema.json"
    stale.write_text(schema_text().replace("Experiment name", "Old name"))
    code, out, _ = run_cli(["schema", "--check", "--output", str(stale)], capsys)
    assert code == 1 and "stale" in out
    assert run_cli(["schema", "--output", str(stale)], capsys)[0] == 0
    assert run_cli(["schema", "--check", "--output", str(stale)], capsys)[0] == 0


def test_schema_has_id_and_documentation() -> None:
    schema = json.loads(schema_text())
    assert schema["$id"] == SCHEMA_ID
    assert schema["properties"]["sparsity"]["description"]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "model", "sparsity", "optimizer", "data"}


def test_validate_bad_directory_lists_every_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["validate", str(FIXTURES / "bad")], capsys)
    lines = out.strip().splitlines()
    assert code == 1
    bad_files = [p for p in (FIXTURES / "bad").rglob("*.yaml")]
    assert lines[-1].startswith(f"{len(bad_files)} spec files checked, 0 valid, ")
    assert all(":" in line for line in lines[:-1])


def test_validate_good_files_and_bases(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["validate", str(FIXTURES / "good")], capsys)
    assert (code, out.strip()) == (0, "3 spec files checked, 3 valid")


def test_validate_directory_without_specs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["validate", str(tmp_path)], capsys)
    assert code == 1
    assert out.splitlines()[0] == f"{tmp_path}: no *.yaml or *.yml spec files in this directory"


def test_validate_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["validate", str(tmp_path / "nope.yaml")], capsys)
    assert code == 1
    assert out.splitlines()[0] == f"{tmp_path / 'nope.yaml'}: no such file or directory"


def test_validate_with_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(FIXTURES / "good" / "minimal.yaml")
    assert run_cli(["validate", spec, "--set", "model.base.layers=4"], capsys)[0] == 0
    code, out, _ = run_cli(["validate", spec, "--set", "model.base.layers=x"], capsys)
    assert code == 1
    assert out.splitlines()[0] == "--set model.base.layers=x: model.base.layers: expected a valid integer, got the text 'x'"


def test_no_traceback_for_any_bad_input(tmp_path: Path) -> None:
    junk = tmp_path / "junk.yml"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "validate", str(FIXTURES / "bad"), str(junk), str(tmp_path / "nope")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert f"{junk}: binary file, not YAML text" in result.stdout


def test_plan_json_lists_the_paper_grid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["plan", str(EXPERIMENTS / "paper" / "vit_jft.yaml"), "--json"], capsys)
    assert code == 0
    document = json.loads(out)
    assert len(document["runs"]) == 112 and document["totals"]["runs"] == 112
    run = document["runs"][0]
    assert set(run["coordinates"]) == {"model.nonzeros", "sparsity.level", "data.steps"}
    assert run["status"] == {"state": "new", "step": None, "reason": None}
    assert run["spec"]["model"]["kind"] == "vit" and "sweep" not in run["spec"]


def test_plan_table_has_totals(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no runs/ here: every run is new
    code, out, _ = run_cli(["plan", str(EXPERIMENTS / "paper" / "t5_c4.yaml")], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 1 + 48 + 1
    assert lines[0].split()[:4] == ["run_id", "model.nonzeros", "sparsity.level", "data.steps"]
    assert lines[-1].startswith("48 runs (48 new); FLOPs: ")


def test_plan_of_an_invalid_spec_exits_1_with_located_errors(capsys: pytest.CaptureFixture[str]) -> None:
    spec = FIXTURES / "bad" / "unknown_key.yaml"
    code, out, err = run_cli(["plan", str(spec)], capsys)
    assert code == 1 and out == ""
    assert err.splitlines()[0] == f"{spec}:7:1: unknown key `sparsty` (did you mean `sparsity`?)"


def test_plan_with_override(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(EXPERIMENTS / "vit_sweep.yaml")
    _, out, _ = run_cli(["plan", spec, "--json"], capsys)
    runs = len(json.loads(out)["runs"])
    code, out, _ = run_cli(["plan", spec, "--json", "--set", "sweep.grid.data.batch_size=[16]"], capsys)
    document = json.loads(out)
    assert code == 0 and len(document["runs"]) == runs  # a one-value grid axis times the zipped runs
    assert {run["batch_size"] for run in document["runs"]} == {16}


def test_a_subcommand_that_fails_to_import_stops_the_cli_with_its_name(monkeypatch, capsys) -> None:
    import importlib

    import engine.cli

    real_import = importlib.import_module

    def broken(name: str, *args: object):
        if name == "engine.cli.predict":
            raise ImportError("No module named 'missing_dependency'")
        return real_import(name, *args)

    monkeypatch.setattr(engine.cli.importlib, "import_module", broken)
    assert engine.cli.main(["validate", "--help"]) == 2
    err = capsys.readouterr().err
    assert "the `predict` command cannot be loaded" in err and "missing_dependency" in err


def test_version(capsys) -> None:
    import engine
    import engine.cli

    with pytest.raises(SystemExit) as exit_info:
        engine.cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"engine {engine.__version__}"
