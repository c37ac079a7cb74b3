"""Scan results as data: an ordered severity, a location, a finding."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Severity(enum.IntEnum):
    """How bad a finding is. Ordered: ``INFO < LOW < MEDIUM < HIGH < CRITICAL``."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Parse a severity name, case-insensitively (``"high"`` -> ``HIGH``)."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown severity {text!r}; expected one of: {names}") from None


@dataclass(frozen=True)
class Location:
    """Where a finding is: a file, the chain of archive members inside it, a byte offset.

    ``members`` is the path through nested containers, outermost first, e.g.
    ``("model/data.pkl",)`` for a member of a PyTorch zip, or
    ``("weights.npz", "x.npy")`` for an array inside an ``.npz`` inside a zip.
    ``offset`` is the byte offset inside the innermost member (or the file).
    """

    path: str
    members: tuple[str, ...] = ()
    offset: int | None = None

    def child(self, member: str) -> Location:
        """The location of ``member`` inside this one."""
        return Location(self.path, (*self.members, member), None)

    def at(self, offset: int | None) -> Location:
        """This location at a byte offset."""
        return Location(self.path, self.members, offset)

    def __str__(self) -> str:
        text = self.path + "".join(f"!{m}" for m in self.members)
        if self.offset is not None:
            text += f"@{self.offset}"
        return text


@dataclass(frozen=True)
class Finding:
    """One observation. ``rule_id`` is stable (see :mod:`modelcrate.scan.rules`)."""

    severity: Severity
    rule_id: str
    message: str
    location: Location
    why: str = ""
    symbol: str | None = None  # the global/op/layer the finding is about, when there is one
    # Set when a policy changed (or tried to lower) the severity the scanner decided: the
    # scanner's own severity, and the note shown with the finding (policy file and reason).
    original_severity: Severity | None = None
    policy_note: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity.name,
            "rule_id": self.rule_id,
            "message": self.message,
            "why": self.why,
            "symbol": self.symbol,
            "original_severity": (
                self.original_severity.name if self.original_severity is not None else None
            ),
            "policy_note": self.policy_note,
            "location": {
                "path": self.location.path,
                "members": list(self.location.members),
                "offset": self.location.offset,
                "display": str(self.location),
            },
        }


@dataclass
class FileReport:
    """What the scan saw in one top-level file."""

    path: str
    size: int
    format: str
    sha256: str | None
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def verdict(self) -> Severity | None:
        """The highest severity found, or ``None`` when there is no finding at all."""
        return max((f.severity for f in self.findings), default=None)
