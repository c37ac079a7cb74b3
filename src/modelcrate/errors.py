"""User-facing errors: one root, each with what happened, the file involved and a fix.

Exit codes (CLI): 0 success/clean, 1 findings at or above the failing severity,
2 usage or input error, 3 internal error.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_INPUT = 2
EXIT_INTERNAL = 3


class ModelcrateError(Exception):
    """Root of every error modelcrate raises on purpose."""

    exit_code = EXIT_INTERNAL
    code = "modelcrate-error"

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.hint = hint

    def render(self) -> str:
        """A diagnostic a person can act on: reference, what, where, how to fix."""
        lines = [f"error[{self.code}]: {self.message}"]
        if self.path:
            lines.append(f"  file: {self.path}")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class InputError(ModelcrateError):
    """Bad input from the user: a missing file, an unreadable policy, a bad option."""

    exit_code = EXIT_INPUT
    code = "input"
