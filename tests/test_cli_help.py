"""Every subcommand and every option of the `engine` command line says what it does in --help."""

from __future__ import annotations

import argparse

from engine.cli import COMMANDS, build_parser


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [subparsers] = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def test_every_subcommand_is_listed_with_help() -> None:
    parser = build_parser()
    [subparsers] = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    described = {choice.dest: choice.help for choice in subparsers._choices_actions}
    assert set(described) == set(COMMANDS)
    assert all(text and text != argparse.SUPPRESS for text in described.values()), described


def test_every_option_and_argument_has_help() -> None:
    missing = [
        f"engine {name} {'/'.join(action.option_strings) or action.dest}"
        for name, parser in subcommand_parsers().items()
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and (not action.help or action.help == argparse.SUPPRESS)
    ]
    assert not missing, "options without help text: " + ", ".join(missing)
