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
