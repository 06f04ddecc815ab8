"""YAML reading: the four YAML 1.1 traps of docs/spec-reference.md, positions, and what is refused."""

from __future__ import annotations

import math

import pytest

from spec.issues import SpecError
from spec.yaml_tree import Located, deep_merge, parse_yaml, to_plain


def plain(text: str) -> object:
    tree = parse_yaml(text, "t.yaml")
    assert tree is not None
    return to_plain(tree)


def test_scientific_notation_is_a_float() -> None:
    # PyYAML (YAML 1.1) reads 1e-3 as the string "1e-3".
    assert plain("lr: 1e-3") == {"lr": 1e-3}
    assert isinstance(plain("lr: 1e-3")["lr"], float)  # type: ignore[index]
    assert plain("n: 1.3e+6") == {"n": 1.3e6}


def test_colon_pair_is_text_not_sexagesimal() -> None:
    # YAML 1.1 reads 2:4 as 2 * 60 + 4 = 124.
    assert plain("pattern: 2:4") == {"pattern": "2:4"}


def test_no_is_text_not_false() -> None:
    assert plain("a: no\nb: yes\nc: off\nd: false") == {"a": "no", "b": "yes", "c": "off", "d": False}


def test_duplicate_keys_are_errors_with_both_positions() -> None:
    with pytest.raises(SpecError) as caught:
        parse_yaml("a: 1\nb:\n  c: 1\n  c: 2\n", "t.yaml")
    [issue] = caught.value.issues
    assert str(issue) == "t.yaml:4:3: duplicate key `c` (first defined at line 3, column 3)"


def test_core_schema_values() -> None:
    assert plain("a: 0x10\nb: 0o17\nc: -.inf\nd: ~\ne: '4'\nf: 1_000\ng: 2024-01-01") == {
        "a": 16, "b": 15, "c": -math.inf, "d": None, "e": "4", "f": 1000, "g": "2024-01-01",
    }


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("a: !!python/object:os.system x", "unsupported YAML tag"),
        ("a: !!binary aGVsbG8=", "unsupported YAML tag"),
        ("a: !custom 3", "unsupported YAML tag"),
        ("base: &b {x: 1}\nchild:\n  <<: *b", "merge keys"),
        ("1: one", "keys must be strings"),
    ],
)
def test_refused_constructs(text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_yaml(text, "t.yaml")
    assert fragment in str(caught.value)


def test_positions_are_one_based_for_keys_and_values() -> None:
    tree = parse_yaml("top:\n  key: value\n", "t.yaml")
    assert tree is not None
    entry = tree.value["top"].node.value["key"]
    assert (entry.key_origin.line, entry.key_origin.col) == (2, 3)
    assert (entry.node.origin.line, entry.node.origin.col) == (2, 8)


def test_empty_document_is_none() -> None:
    assert parse_yaml("# only a comment\n", "t.yaml") is None


def test_deep_merge_child_wins_lists_replaced_kind_change_replaces() -> None:
    def tree(text: str) -> Located:
        parsed = parse_yaml(text, "t.yaml")
        assert parsed is not None
        return parsed

    base = tree("a: {x: 1, y: [1, 2]}\nopt: {kind: adafactor, momentum: 0.9}\nkeep: 1")
    child = tree("a: {y: [3]}\nopt: {kind: adamw, b1: 0.8}")
    assert to_plain(deep_merge(base, child)) == {
        "a": {"x": 1, "y": [3]},
        "opt": {"kind": "adamw", "b1": 0.8},
        "keep": 1,
    }


def billion_laughs(levels: int, width: int = 10) -> str:
    """`levels` nested levels of `width` aliases each: width**levels leaves from a few hundred bytes."""
    names = "abcdefghij"
    lines = [f"a: &a [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels + 1):
        lines.append(f"{names[level]}: &{names[level]} [{', '.join([f'*{names[level - 1]}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_fast_and_small() -> None:
    import resource
    import time

    text = billion_laughs(6)  # 10**7 leaves once expanded
    assert len(text) < 400
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        parse_yaml(text, "t.yaml")
    assert time.perf_counter() - started < 0.5
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) < 100 * 1024  # KiB: under 100 MB
    [issue] = caught.value.issues
    assert str(issue).startswith("t.yaml:5:4: YAML aliases here expand to more than 100000 nodes")


def test_aliases_a_spec_would_use_are_read() -> None:
    assert plain("a: &x {n: 2, m: 4}\nb: *x\nc: [*x, *x]") == {
        "a": {"n": 2, "m": 4}, "b": {"n": 2, "m": 4}, "c": [{"n": 2, "m": 4}] * 2}
    assert len(plain(billion_laughs(3))["d"]) == 10  # type: ignore[index]  # 10**3 leaves: fine


def test_aliases_nesting_past_the_depth_limit_are_refused() -> None:
    # Each level nests the previous anchor one list deeper: 70 levels, from 70 short lines.
    lines = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 70)]
    with pytest.raises(SpecError) as caught:
        parse_yaml("\n".join(lines), "t.yaml")
    assert "YAML aliases here nest deeper than 64 levels" in str(caught.value.issues[0])


@pytest.mark.parametrize("version", ["1.1", "1.0", "1.3"])
def test_only_yaml_1_2_is_read(version: str) -> None:
    # Under %YAML 1.1 ruamel would read `yes` as true and 0755 as octal.
    with pytest.raises(SpecError) as caught:
        parse_yaml(f"# a comment\n%YAML {version}\n---\nsparsity_aware_rms: yes\n", "t.yaml")
    [issue] = caught.value.issues
    assert str(issue) == (f"t.yaml:2:1: %YAML {version}: only YAML 1.2 is read "
                          "(remove the directive or write %YAML 1.2)")


def test_a_yaml_1_2_directive_is_accepted() -> None:
    assert plain("%YAML 1.2\n---\nsparsity_aware_rms: yes\n") == {"sparsity_aware_rms": "yes"}
