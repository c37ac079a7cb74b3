"""modelcrate: from a trained model file to a secure, reproducible, typed and fast service."""

from typing import TYPE_CHECKING, Any

from modelcrate.errors import InputError, ModelcrateError
from modelcrate.scan import Finding, Location, Policy, ScanReport, Severity, load_policy, scan

__version__ = "0.1.0"

if TYPE_CHECKING:
    from modelcrate.crate.build import build


def __getattr__(name: str) -> Any:
    """Heavier stages load on first use: ``import modelcrate`` stays cheap."""
    if name == "build":
        from modelcrate.crate.build import build

        return build
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
