"""The pickle scanner: every concatenated pickle in a blob, legacy torch, joblib, nested pickles.

Runs :class:`~modelcrate.scan.pickle_vm.Machine` over the bytes (never unpickles) and turns
what it saw into findings: one per distinct global per stream (with a count and how it was
called), one per unsafe call or stream defect. Literals given to pickle loaders are scanned as
nested pickles; a call of ``torch.storage._load_from_bytes`` (how ``pickle.dumps`` stores a
tensor's storage) with one exact literal that was fully analysed is judged by what that
literal holds, any other nested load stays HIGH or above.
"""

from __future__ import annotations

from modelcrate.scan.context import Blob, ScanContext
from modelcrate.scan.findings import Location, Severity
from modelcrate.scan.limits import Limits
from modelcrate.scan.pickle_globals import GlobalVerdict
from modelcrate.scan.pickle_vm import NESTED, Issue, Machine, Mode, Sink
from modelcrate.scan.policy import Policy

__all__ = ["looks_like_pickle", "scan_pickle"]

TORCH_MAGIC = 0x1950A86A20F9469CFC6C
TORCH_PROTOCOL = 1001
_LEGACY_PICKLES = 5  # magic, protocol, sys_info, object, storage keys; raw storages follow
_PROBE_BYTES = 65_536
_PROBE_OPS = 64

# formats whose nested scan is complete enough to judge a loader call by (pickle_vm.NESTED)
_JUDGED_FORMATS = frozenset({"pickle", "pytorch-legacy"})
_INCOMPLETE = frozenset(
    {"limits.exceeded", "archive.bomb", "pickle.expansion", "pickle.malformed", "format.unknown"}
)

_WHY = {
    "allowlisted": "on the built-in allowlist of data types and tensor rebuild functions",
    NESTED: "it deserializes a literal in the file, which was scanned in full",
    "policy": "admitted by the scan policy",
    "dangerous": "a loader resolving or calling it can run code or reach the system",
    "unknown": "not on the allowlist: the loader imports it and may call it; "
    "allow it in the policy only if you trust its code",
}


def scan_pickle(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """Scan every pickle concatenated in ``data``. Returns pickle, joblib or pytorch-legacy."""
    verdicts: dict[tuple[str, str], GlobalVerdict] = {}
    n = len(data)
    pos = 0
    count = 0
    legacy = False
    joblib = False
    first_value: object = None
    limit = ctx.limits.max_pickles_per_stream
    while pos < n:
        if count and not _starts_like_pickle(data, pos):
            break
        if count >= limit:
            ctx.limit(
                "pickles",
                f"more than {limit} concatenated pickles; the rest were not scanned",
                loc.at(pos),
            )
            break
        # legacy torch files: the object pickle (after magic, protocol and sys_info) names
        # storages whose data follows in the same file
        storages = n if legacy and count >= 2 else None
        sink, machine = _run_stream(data, pos, ctx, verdicts, storages)
        _report(sink, machine, loc, ctx, depth, trailing=count > 0)
        count += 1
        joblib = joblib or sink.joblib
        value = machine.value if machine.stopped else None
        if count == 1:
            first_value = value
            legacy = type(value) is int and value == TORCH_MAGIC
        elif count == 2 and type(value) is int and value == TORCH_PROTOCOL:
            legacy = legacy or first_value is not None
        if not machine.stopped or machine.error is not None:
            break
        if machine.pos < machine.frame_end < n and not legacy:
            # STOP inside a frame: a file reader resumes at the frame end, bytes at STOP+1.
            alt, alt_machine = _run_stream(data, machine.frame_end, ctx, verdicts)
            if alt.uses or alt.issues:
                _report(alt, alt_machine, loc, ctx, depth, trailing=True)
        pos = machine.pos
        if legacy and count >= _LEGACY_PICKLES:
            break
    if count > 1:
        ctx.add(
            Severity.INFO if legacy else Severity.LOW,
            "pickle.multiple-streams",
            f"{count} pickles are concatenated in this stream"
            + (" (legacy torch.save layout)" if legacy else ""),
            loc.at(0),
            why="loaders that call pickle.load repeatedly (legacy torch, custom readers) run "
            "every one of them; all were scanned",
        )
    if legacy:
        return "pytorch-legacy"
    return "joblib" if joblib else "pickle"


def _run_stream(
    data: Blob,
    start: int,
    ctx: ScanContext,
    verdicts: dict[tuple[str, str], GlobalVerdict],
    storage_limit: int | None = None,
) -> tuple[Sink, Machine]:
    """Run one pickle; when frames are violated, run the C file reader's reading as well."""
    sink = Sink(ctx.limits, ctx.policy, verdicts, dialect=ctx.pickle_dialect)
    sink.storage_limit = storage_limit
    machine = Machine(data, start, sink).run()
    if sink.frame_violation:
        alt = Sink(ctx.limits, ctx.policy, verdicts, dialect=ctx.pickle_dialect)
        alt.storage_limit = storage_limit
        alt_machine = Machine(data, start, alt, mode=Mode.CFILE).run()
        _merge(sink, alt)
        if alt_machine.error is not None and machine.error is None:
            sink.issue(
                Severity.HIGH,
                "pickle.malformed",
                f"read as the C file unpickler does, the stream breaks at offset "
                f"{alt_machine.error_offset}: {alt_machine.error}",
                alt_machine.error_offset,
                why="everything before the error still runs in that loader",
            )
    return sink, machine


def _merge(into: Sink, other: Sink) -> None:
    for key, use in other.uses.items():
        mine = into.uses.get(key)
        if mine is None:
            into.uses[key] = use
            continue
        for kind in use.calls:
            if kind not in mine.calls:
                mine.calls.append(kind)
    seen = {(i.rule_id, i.offset, i.message) for i in into.issues}
    into.issues.extend(i for i in other.issues if (i.rule_id, i.offset, i.message) not in seen)
    into.nested.extend(other.nested)
    into.limit_hits.extend(other.limit_hits)
    into.joblib = into.joblib or other.joblib


def _report(
    sink: Sink,
    machine: Machine,
    loc: Location,
    ctx: ScanContext,
    depth: int,
    *,
    trailing: bool,
) -> None:
    judged = _report_nested(sink, loc, ctx, depth)
    for use in sink.uses.values():
        verdict = use.effective
        symbol = f"{use.module}.{use.name}"
        if verdict.category == NESTED and not judged.get(symbol, False):
            verdict = use.verdict  # a literal it was given could not be fully analysed
        message = f"imports {symbol}: {verdict.reason}"
        if use.calls:
            message += f" and calls it via {'/'.join(use.calls)}"
        if use.count > 1:
            message += f"; {use.count} references"
        ctx.add(
            verdict.severity,
            "pickle.global",
            message,
            loc.at(use.offset),
            why=_WHY.get(verdict.category, verdict.reason),
            symbol=symbol,
        )
    for issue in sink.issues:
        _add_issue(ctx, loc, issue)
    limit_offsets = set()
    for name, message, offset in sink.limit_hits:
        limit_offsets.add(offset)
        if name == "expansion":
            ctx.add(
                Severity.HIGH,
                "pickle.expansion",
                message,
                loc.at(offset),
                why="a small file that expands to a huge object graph exhausts memory in "
                "consumers that walk it",
            )
        else:
            ctx.limit(name, message, loc.at(offset))
    if machine.error is not None and machine.error_offset not in limit_offsets:
        substantive = bool(sink.uses or sink.issues) or not trailing
        ctx.add(
            Severity.HIGH if substantive else Severity.LOW,
            "pickle.malformed",
            f"malformed pickle at offset {machine.error_offset}: {machine.error}",
            loc.at(machine.error_offset),
            why="pickle.load runs every opcode before the error, so a broken tail does not "
            "make the payload before it harmless"
            if substantive
            else "bytes after the last complete pickle look like a pickle but do not parse",
        )


def _report_nested(sink: Sink, loc: Location, ctx: ScanContext, depth: int) -> dict[str, bool]:
    """Scan every literal given to a pickle loader; judge each call by what its literal holds.

    Returns, per loader, whether every literal it was given was exact and fully analysed
    (parsed to the end as a pickle or legacy torch file, no limit reached): then the call is
    as safe as those literals, whose own findings are reported where they are. Anything else
    (a literal cut at the size limit, text instead of bytes, another format, a parse error)
    keeps the call at HIGH or above.
    """
    judged: dict[str, bool] = {}
    for nested in sink.nested:
        start = len(ctx.findings)
        fmt = ctx.scan_blob(
            nested.data, loc.child(f"pickle@{nested.offset}"), depth + 1, name="nested.pkl"
        )
        found = ctx.findings[start:]
        worst = max((f.severity for f in found), default=Severity.INFO)
        analysed = (
            nested.judged
            and fmt in _JUDGED_FORMATS
            and not any(f.rule_id in _INCOMPLETE for f in found)
        )
        judged[nested.via] = judged.get(nested.via, True) and analysed
        if analysed:
            severity = worst
            why = (
                "the literal was scanned in full; the call is as safe as what it holds, "
                "whose findings are listed under this location"
            )
        else:
            severity = max(worst, Severity.HIGH)
            why = (
                "a pickle that unpickles another pickle hides its payload from name-based "
                "scanners; this literal could not be analysed in full, so the call is not admitted"
            )
        ctx.add(
            severity,
            "pickle.nested",
            f"{nested.via} is given a {len(nested.data)}-byte literal; "
            "it was scanned as a nested pickle",
            loc.at(nested.offset),
            why=why,
            symbol=nested.via,
        )
    return judged


def _add_issue(ctx: ScanContext, loc: Location, issue: Issue) -> None:
    ctx.add(
        issue.severity,
        issue.rule_id,
        issue.message,
        loc.at(issue.offset),
        why=issue.why,
        symbol=issue.symbol,
    )


def _starts_like_pickle(data: Blob, pos: int) -> bool:
    first = data[pos]
    if first == 0x80:
        return pos + 1 < len(data) and data[pos + 1] <= 5
    return looks_like_pickle(data[pos : pos + _PROBE_BYTES])


def looks_like_pickle(data: Blob) -> bool:
    """Cheap test for protocol 0/1 pickles (no ``\\x80`` header); rejects text, JSON and CSV.

    True when a capped run of the machine reaches STOP, decodes an import of a well-formed
    dotted name, or gets through many opcodes without error.
    """
    window = bytes(data[:_PROBE_BYTES])
    if not window:
        return False
    sink = Sink(Limits(), Policy(), {}, probe=True)
    machine = Machine(window, 0, sink, joblib=False, max_ops=_PROBE_OPS).run()
    if machine.stopped:
        return True
    if sink.saw_global and machine.ops >= 2:
        return True
    if sink.limit_hits and sink.limit_hits[0][0] == "pickle-ops":
        return True
    return machine.truncated and len(data) > len(window) and machine.ops >= 8
