"""What counts as "a loader ran code" and "the scan let the file through".

* A loader **reached** a callable when its audit log holds a ``pickle.find_class`` of a global
  that modelcrate's own classifier does not allowlist (anything but an INFO "allowlisted"
  verdict; numpy's and ``_codecs``' argument-checked reconstructors and torch's nested
  ``_load_from_bytes`` count as allowlisted, their effects show as further events), or an
  event in the server's TELLING list (a process, a socket, a native library, code compiled
  from a string).
* The **scan passes** when ``scan_file`` with the default limits and policy reports nothing at or
  above the default gate (HIGH): what ``modelcrate scan`` exits 0 on.
* A **miss**: some loader reached a callable and the scan passed.
* A **false alarm**: the scan stops the file although no loader reached anything and every loader
  that opens the unmutated seed cleanly also opens the mutant cleanly.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import FrameType

from modelcrate.scan import Severity, scan_file
from tests.scan.differential.runner import LoaderResult

GATE = Severity.HIGH

# Nested loaders the scan judges by the literal they load (what real libraries write: a
# pickle.dumps of a tensor stores its storage as torch.storage._load_from_bytes(b"...")). In a
# loader's log they are transparent: the nested load's own find_class events are judged instead.
TRANSPARENT = frozenset({("torch.storage", "_load_from_bytes")})


@cache
def allowlisted(module: str, name: str) -> bool:
    from modelcrate.scan.pickle_globals import classify_global

    if (module, name) in TRANSPARENT:
        return True
    verdict = classify_global(module, name)
    if verdict.severity == Severity.INFO and verdict.category == "allowlisted":
        return True
    # reconstructors whose constant arguments the scanner checks (numpy's ufunc reconstructor):
    # what they then import or call shows up as its own event
    return -1 in verdict.arg_callables and verdict.category != "dangerous"


def reached(result: LoaderResult) -> tuple[str, ...]:
    """The non-allowlisted globals and telling events in one loader's log, first seen first."""
    out: list[str] = []
    for module, name in result.globals:
        sym = f"{module}.{name}"
        if not allowlisted(module, name) and sym not in out:
            out.append(sym)
    out.extend(t.split(" ", 1)[0] for t in result.telling if t.split(" ", 1)[0] not in out)
    return tuple(out)


@dataclass(frozen=True)
class ScanResult:
    worst: Severity | None
    fmt: str
    findings: tuple[str, ...]  # "SEVERITY rule_id" of findings at MEDIUM or above
    seconds: float
    error: str = ""  # "timeout" or the exception, when the scan itself failed

    @property
    def passes(self) -> bool:
        """What `modelcrate scan` exits 0 on: no finding at or above the gate, no crash."""
        return not self.error and (self.worst is None or self.worst < GATE)


class ScanTimeout(BaseException):
    """Raised by the alarm: a BaseException so that the scanner's fail-closed handler, which
    catches Exception, does not turn a hang into an ordinary finding."""


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise ScanTimeout

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def scan_path(path: Path, timeout: float = 60.0) -> ScanResult:
    start = time.perf_counter()
    try:
        with _alarm(timeout):
            report = scan_file(path)
    except ScanTimeout:
        return ScanResult(None, "timeout", (), time.perf_counter() - start, "timeout")
    except Exception as exc:  # a crash is reported, not raised: the campaign goes on
        err = f"{type(exc).__name__}: {exc}"[:300]
        return ScanResult(None, "crash", (), time.perf_counter() - start, err)
    worst = max((f.severity for f in report.findings), default=None)
    shown = tuple(
        f"{f.severity.name} {f.rule_id}" for f in report.findings if f.severity >= Severity.MEDIUM
    )
    return ScanResult(worst, report.format, shown, time.perf_counter() - start)


Scanner = Callable[[Path], ScanResult]
