"""How `engine validate` reports problems: text (one `file:line:col: message` per problem), JSON
(a list of records), or GitHub Actions workflow commands (annotations on the pull request diff).

Pure functions over spec.issues.Issue; the command decides where the output goes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from spec.issues import Issue

Format = Literal["text", "json", "github"]
FORMATS: tuple[Format, ...] = ("text", "json", "github")


def issue_record(issue: Issue) -> dict[str, Any]:
    """One problem for machines: position (null where unknown), dotted field path, the message
    without its suggestion, and the suggestion. `override` is the `--set` text for a problem in
    an override (then `file` is null)."""
    origin = issue.origin
    return {
        "file": origin.file or None,
        "line": origin.line or None,
        "column": origin.col or None,
        "path": issue.path,
        "message": issue.description,
        "suggestion": issue.suggestion,
        "override": origin.override,
    }


def escape_data(text: str) -> str:
    """A workflow command's message: `%`, CR and LF are percent-encoded (`%` first)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: as data, plus `:` and `,` (they delimit properties)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_command(issue: Issue) -> str:
    """`::error file=F,line=L,col=C::message` (position properties only where known). An override
    problem has no file: its `--set` text leads the message instead."""
    origin = issue.origin
    properties = []
    if origin.override is None and origin.file:
        properties.append(f"file={escape_property(origin.file)}")
        if origin.line:
            properties += [f"line={origin.line}", f"col={origin.col}"]
    message = issue.message if origin.override is None else f"{origin}: {issue.message}"
    head = "::error " + ",".join(properties) if properties else "::error"
    return f"{head}::{escape_data(message)}"


def render(issues: Sequence[Issue], output_format: Format) -> str:
    """Every problem in the chosen format (no trailing newline; empty text for none in text and
    github formats, `[]` in JSON)."""
    if output_format == "json":
        return json.dumps([issue_record(issue) for issue in issues], indent=2)
    if output_format == "github":
        return "\n".join(github_command(issue) for issue in issues)
    return "\n".join(str(issue) for issue in issues)
