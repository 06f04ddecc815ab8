"""`engine validate --format text|json|github` on the same invalid spec, and the exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main
from engine.cli import validate as validate_command
from engine.cli.validate_format import escape_data, escape_property, github_command, issue_record
from spec.issues import Issue, Origin

ROOT = Path(__file__).resolve().parent.parent
BAD = Path(__file__).parent / "fixtures" / "specs" / "bad"
GOOD = Path(__file__).parent / "fixtures" / "specs" / "good"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def invalid_spec(tmp_path: Path) -> Path:
    """Two problems: a misspelt key (with a suggestion) and a wrong type in a nested field."""
    text = (GOOD / "minimal.yaml").read_text()
    text = text.replace("sparsity:\n  level: 0.5", "sparsty:\n  level: 0.5").replace("steps: 20", "steps: many")
    path = tmp_path / "bad spec.yaml"
    path.write_text(text)
    return path


def test_text_format_is_the_default(invalid_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["validate", str(invalid_spec)], capsys)
    assert run_cli(["validate", "--format", "text", str(invalid_spec)], capsys)[1] == out
    assert code == 1
    assert out.splitlines() == [
        f"{invalid_spec}:7:1: unknown key `sparsty` (did you mean `sparsity`?)",
        f"{invalid_spec}:14:10: data.steps: expected a valid integer, got the text 'many'",
        "1 spec file checked, 0 valid, 2 errors",
    ]


def test_json_format_separates_path_and_suggestion(invalid_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["validate", "--format", "json", str(invalid_spec)], capsys)
    assert code == 1
    assert json.loads(out) == [
        {"file": str(invalid_spec), "line": 7, "column": 1, "path": "sparsty",
         "message": "unknown key `sparsty`", "suggestion": "did you mean `sparsity`?", "override": None},
        {"file": str(invalid_spec), "line": 14, "column": 10, "path": "data.steps",
         "message": "data.steps: expected a valid integer, got the text 'many'", "suggestion": None,
         "override": None},
    ]
    assert err.strip() == "1 spec file checked, 0 valid, 2 errors"  # stdout stays pure JSON


def test_github_format_annotates_each_problem(invalid_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["validate", "--format", "github", str(invalid_spec)], capsys)
    assert code == 1
    assert out.splitlines() == [
        f"::error file={invalid_spec},line=7,col=1::unknown key `sparsty` (did you mean `sparsity`?)",
        f"::error file={invalid_spec},line=14,col=10::data.steps: expected a valid integer, got the text 'many'",
        "1 spec file checked, 0 valid, 2 errors",
    ]


def test_valid_specs_in_every_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["validate", str(GOOD)], capsys)[:2] == (0, "3 spec files checked, 3 valid\n")
    assert run_cli(["validate", "--format", "json", str(GOOD)], capsys)[:2] == (0, "[]\n")
    assert run_cli(["validate", "--format", "github", str(GOOD)], capsys)[:2] == (0, "3 spec files checked, 3 valid\n")


def test_github_escapes_properties_and_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    odd = tmp_path / "a,b:c%.yaml"
    shutil.copy(BAD / "unknown_key.yaml", odd)
    _, out, _ = run_cli(["validate", "--format", "github", str(odd)], capsys)
    escaped = str(odd).replace("%", "%25").replace(":", "%3A").replace(",", "%2C")
    assert out.splitlines()[0] == f"::error file={escaped},line=7,col=1::unknown key `sparsty` (did you mean `sparsity`?)"
    assert escape_data("50% done\r\nnext: a, b") == "50%25 done%0D%0Anext: a, b"
    assert escape_property("x%:,\n") == "x%25%3A%2C%0A"


def test_override_problems_have_no_file(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(GOOD / "minimal.yaml")
    code, out, _ = run_cli(["validate", "--format", "json", spec, "--set", "model.base.layrs=4"], capsys)
    [record] = json.loads(out)
    assert code == 1
    assert record == {
        "file": None, "line": None, "column": None, "path": "model.base.layrs",
        "message": "model.base: unknown key `layrs`", "suggestion": "did you mean `layers`?",
        "override": "model.base.layrs=4",
    }
    _, out, _ = run_cli(["validate", "--format", "github", spec, "--set", "model.base.layrs=4"], capsys)
    assert out.splitlines()[0] == "::error::--set model.base.layrs=4: model.base: unknown key `layrs` (did you mean `layers`?)"


@pytest.mark.parametrize(
    ("message", "path", "suggestion"),
    [
        ("data: missing required key `batch_size`", "data.batch_size", None),
        ("missing required key `name`", "name", None),
        ("model.kind: must be one of vit, t5, decoder, got 'vitt' (did you mean `vit`?)", "model.kind", "did you mean `vit`?"),
        ("sweep.grid: unknown field `nonzros` in `model` (did you mean `nonzeros`?)", "sweep.grid", "did you mean `nonzeros`?"),
        ("sparsity.level: expected less than 1, got 1.5 (sweep point sparsity.level=1.5)", "sparsity.level", None),
        ("invalid YAML: expected ',' or ']', but got ':'", None, None),
        ("duplicate key `sparsity` (first defined at line 3, column 1)", None, None),
    ],
)
def test_paths_and_suggestions_read_off_messages(message: str, path: str | None, suggestion: str | None) -> None:
    record = issue_record(Issue(Origin("s.yaml", 3, 4), message))
    assert (record["path"], record["suggestion"]) == (path, suggestion)
    assert record["message"] == message.replace(f" ({suggestion})", "")


def test_explicit_path_wins() -> None:
    issue = Issue(Origin("s.yaml", 1, 1), "init.source.where {} matches no run", at="init.source.where")
    assert issue.path == "init.source.where"
    assert github_command(issue) == "::error file=s.yaml,line=1,col=1::init.source.where {} matches no run"


def test_internal_error_exits_2_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(*_: object) -> list[Issue]:
        raise RuntimeError("boom")

    monkeypatch.setattr(validate_command, "check_file", broken)
    code, out, err = run_cli(["validate", str(GOOD / "minimal.yaml")], capsys)
    assert (code, out) == (2, "")
    assert err == "error: internal error in engine validate (RuntimeError: boom)\n"


def test_exit_codes_as_a_user_sees_them(invalid_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def engine(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "engine.cli", "validate", *args], capture_output=True, text=True, cwd=ROOT)

    assert engine(str(GOOD)).returncode == 0
    invalid = engine("--format", "github", str(invalid_spec))
    assert invalid.returncode == 1 and "Traceback" not in invalid.stderr
    for usage in (["--format", "xml", str(GOOD)], []):  # a bad choice, no PATH: argparse's exit 2
        with pytest.raises(SystemExit) as exited:
            main(["validate", *usage])
        assert exited.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    assert "exit codes:" in capsys.readouterr().out
