"""What runs of the symbolic Pickle Machine (:mod:`modelcrate.scan.pickle_vm`) collect.

A :class:`Sink` gathers, over every run on one stream (nested object arrays share it), the
findings (:class:`Issue`), each global's uses (:class:`GlobalUse`), pickles passed to loaders
(:class:`Nested`), limit hits and the allocation budget of
:mod:`modelcrate.scan.callables`. :class:`MachineError` and :class:`LimitHit` end a run; the
machine catches both, so neither escapes to callers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelcrate.scan.findings import Severity
from modelcrate.scan.limits import Limits
from modelcrate.scan.pickle_globals import GlobalVerdict, classify_global
from modelcrate.scan.policy import Policy

__all__ = ["GlobalUse", "Issue", "LimitHit", "MachineError", "Nested", "Sink"]


@dataclass(frozen=True, slots=True)
class Issue:
    """A finding produced by the machine, turned into a ``Finding`` by the scanner."""

    severity: Severity
    rule_id: str
    message: str
    offset: int
    why: str = ""
    symbol: str | None = None


@dataclass(slots=True)
class GlobalUse:
    """Every reference to one global in a stream: first offset, count, how it was used."""

    module: str
    name: str
    verdict: GlobalVerdict
    offset: int
    count: int = 1
    calls: list[str] = field(default_factory=list)
    checked: GlobalVerdict | None = None  # verdict from the constant arguments of its calls

    @property
    def effective(self) -> GlobalVerdict:
        """The verdict to report: argument-checked when every use could be checked."""
        if self.checked is not None and self.calls:
            return self.checked
        return self.verdict


@dataclass(frozen=True, slots=True)
class Nested:
    """A literal passed to a loader of pickles (``pickle.loads(b'...')``): scan it too.

    ``judged``: ``data`` is exactly what a loader that deserializes bytes
    (:data:`~modelcrate.scan.pickle_globals.NESTED_LITERAL_LOADERS`) is given, so the call is
    judged by what the nested scan finds in it.
    """

    offset: int
    data: bytes
    via: str
    judged: bool = False


class MachineError(Exception):
    """Malformed input: the run stops at ``offset``."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class LimitHit(Exception):
    """A resource limit (``name``) was reached at ``offset``."""

    def __init__(self, name: str, message: str, offset: int) -> None:
        super().__init__(message)
        self.name = name
        self.offset = offset


@dataclass
class Sink:
    """What runs of the machine over one stream collect (shared with nested object arrays)."""

    limits: Limits
    policy: Policy
    verdicts: dict[tuple[str, str], GlobalVerdict]
    probe: bool = False
    dialect: str | None = None  # see ScanContext.pickle_dialect
    uses: dict[tuple[str, str], GlobalUse] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    nested: list[Nested] = field(default_factory=list)
    limit_hits: list[tuple[str, str, int]] = field(default_factory=list)
    ops: int = 0
    frame_violation: bool = False
    joblib: bool = False
    saw_global: bool = False
    cost: int = 0  # items allocated by calls from numbers and computed sequences
    over_budget: bool = False
    storage_limit: int | None = None  # legacy torch: storages must fit in the file

    def issue(
        self,
        severity: Severity,
        rule_id: str,
        message: str,
        offset: int,
        *,
        why: str = "",
        symbol: str | None = None,
    ) -> None:
        self.issues.append(Issue(severity, rule_id, message, offset, why, symbol))

    def verdict(self, module: str, name: str) -> GlobalVerdict:
        key = (module, name)
        v = self.verdicts.get(key)
        if v is None:
            v = classify_global(module, name, self.policy, dialect=self.dialect)
            self.verdicts[key] = v
        return v
