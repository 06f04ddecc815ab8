"""Where a problem is and what it is: every spec error is reported as `origin: message`."""

from __future__ import annotations

from dataclasses import dataclass


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
    """One problem in a spec."""

    origin: Origin
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


class SpecError(Exception):
    """A spec that cannot be used; carries every problem found, in file order."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = sorted(set(issues), key=lambda issue: (issue.origin.file, issue.origin.line, issue.origin.col, issue.message))
        super().__init__("\n".join(str(issue) for issue in self.issues))
