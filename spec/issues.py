"""Where a problem is and what it is: every spec error is reported as `origin: message`.

Messages follow one convention, which `Issue.path` and `Issue.suggestion` read back for machine
output (`engine validate --format json|github`):

    [dotted.field.path: ]what is wrong[ (did you mean `x`?)][ (sweep point ...)]

The leading label is the field the problem is at (for a missing or unknown key, its parent: the
key itself is named in backticks right after). The suggestion text is what spec.paths.suggest
writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# `model.base: ...`, `sweep.grid: ...`, `init.source.where: ...`; not `invalid YAML: ...`.
_LABEL = re.compile(r"^([A-Za-z_][\w-]*(?:\.[\w-]+)*): ")
_SUGGESTION = re.compile(r" \((did you mean `[^`]*`\?)\)")
_NAMED_KEY = re.compile(r"^(?:missing required key|unknown key) `([^`]+)`")


@dataclass(frozen=True, order=True)
class Origin:
    """Where a YAML node came from: a file position (1-based line and column), or a `--set`
    override (then `override` holds its text and line/col are 0)."""

    file: str
    line: int = 0
    col: int = 0
    override: str | None = None

    def __str__(self) -> str:
        if self.override is not None:
            return f"--set {self.override}"
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


@dataclass(frozen=True, order=True)
class Issue:
    """One problem in a spec. `at` is the dotted field path when the message does not lead with
    it (e.g. a planning error worded elsewhere); it does not take part in comparisons."""

    origin: Origin
    message: str
    at: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"

    @property
    def path(self) -> str | None:
        """The dotted field path the problem is at (`sparsity.level`, `model.base.layrs` for an
        unknown key, `data.batch_size` for a missing one), or None when the message names none."""
        if self.at is not None:
            return self.at
        label_match = _LABEL.match(self.message)
        label = label_match.group(1) if label_match else None
        key_match = _NAMED_KEY.match(self.message[label_match.end() if label_match else 0 :])
        if key_match:
            return f"{label}.{key_match.group(1)}" if label else key_match.group(1)
        return label

    @property
    def suggestion(self) -> str | None:
        """The "did you mean `x`?" text, or None."""
        found = _SUGGESTION.search(self.message)
        return found.group(1) if found else None

    @property
    def description(self) -> str:
        """The message without its suggestion (the two are separate fields in machine output)."""
        return _SUGGESTION.sub("", self.message, count=1)


class SpecError(Exception):
    """A spec that cannot be used; carries every problem found, in file order."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = sorted(set(issues),
                             key=lambda issue: (issue.origin.file, issue.origin.line, issue.origin.col, issue.message))
        super().__init__("\n".join(str(issue) for issue in self.issues))
