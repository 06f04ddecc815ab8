"""Each class of bad input, one fixture file each, gives its file:line:col and message.

A fixture's first line declares what it must produce: `# expect: [FILE:]LINE:COL: MESSAGE`, FILE
relative to the fixture's directory (default: the fixture itself), MESSAGE a prefix of the error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from spec.loading import check_file

BAD = Path(__file__).parent / "fixtures" / "specs" / "bad"
EXPECT = re.compile(r"^# expect: (?:(?P<file>[^:]+\.yaml):)?(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")

FIXTURES = sorted(path for path in BAD.glob("*.yaml") if path.stat().st_size)


def expectation(path: Path) -> tuple[str, int, int, str]:
    match = EXPECT.match(path.read_text().splitlines()[0])
    assert match, f"{path.name} lacks an `# expect:` first line"
    file = os.path.normpath(path.parent / match["file"]) if match["file"] else str(path)
    return file, int(match["line"]), int(match["col"]), match["message"]


@pytest.mark.parametrize("path", FIXTURES, ids=[path.stem for path in FIXTURES])
def test_bad_fixture_reports_its_position_and_message(path: Path) -> None:
    file, line, col, message = expectation(path)
    issues = check_file(path)
    assert len(issues) == 1, [str(issue) for issue in issues]
    [issue] = issues
    assert (issue.origin.file, issue.origin.line, issue.origin.col) == (file, line, col)
    assert issue.message.startswith(message), issue.message


def test_every_class_has_a_fixture() -> None:
    classes = {
        "malformed_yaml", "wrong_type", "unknown_key", "missing_key", "empty_file", "duplicate_key",
        "nm_string", "yaml11_boolean", "unknown_kind", "missing_extends", "extends_cycle_a",
        "extends_broken_parent", "sweep_unknown_path", "sweep_bad_value", "nm_level_mismatch",
        "not_a_mapping",
    }
    assert classes <= {path.stem for path in BAD.glob("*.yaml")}


def test_empty_file() -> None:
    [issue] = check_file(BAD / "empty_file.yaml")
    assert str(issue).endswith("empty_file.yaml:1:1: empty file: expected a mapping of spec fields")


def test_binary_junk(tmp_path: Path) -> None:
    path = tmp_path / "junk.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    [issue] = check_file(path)
    assert issue.message == "binary file, not YAML text"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    [issue] = check_file(path)
    assert issue.message.startswith("not UTF-8 text")


def test_control_character_is_located(tmp_path: Path) -> None:
    path = tmp_path / "control.yaml"
    path.write_text("name: ok\nseed: 1\x07\n")
    [issue] = check_file(path)
    assert (issue.origin.line, issue.message.startswith("invalid YAML")) == (2, True)


def test_unreadable_file(tmp_path: Path) -> None:
    link = tmp_path / "dangling.yaml"
    link.symlink_to(tmp_path / "nowhere.yaml")
    [issue] = check_file(link)
    assert issue.message.startswith("cannot read")


def test_all_errors_of_a_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(
        "name: many\n"
        "model: {kind: decoder, preset: gpt2, d_model: 16}\n"
        "sparsity: {level: 2}\n"
        "optimizer: {kind: adamw, learning_rate: {kind: constant, value: -1}}\n"
        "data: {source: {kind: synthetic_tokens}, steps: 0, batch_size: 4, eval_every: 10, extra: 1}\n"
    )
    lines = [f"{issue.origin.line}:{issue.origin.col}: {issue.message}" for issue in check_file(path)]
    assert lines == [
        "2:24: model: unknown key `preset`; expected one of: nonzeros, d_model, width_multiple, kind, base",
        "3:19: sparsity.level: expected less than 1, got 2",
        "4:65: optimizer.learning_rate.value: expected greater than 0, got -1",
        "5:49: data.steps: expected greater than 0, got 0",
        "5:83: data: unknown key `extra`; expected one of: source, steps, flops, batch_size, eval_every, on_exhausted",
    ]


def test_missing_kind_lists_the_options(tmp_path: Path) -> None:
    path = tmp_path / "nokind.yaml"
    path.write_text((BAD.parent / "good" / "minimal.yaml").read_text().replace("  kind: adamw\n", ""))
    [issue] = check_file(path)
    assert issue.message == "optimizer: missing required key `kind` (one of: adafactor, adamw)"
    assert (issue.origin.line, issue.origin.col) == (10, 3)


def test_family_mismatch_points_at_the_source_kind(tmp_path: Path) -> None:
    path = tmp_path / "mismatch.yaml"
    path.write_text(
        (BAD.parent / "good" / "minimal.yaml").read_text().replace("synthetic_tokens", "synthetic_images")
    )
    [issue] = check_file(path)
    assert issue.message == "data.source.kind: a decoder model needs a token source, got synthetic_images"
    assert (issue.origin.line, issue.origin.col) == (13, 18)


TINY = Path(__file__).parent / "fixtures" / "run" / "tiny_vit.yaml"  # sweeps model.nonzeros and sparsity.level


@pytest.mark.parametrize("edit, expected", [
    # A misspelt section: only the unknown key, at the key, not "model: missing kind" at the sweep's line.
    (lambda text: text.replace("\nmodel:", "\nmodle:"), ["4:1: unknown key `modle` (did you mean `model`?)"]),
    # A section left out that the sweep reaches into: at the spec's first line.
    (lambda text: text.replace(text[text.index("\nmodel:"):text.index("\nsparsity:")], ""),
     ["1:1: missing required key `model` (the sweep sets model.nonzeros, not the whole section)"]),
    # A section left out that nothing sweeps: at the spec's first line too (not at its first key).
    (lambda text: text.replace(text[text.index("\noptimizer:"):text.index("\ndata:")], ""),
     ["1:1: missing required key `optimizer`"]),
])
def test_top_level_sections_misspelt_or_missing_are_reported_at_the_spec(tmp_path: Path, edit, expected: list[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(edit(TINY.read_text()))
    assert [str(issue).removeprefix(f"{spec}:") for issue in check_file(spec)] == expected
