"""modelcrate: from a trained model file to a secure, reproducible, typed and fast service."""

from modelcrate.errors import InputError, ModelcrateError
from modelcrate.scan import Finding, Location, Policy, ScanReport, Severity, load_policy, scan

__version__ = "0.1.0"

__all__ = [
    "Finding",
    "InputError",
    "Location",
    "ModelcrateError",
    "Policy",
    "ScanReport",
    "Severity",
    "__version__",
    "load_policy",
    "scan",
]
