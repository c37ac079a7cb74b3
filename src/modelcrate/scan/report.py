"""The result of a scan over one or more paths."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from modelcrate.scan.findings import FileReport, Finding, Severity


@dataclass
class ScanReport:
    """Per-file reports in the order they were scanned; the verdict is the maximum severity."""

    files: list[FileReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def findings(self) -> list[Finding]:
        return [f for fr in self.files for f in fr.findings]

    @property
    def verdict(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def failed(self, fail_on: Severity) -> bool:
        """True when any finding is at or above ``fail_on``."""
        v = self.verdict
        return v is not None and v >= fail_on

    def counts(self) -> dict[str, int]:
        c = Counter(f.severity.name for f in self.findings)
        return {s.name: c.get(s.name, 0) for s in reversed(Severity)}

    def to_dict(self) -> dict[str, object]:
        v = self.verdict
        return {
            "verdict": v.name if v is not None else "NONE",
            "counts": self.counts(),
            "seconds": round(self.seconds, 6),
            "files": [
                {
                    "path": fr.path,
                    "size": fr.size,
                    "format": fr.format,
                    "sha256": fr.sha256,
                    "verdict": fr.verdict.name if fr.verdict is not None else "NONE",
                    "seconds": round(fr.seconds, 6),
                    "findings": [f.to_dict() for f in fr.findings],
                }
                for fr in self.files
            ],
        }
