"""The one exception type for bad user input: printed as a single line by the CLI, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a spec, a results table, a checkpoint path, a flag).

    The message names what is wrong and where (file:line:col for specs). `exit_code` is what the
    CLI returns: 1 for invalid input, 2 for usage errors.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
