"""Static model-file scanning: reads bytes, never imports or executes the artifact."""

from modelcrate.scan.engine import scan, scan_file
from modelcrate.scan.findings import FileReport, Finding, Location, Severity
from modelcrate.scan.limits import Limits
from modelcrate.scan.policy import Policy, load_policy
from modelcrate.scan.report import ScanReport

__all__ = [
    "FileReport",
    "Finding",
    "Limits",
    "Location",
    "Policy",
    "ScanReport",
    "Severity",
    "load_policy",
    "scan",
    "scan_file",
]
