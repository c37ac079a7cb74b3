"""modelcrate: from a trained model file to a secure, reproducible, typed and fast service."""

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from modelcrate.errors import InputError, ModelcrateError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from modelcrate.crate.build import build
    from modelcrate.scan import Finding, Location, Policy, ScanReport, Severity, load_policy, scan

_SCAN_NAMES = frozenset(
    {"Finding", "Location", "Policy", "ScanReport", "Severity", "load_policy", "scan"}
)


def __getattr__(name: str) -> Any:
    """Every stage loads on first use: ``import modelcrate`` (and a server's start-up, which
    needs neither the scanner nor the build) stays cheap."""
    if name == "build":
        from modelcrate.crate.build import build

        return build
    if name in _SCAN_NAMES:
        return getattr(importlib.import_module("modelcrate.scan"), name)
    raise AttributeError(f"module 'modelcrate' has no attribute {name!r}")


__all__ = [
    "Finding",
    "InputError",
    "Location",
    "ModelcrateError",
    "Policy",
    "ScanReport",
    "Severity",
    "__version__",
    "build",
    "load_policy",
    "scan",
]


class _Package(types.ModuleType):
    """``modelcrate.scan`` is the scan *function* (the public API), although a subpackage of the
    same name exists. Importing a subpackage makes Python set the parent's attribute to the
    module; this descriptor keeps the function visible whichever is imported first."""

    @property
    def scan(self) -> Any:
        return importlib.import_module("modelcrate.scan").scan

    @scan.setter
    def scan(self, _value: Any) -> None:
        pass  # the import system records the subpackage; sys.modules keeps it


sys.modules[__name__].__class__ = _Package
