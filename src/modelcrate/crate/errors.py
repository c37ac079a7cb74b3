"""Errors of the crate stage: a failed scan gate (exit 1); the rest are InputErrors (exit 2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelcrate.errors import EXIT_FINDINGS, InputError, ModelcrateError

if TYPE_CHECKING:
    from modelcrate.scan import ScanReport


class ScanFailed(ModelcrateError):
    """The scan gate found something at or above the failing severity; the build stopped.

    ``report`` is the full scan report, for the CLI to render like ``modelcrate scan``.
    """

    exit_code = EXIT_FINDINGS
    code = "scan-failed"

    def __init__(
        self, message: str, *, report: ScanReport, path: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, path=path, hint=hint)
        self.report = report


class CrateNotFound(InputError):
    """A ``NAME[:VERSION]`` that the store does not hold."""

    code = "crate-not-found"


class StoreError(InputError):
    """The store cannot be written (read-only, full, not a folder); nothing in it changed."""

    code = "store"


class IntegrityError(InputError):
    """A crate's bytes do not match its manifest (tampered or corrupt); nothing was imported."""

    code = "integrity"


class CorruptModel(InputError):
    """The model file is damaged (truncated, malformed): the scan could not read it as its
    format. Not a security finding, but the build cannot go on. ``report`` has the details."""

    code = "corrupt-model"

    def __init__(
        self, message: str, *, report: ScanReport, path: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, path=path, hint=hint)
        self.report = report
