"""Property-based bad input: mutated specs and results tables get a clear error and an exit code
(`engine validate`: 0 or 1; `engine fit`: 1 or 2), never a traceback or a hang.

Specs: every valid spec of experiments/ and tests/fixtures/ is mutated (a key deleted, a value
replaced by a wrong type, a huge, negative or non-finite number, unicode, deep nesting, an unknown
key) or its text damaged (bytes cut, inserted, a YAML tag), then validated in-process through
engine.cli.main. Results tables (CSV and JSONL) are mutated the same way and fed to `engine fit`
(the fit itself runs only in the slow tier: a table that reads cleanly must also fit without a
traceback). The fast tier runs a few hundred cases in about half a minute; the slow tier (-m slow)
runs thousands.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from engine.cli import main
from engine.errors import UserError
from engine.fit.io import read_table

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(
    [*ROOT.glob("experiments/*.yaml"), *ROOT.glob("experiments/paper/*.yaml"),
     *ROOT.glob("tests/fixtures/run/*.yaml"), *ROOT.glob("tests/fixtures/specs/good/*.yaml")]
)
TABLES = [ROOT / "tests/fixtures/results/synthetic.jsonl", ROOT / "experiments/data/t5_c4_paper.csv"]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
SLOW = settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck), database=None)
HANG_SECONDS = 120  # far above any real answer (validate takes under a second): only a hang reaches it


class Hang(Exception):
    pass


@contextmanager
def hang_guard(seconds: int = HANG_SECONDS) -> Iterator[None]:
    """Fail a case that never returns, without timing the ones that do: a loaded machine may be slow,
    a hung parser is wrong."""
    def interrupt(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def load_plain(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


# --- values a user (or a broken tool) might write ------------------------------------------------

numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 2**63, -(2**63), 10**400, 1e308, -1e308, 5e-324, math.inf, -math.inf, math.nan]),
    st.floats(allow_nan=True, allow_infinity=True),
)
texts = st.one_of(st.text(max_size=30), st.sampled_from(["", "é", "名前", "\u202e", "0x1F", "1e-3", "no", "2:4", "~", "null"]))


def nested(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


bad_values = st.one_of(
    st.none(), st.booleans(), numbers, texts,
    st.lists(st.one_of(numbers, texts), max_size=4),
    st.dictionaries(texts, st.one_of(numbers, texts), max_size=3),
    st.integers(min_value=10, max_value=300).map(nested),
)


def paths_of(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a node of a plain YAML tree (keys and list indices)."""
    found = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += paths_of(value, prefix + (key,))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += paths_of(value, prefix + (index,))
    return found


@st.composite
def mutated_trees(draw: st.DrawFn, tree: Any) -> Any:
    """The tree with 1-3 mutations: delete, replace, add an unknown key, rename a key."""
    tree = json.loads(json.dumps(tree))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths_of(tree)))
        if not path:
            continue
        parent = tree
        for part in path[:-1]:
            parent = parent[part]
        leaf = path[-1]
        action = draw(st.sampled_from(["delete", "replace", "replace", "add", "rename"]))
        if action == "delete":
            del parent[leaf]
        elif action == "replace":
            parent[leaf] = draw(bad_values)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(texts)] = draw(bad_values)
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(texts) + str(leaf)] = parent.pop(leaf)
    return tree


def dump_yaml(tree: Any) -> str:
    buffer = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.dump(tree, buffer)
    return buffer.getvalue()


def alias_bomb(levels: int, width: int, key: str = "bomb") -> str:
    """A mapping `key` of `levels` anchors, each a list of `width` aliases of the one before:
    width**levels leaves from a few hundred bytes ("billion laughs")."""
    lines = [f"{key}:", f"  l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@st.composite
def damaged_texts(draw: st.DrawFn, text: str) -> str:
    """The spec's text cut, with bytes inserted, with a tag that would construct an object, an
    alias bomb, a `%YAML` directive, or a non-finite number where a number is."""
    kind = draw(st.sampled_from(["cut", "insert", "tag", "indent", "aliases", "directive", "nonfinite"]))
    at = draw(st.integers(0, len(text)))
    if kind == "cut":
        return text[:at]
    if kind == "insert":
        return text[:at] + draw(st.text(min_size=1, max_size=8)) + text[at:]
    if kind == "aliases":  # levels x width aliases of aliases, under a new key
        return text + alias_bomb(draw(st.integers(1, 8)), draw(st.integers(2, 12)))
    if kind == "directive":
        version = draw(st.sampled_from(["1.1", "1.0", "1.2", "1.3", "2.0", ""]))
        return f"%YAML {version}\n---\n{text}"
    lines = text.splitlines()
    index = draw(st.integers(0, max(len(lines) - 1, 0)))
    if kind == "nonfinite":
        numeric = [i for i, line in enumerate(lines) if re.search(r":\s*-?[0-9][0-9.e+-]*\s*$", line)]
        if numeric:
            index = draw(st.sampled_from(numeric))
            key, _, _ = lines[index].rpartition(":")
            lines[index] = f"{key}: {draw(st.sampled_from(['.inf', '-.inf', '.nan', '.NaN', '+.Inf', '1e400']))}"
        return "\n".join(lines) + "\n"
    if kind == "tag" and lines and ": " in lines[index]:
        key, _, value = lines[index].partition(": ")
        tag = draw(st.sampled_from(["!!python/object/apply:os.system", "!!python/name:os.system", "!custom", "!!set"]))
        lines[index] = f"{key}: {tag} {value}"
    elif lines:
        lines[index] = " " * draw(st.integers(1, 5)) + lines[index]
    return "\n".join(lines) + "\n"


def check_answer(arguments: list[str], allowed: tuple[int, ...], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run the CLI in-process: an allowed exit code, a one-line `where: what` error on stderr,
    without hanging; any exception escaping main() fails the test with its traceback."""
    with hang_guard():
        code = main(arguments)
    captured = capsys.readouterr()
    output = captured.out + captured.err  # validate lists problems on stdout, errors go to stderr
    assert code in allowed, (code, output[-2000:])
    assert "Traceback" not in output and "internal error" not in output, output[-2000:]
    return code, output


# --- specs ---------------------------------------------------------------------------------------


def spec_case(spec: Path, tree: Any, directory: Path, capsys: pytest.CaptureFixture, text: str | None = None) -> None:
    # Written beside the original, so `extends:` and data paths resolve as they would.
    target = spec.parent / f".fuzz-{spec.stem}.yaml"
    try:
        target.write_text(text if text is not None else dump_yaml(tree), encoding="utf-8")
        code, err = check_answer(["validate", str(target)], (0, 1), capsys)
        if code == 1:  # the first problem names the file (or the base it extends) with a line
            assert f".fuzz-{spec.stem}.yaml:" in err.splitlines()[0] or ".yaml:" in err.splitlines()[0], err
    finally:
        target.unlink(missing_ok=True)


def spec_property(spec_settings: settings):
    @spec_settings
    @given(data=st.data())
    def check(tmp_path: Path, capsys: pytest.CaptureFixture, data: st.DataObject) -> None:
        spec = data.draw(st.sampled_from(SPECS))
        if data.draw(st.booleans()):
            spec_case(spec, data.draw(mutated_trees(load_plain(spec))), tmp_path, capsys)
        else:
            spec_case(spec, None, tmp_path, capsys, text=data.draw(damaged_texts(spec.read_text())))
    return check


test_mutated_specs_get_a_clear_answer = spec_property(FAST)
test_mutated_specs_get_a_clear_answer_soak = pytest.mark.slow(spec_property(SLOW))


# --- results tables ------------------------------------------------------------------------------


def read_table_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return list(csv.DictReader(path.read_text().splitlines()))


def write_table(rows: list[Any], path: Path) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row, allow_nan=True) + "\n" for row in rows))
        return
    names = list(dict.fromkeys(k for row in rows if isinstance(row, dict) for k in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=names or ["empty"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(row if isinstance(row, dict) else {} for row in rows)


@st.composite
def mutated_tables(draw: st.DrawFn, rows: list[dict]) -> list[Any]:
    rows = [dict(row) for row in rows]
    for _ in range(draw(st.integers(1, 4))):
        if not rows:
            break
        index = draw(st.integers(0, len(rows) - 1))
        if not isinstance(rows[index], dict):
            continue  # already not a row
        column = draw(st.sampled_from(sorted(rows[index]) or ["loss"]))
        action = draw(st.sampled_from(["delete", "replace", "replace", "drop-rows", "not-a-row"]))
        if action == "delete":
            rows[index].pop(column, None)
        elif action == "replace":
            rows[index][column] = draw(bad_values)
        elif action == "drop-rows":
            rows = rows[: draw(st.integers(0, len(rows)))]
        else:
            rows[index] = draw(st.one_of(numbers, texts, st.lists(numbers, max_size=3)))
    return rows


def table_property(table_settings: settings, fit_valid_tables: bool):
    @table_settings
    @given(data=st.data())
    def check(tmp_path: Path, capsys: pytest.CaptureFixture, data: st.DataObject) -> None:
        source = data.draw(st.sampled_from(TABLES))
        rows = data.draw(mutated_tables(read_table_rows(source)))
        path = tmp_path / f"fuzz{source.suffix}"
        write_table(rows, path)
        columns = ["--columns", "loss=val-loss"] if "val-loss" in source.read_text().splitlines()[0] else []
        fit = ["fit", str(path), *columns, "--starts", "2", "--bootstrap", "0", "--no-report",
               "--holdout", "none", "--out", str(tmp_path / "fit")]
        try:
            table = read_table(path, {"loss": "val-loss"} if columns else None)
        except UserError as error:
            assert str(error).startswith(str(path))  # names the file (and the line, per row)
            check_answer(fit, (1, 2), capsys)
            return
        # Read cleanly: every value is a finite number in its range.
        assert all(math.isfinite(v) for v in (*table.nonzeros, *table.data, *table.loss, *table.sparsity))
        assert all(0 <= s < 1 for s in table.sparsity) and min(table.loss) > 0
        if fit_valid_tables:
            check_answer(fit, (0, 1, 3), capsys)
    return check


test_mutated_results_tables_get_a_clear_answer = table_property(FAST, fit_valid_tables=False)
test_mutated_results_tables_get_a_clear_answer_soak = pytest.mark.slow(table_property(
    settings(SLOW, max_examples=150), fit_valid_tables=True))


# --- explicit hostile cases ----------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system [echo hacked]",
                                 "!!python/object:builtins.dict {a: 1}", "!!python/name:os.system",
                                 "!include /etc/passwd"])
def test_yaml_tags_that_construct_objects_are_refused_with_file_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, tag: str
) -> None:
    spec = tmp_path / "tagged.yaml"
    spec.write_text((ROOT / "tests/fixtures/run/tiny_vit.yaml").read_text().replace(
        "seed: 0\nmodel:", f"seed: {tag}\nmodel:", 1))
    _, err = check_answer(["validate", str(spec)], (1,), capsys)
    assert f"{spec}:3:7: unsupported YAML tag" in err


def test_extends_outside_the_tree_is_resolved_shown_and_read_as_data_only(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("#!/bin/sh\necho this is not a spec\n")
    spec = tmp_path / "deep" / "er" / "spec.yaml"
    spec.parent.mkdir(parents=True)
    spec.write_text("extends: ../../outside.txt\nname: x\n")
    _, err = check_answer(["validate", str(spec)], (1,), capsys)
    assert "outside.txt" in err and "expected a mapping" in err
    spec.write_text("extends: ../../../../../../../../../../dev/zero\nname: x\n")  # never read
    _, err = check_answer(["validate", str(spec)], (1,), capsys)
    assert "not found (looked for /dev/zero)" in err


def test_a_deeply_nested_spec_is_an_error_not_a_recursion_crash(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = tmp_path / "deep.yaml"
    spec.write_text("name: x\nmodel: " + "[" * 5000 + "]" * 5000 + "\n")
    _, output = check_answer(["validate", str(spec)], (1,), capsys)
    assert f"{spec}:2:71: nesting deeper than 64 levels" in output


@pytest.mark.parametrize("name, text, message", [
    ("big.csv", "sparsity,nonzeros,data,loss\n0.5,1e6," + "x" * 200_000 + ",2.0\n", "big.csv:2: not valid CSV"),
    ("dup.csv", "sparsity,sparsity,nonzeros,data,loss\n0.5,0.1,1e6,2,2.0\n", "dup.csv:1: duplicate column(s) 'sparsity'"),
    ("deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n", "deep.jsonl:1: not valid JSON (nested too deeply)"),
    ("nul.csv", "sparsity,nonzeros,data,loss\n0.5,1e6,\0,2.0\n", "nul.csv:2: column 'data' is not a number"),
])
def test_hostile_results_tables_get_one_line_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, name: str, text: str, message: str
) -> None:
    (tmp_path / name).write_text(text)
    _, output = check_answer(["fit", str(tmp_path / name), "--no-report"], (1,), capsys)
    assert f"{tmp_path / message}" in output


@pytest.mark.parametrize("command", [["validate"], ["fit"]])
def test_a_subprocess_with_bad_input_exits_cleanly(tmp_path: Path, command: list[str]) -> None:
    bad = tmp_path / ("bad.yaml" if command == ["validate"] else "bad.csv")
    bad.write_text("model: {kind: vit, base: {layers: -1}}\n" if command == ["validate"]
                   else "sparsity,nonzeros,data,loss\n0.5,1e6,abc,2.0\n")
    done = subprocess.run([sys.executable, "-m", "engine.cli", *command, str(bad)],
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr  # validate lists problems on stdout
    assert done.returncode == 1 and "Traceback" not in output
    assert str(bad) in output


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Six nested levels of ten aliases (10**6 lists of ten once expanded) in about 300 bytes: refused
    by the alias count at its line, within 100 MB, before anything walks the expanded tree."""
    spec = tmp_path / "laughs.yaml"
    spec.write_text(alias_bomb(6, 10, key="name"))
    assert spec.stat().st_size < 500
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _, output = check_answer(["validate", str(spec)], (1,), capsys)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB
    assert f"{spec}:6:7: YAML aliases here expand to more than 100000 nodes" in output


def test_a_yaml_1_1_directive_is_refused_at_its_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = tmp_path / "old.yaml"
    spec.write_text("%YAML 1.1\n---\n" + (ROOT / "tests/fixtures/run/tiny_vit.yaml").read_text())
    _, output = check_answer(["validate", str(spec)], (1,), capsys)
    assert f"{spec}:1:1: %YAML 1.1: only YAML 1.2 is read" in output


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400", "1e200"])
def test_non_finite_and_unbounded_sizes_are_refused_at_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture, value: str
) -> None:
    spec = tmp_path / "huge.yaml"
    text = (ROOT / "tests/fixtures/run/tiny_vit.yaml").read_text()
    spec.write_text(text.replace("model.nonzeros: [1000, 2000]", f"model.nonzeros: [1000, {value}]"))
    _, output = check_answer(["validate", "--plan", str(spec)], (1,), capsys)
    expected = "less than or equal to" if value == "1e200" else "finite number"
    assert f"{spec}:21:28: model.nonzeros: expected" in output and expected in output, output


# Tables the soak test found: one tiny size or data value makes the curvature, or the limit gain,
# overflow. Each fit still ends with an exit code and no traceback.
@pytest.mark.parametrize("extreme", [{"nonzeros": 5e-324, "data": 1.0}, {"data": 5e-324}])
def test_an_extreme_value_in_a_valid_table_gets_an_answer_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture, extreme: dict[str, float]
) -> None:
    lines = (Path(__file__).parent / "fixtures" / "results" / "synthetic.jsonl").read_text().splitlines()
    first = json.loads(lines[0]) | extreme
    path = tmp_path / "extreme.jsonl"
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    check_answer(["fit", str(path), "--starts", "2", "--bootstrap", "0", "--no-report", "--holdout", "none",
                  "--out", str(tmp_path / "fit")], (0, 1, 3), capsys)
