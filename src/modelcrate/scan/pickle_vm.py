"""A symbolic Pickle Machine: runs a pickle's opcodes over bytes without importing anything.

Values are tracked symbolically: literals as real Python values, globals as :class:`Global`,
call results as :class:`Call`, everything a loader would fetch from outside (persistent ids,
extension codes, out-of-band buffers, computed globals) as :class:`Opaque`. Dicts and sets are
:class:`SDict` / :class:`SSet` so unhashable symbolic keys never raise.

Reading follows CPython (``Lib/pickle.py``, ``Modules/_pickle.c``). FRAMEs are read two ways,
chosen by :class:`Mode`, because the loaders disagree when an opcode crosses a frame end (checked
empirically on CPython 3.11 with harmless globals):

* ``LINEAR``: ``pickle.loads`` (C, bytes) and ``pickletools`` ignore frames; the pure-Python
  ``_Unpickler`` (joblib) reads the same bytes but raises at the crossing read.
* ``CFILE``: the C unpickler reading a file without ``peek`` (``torch.load`` on a ``BytesIO``)
  drops the unread rest of the frame and reads the opcode's argument from the frame end.

The machine never raises on bad input: errors, limits and findings end up in a :class:`Sink`.
"""

from __future__ import annotations

import codecs
import enum
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat

from modelcrate.scan.context import Blob
from modelcrate.scan.findings import Severity
from modelcrate.scan.limits import Limits
from modelcrate.scan.pickle_globals import (
    ARGS_CHECKED,
    GlobalVerdict,
    check_reconstruct_args,
    classify_global,
    normalize,
)
from modelcrate.scan.pickle_values import (
    Call,
    Global,
    Opaque,
    SDict,
    SSet,
    bytes_of,
    describe,
    is_nested_loader,
    numpy_array_bytes,
)
from modelcrate.scan.policy import Policy

__all__ = ["Call", "Global", "Issue", "Machine", "Mode", "Opaque", "SDict", "SSet", "Sink"]

_NOFRAME = sys.maxsize
_BIG = 65_536  # longer literals stay in the blob as Opaque("blob", (start, length))
_HIGHEST_PROTOCOL = 5
_MAGIC_SLOTS = 1 << 31  # sanity cap for memo indices


class Mode(enum.Enum):
    """How FRAME boundaries are honoured (see the module docstring)."""

    LINEAR = "linear"
    CFILE = "c-file"


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
    """A literal passed to a loader of pickles (``pickle.loads(b'...')``): scan it too."""

    offset: int
    data: bytes
    via: str


class _Error(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class _LimitHit(Exception):
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
    uses: dict[tuple[str, str], GlobalUse] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    nested: list[Nested] = field(default_factory=list)
    limit_hits: list[tuple[str, str, int]] = field(default_factory=list)
    ops: int = 0
    frame_violation: bool = False
    joblib: bool = False
    saw_global: bool = False

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
            v = classify_global(module, name, self.policy)
            self.verdicts[key] = v
        return v


_RECORDED = Severity.HIGH  # arg_callables must be globals whose verdict is below this


class Machine:
    """One run of the Pickle Machine from ``start`` to its STOP (or first error)."""

    def __init__(
        self,
        data: Blob,
        start: int,
        sink: Sink,
        *,
        mode: Mode = Mode.LINEAR,
        joblib: bool = True,
        end: int | None = None,
        max_ops: int | None = None,
    ) -> None:
        self.data = data
        self.pos = start
        self.start = start
        self.end = len(data) if end is None else end
        self.sink = sink
        self.mode = mode
        self.joblib = joblib
        lim = sink.limits
        self.max_ops = lim.max_pickle_ops if max_ops is None else max_ops
        self.max_depth = lim.max_stack_depth
        self.max_memo = lim.max_memo_entries
        self.stack: list[object] = []
        self.metastack: list[list[object]] = []
        self.memo: dict[int, object] = {}
        self.proto = 0
        self.frame_end = _NOFRAME
        self.resume_at: int | None = None
        self.stopped = False
        self.value: object = None
        self.error: str | None = None
        self.error_offset = start
        self.ops = 0
        self.op_offset = start
        self.truncated = False
        self._weights: dict[int, int] = {}
        self._keep: list[object] = []

    # ------------------------------------------------------------------ reading

    def _cross(self, p: int, n: int) -> int:
        """A read of ``n`` bytes at ``p`` goes past ``frame_end``; return where it really starts."""
        fe = self.frame_end
        self.frame_end = _NOFRAME
        if p < fe:
            self._frame_violation(
                f"a {n}-byte read at offset {p} crosses the end of the frame at offset {fe}", p
            )
            if self.mode is Mode.CFILE:
                p = fe  # the C file reader drops the rest of its frame buffer
        if self.resume_at is not None and p >= fe:
            p = self.resume_at  # joblib array bytes were read at the frame end
            self.resume_at = None
        self.pos = p
        return p

    def _frame_violation(self, message: str, offset: int) -> None:
        if not self.sink.frame_violation:
            self.sink.issue(
                Severity.HIGH,
                "pickle.frame-violation",
                message,
                offset,
                why="C and pure-Python unpicklers read this stream differently; "
                "every reading was scanned",
            )
        self.sink.frame_violation = True

    def _read(self, n: int) -> bytes:
        p = self.pos
        e = p + n
        if e <= self.frame_end and e <= self.end:
            self.pos = e
            return self.data[p:e]
        return self._read_slow(n)

    def _read_slow(self, n: int) -> bytes:
        p = self.pos
        if p + n > self.frame_end:
            p = self._cross(p, n)
        e = p + n
        if e > self.end:
            self.truncated = True
            raise _Error(f"truncated: needs {n} bytes at offset {p}", p)
        self.pos = e
        return self.data[p:e]

    def _skip(self, n: int) -> int:
        """Like ``_read`` but returns the start offset without copying the bytes."""
        p = self.pos
        if p + n > self.frame_end:
            p = self._cross(p, n)
        if p + n > self.end:
            self.truncated = True
            raise _Error(f"truncated: needs {n} bytes at offset {p}", p)
        self.pos = p + n
        return p

    def _readline(self) -> bytes:
        p = self.pos
        nl = self.data.find(b"\n", p, self.end)
        if nl < 0:
            self.truncated = True
            raise _Error(f"line starting at offset {p} has no newline", p)
        if nl + 1 > self.frame_end:
            q = self._cross(p, nl + 1 - p)
            if q != p:
                p = q
                nl = self.data.find(b"\n", p, self.end)
                if nl < 0:
                    raise _Error(f"line starting at offset {p} has no newline", p)
        self.pos = nl + 1
        return bytes(self.data[p:nl])

    def _uint(self, n: int) -> int:
        return int.from_bytes(self._read(n), "little")

    # ------------------------------------------------------------------ stack

    def _pop(self) -> object:
        if not self.stack:
            raise _Error("stack underflow", self.op_offset)
        return self.stack.pop()

    def _top(self) -> object:
        if not self.stack:
            raise _Error("stack underflow", self.op_offset)
        return self.stack[-1]

    def _pop_mark(self) -> list[object]:
        if not self.metastack:
            raise _Error("MARK not found", self.op_offset)
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _weight(self, items: list[object] | tuple[object, ...], value: object) -> None:
        """Track the logical size of a new container (billion-laughs detection)."""
        if items:
            self._grow(value, 1 + sum(map(self._weights.get, map(id, items), repeat(1))))

    def _grow(self, value: object, total: int) -> None:
        key = id(value)
        if key not in self._weights:
            self._keep.append(value)  # keeps ids unique while their weights are remembered
        self._weights[key] = total
        ops = self.sink.ops + self.ops
        if total > self.sink.limits.max_expansion_ratio * max(ops, 1000):
            raise _LimitHit(
                "expansion",
                f"the stream references {total} values from {ops} opcodes "
                f"(ratio above {self.sink.limits.max_expansion_ratio:.0f}): "
                "billion-laughs expansion",
                self.op_offset,
            )

    # ------------------------------------------------------------------ symbols

    def _global(self, module: str, name: str) -> Global:
        module, name = normalize(module, name)
        off = self.op_offset
        sink = self.sink
        if sink.probe:
            sink.saw_global = sink.saw_global or (_ident(module) and _ident(name))
            return Global(module, name, off)
        key = (module, name)
        use = sink.uses.get(key)
        if use is None:
            sink.uses[key] = GlobalUse(module, name, sink.verdict(module, name), off)
        else:
            use.count += 1
        return Global(module, name, off)

    def _call(self, callee: object, args: object, kind: str) -> Call:
        off = self.op_offset
        call = Call(callee, args, kind, off)
        if self.sink.probe:
            return call
        if type(callee) is Global:
            use = self.sink.uses[(callee.module, callee.name)]
            if kind not in use.calls:
                use.calls.append(kind)
            if use.verdict.arg_callables:
                self._check_arg_callables(callee, use.verdict, args, kind)
            if type(args) is tuple and args:
                self._maybe_nested(callee, args)
        else:
            self.sink.issue(
                Severity.HIGH,
                "pickle.call",
                f"calls {describe(callee)} via {kind}",
                off,
                why="legitimate pickles call module-level globals directly; calling a computed "
                "value hides what runs",
                symbol=describe(callee),
            )
        if type(args) is tuple:
            self._weight(args, call)
        return call

    def _check_arg_callables(
        self, callee: Global, verdict: GlobalVerdict, args: object, kind: str
    ) -> None:
        """Arguments that ``callee`` calls must be constants or built from allowlisted globals."""
        use = self.sink.uses[(callee.module, callee.name)]
        if ARGS_CHECKED in verdict.arg_callables:
            if type(args) is tuple:
                checked = check_reconstruct_args(
                    callee.module, callee.name, list(args), self.sink.policy
                )
            else:
                checked = GlobalVerdict(
                    Severity.HIGH,
                    f"{callee.module}.{callee.name} is called with arguments computed at load time",
                    "unknown",
                )
            if checked is not None and (
                use.checked is None or checked.severity > use.checked.severity
            ):
                use.checked = checked
        if type(args) is not tuple:
            return
        for idx in verdict.arg_callables:
            if idx < 0 or idx >= len(args):
                continue
            arg = args[idx]
            if self._arg_ok(arg, 0):
                continue
            sev = Severity.HIGH
            if type(arg) is Global:
                sev = max(sev, self.sink.verdict(arg.module, arg.name).severity)
            self.sink.issue(
                sev,
                "pickle.call",
                f"{callee.module}.{callee.name} (via {kind}) calls its argument {idx}, "
                f"{describe(arg)}, which is not built from allowlisted globals",
                self.op_offset,
                why="an allowlisted callable that calls its argument is only as safe as "
                "the argument",
                symbol=f"{callee.module}.{callee.name}",
            )

    def _arg_ok(self, arg: object, depth: int) -> bool:
        if arg is None or type(arg) in (bool, int, float, str, bytes):
            return True
        if type(arg) is Global:
            v = self.sink.verdict(arg.module, arg.name)
            return v.severity < _RECORDED and v.category in ("allowlisted", "policy")
        if type(arg) is Call:
            return self._arg_ok(arg.callee, depth + 1) and type(arg.callee) is Global
        if type(arg) is tuple and depth < 3:
            return all(self._arg_ok(a, depth + 1) for a in arg)
        return False

    def _maybe_nested(self, callee: Global, args: tuple[object, ...]) -> None:
        via = f"{callee.module}.{callee.name}"
        if not is_nested_loader(callee.module, callee.name):
            first = args[0]
            if not (type(first) is Global and is_nested_loader(first.module, first.name)):
                return
            via = f"{first.module}.{first.name}"
        cap = self.sink.limits.max_member_bytes
        for arg in args:
            blob = bytes_of(arg, self.data, cap)
            if blob:
                self.sink.nested.append(Nested(self.op_offset, blob, via))

    def _mutate(self, target: object, opname: str) -> None:
        """APPEND/SETITEM/ADDITEMS on something that is not a fresh literal container."""
        if type(target) is Global:
            self.sink.issue(
                Severity.CRITICAL,
                "pickle.attribute-injection",
                f"{opname} modifies the module-level object {target.module}.{target.name}",
                self.op_offset,
                why="changing module state while loading can redirect later imports or calls",
                symbol=f"{target.module}.{target.name}",
            )
        elif type(target) is Call:
            callee = target.callee
            if (
                type(callee) is Global
                and callee.module.startswith("torch")
                and "_rebuild" in callee.name
            ):
                self.sink.issue(
                    Severity.HIGH,
                    "pickle.call",
                    f"{opname} on a tensor rebuilt by {callee.module}.{callee.name}",
                    self.op_offset,
                    why="item assignment on tensors corrupts memory in torch<2.10 (CVE-2026-24747)",
                    symbol=f"{callee.module}.{callee.name}",
                )
        elif type(target) is not Opaque:
            raise _Error(f"{opname} on a {type(target).__name__} value", self.op_offset)

    # ------------------------------------------------------------------ run

    def run(self) -> Machine:
        """Execute until STOP, an error or a limit. Never raises on malformed input."""
        data = self.data
        sink = self.sink
        table = _DISPATCH
        max_ops = self.max_ops
        max_depth = self.max_depth
        ops = self.ops
        try:
            while not self.stopped:
                p = self.pos
                self.op_offset = p
                if p < self.frame_end and p < self.end:
                    op = data[p]
                    self.pos = p + 1
                else:
                    op = self._read(1)[0]
                    self.op_offset = self.pos - 1
                ops += 1
                self.ops = ops
                if ops > max_ops:
                    raise _LimitHit(
                        "pickle-ops", f"more than {max_ops} pickle opcodes", self.op_offset
                    )
                table[op](self)
                if len(self.stack) > max_depth:
                    raise _LimitHit(
                        "stack-depth", f"pickle stack deeper than {max_depth}", self.op_offset
                    )
        except _Error as exc:
            self.error = str(exc)
            self.error_offset = exc.offset
        except _LimitHit as exc:
            self.error = str(exc)
            self.error_offset = exc.offset
            sink.limit_hits.append((exc.name, str(exc), exc.offset))
        except (ValueError, OverflowError, UnicodeDecodeError, MemoryError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:200]
            self.error_offset = self.op_offset
        sink.ops += self.ops
        return self

    def _byte(self) -> int:
        p = self.pos
        if p < self.frame_end and p < self.end:
            self.pos = p + 1
            return self.data[p]
        return self._read(1)[0]

    # ------------------------------------------------------------------ opcodes

    def op_bad(self) -> None:
        op = self.data[self.op_offset]
        raise _Error(f"invalid opcode 0x{op:02x}", self.op_offset)

    def op_proto(self) -> None:
        proto = self._byte()
        if proto > _HIGHEST_PROTOCOL:
            raise _Error(f"unsupported pickle protocol {proto}", self.op_offset)
        self.proto = proto

    def op_frame(self) -> None:
        op_at = self.op_offset
        n = self._uint(8)
        here = self.pos
        if op_at < self.frame_end != _NOFRAME:
            self._frame_violation(
                f"FRAME at offset {op_at} starts inside the previous frame", op_at
            )
            if self.mode is Mode.CFILE:
                if here + n <= self.frame_end:
                    return  # the C reader already holds these bytes: nothing changes
                here = self.frame_end
        if here + n > self.end:
            self._frame_violation(
                f"FRAME at offset {op_at} declares {n} bytes but only {self.end - here} remain",
                op_at,
            )
            if self.mode is Mode.CFILE:
                raise _Error("pickle data was truncated (frame longer than the data)", op_at)
            self.frame_end = _NOFRAME
            return
        self.pos = here
        self.frame_end = here + n

    def op_stop(self) -> None:
        self.value = self._pop()
        self.stopped = True

    def op_mark(self) -> None:
        self.metastack.append(self.stack)
        self.stack = []
        if len(self.metastack) > self.max_depth:
            raise _LimitHit(
                "stack-depth", f"more than {self.max_depth} nested MARKs", self.op_offset
            )

    def op_pop(self) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark()

    def op_pop_mark(self) -> None:
        self._pop_mark()

    def op_dup(self) -> None:
        self.stack.append(self._top())

    # literals
    def op_none(self) -> None:
        self.stack.append(None)

    def op_newtrue(self) -> None:
        self.stack.append(True)

    def op_newfalse(self) -> None:
        self.stack.append(False)

    def op_int(self) -> None:
        line = self._readline()
        if line == b"00":
            self.stack.append(False)
        elif line == b"01":
            self.stack.append(True)
        else:
            self.stack.append(int(line, 0))

    def op_long(self) -> None:
        line = self._readline()
        if line.endswith(b"L"):
            line = line[:-1]
        self.stack.append(int(line, 0))

    def op_binint(self) -> None:
        self.stack.append(int.from_bytes(self._read(4), "little", signed=True))

    def op_binint1(self) -> None:
        self.stack.append(self._byte())

    def op_binint2(self) -> None:
        self.stack.append(self._uint(2))

    def op_long1(self) -> None:
        n = self._byte()
        self.stack.append(int.from_bytes(self._read(n), "little", signed=True))

    def op_long4(self) -> None:
        n = int.from_bytes(self._read(4), "little", signed=True)
        if n < 0:
            raise _Error("LONG4 with a negative byte count", self.op_offset)
        self.stack.append(int.from_bytes(self._read(n), "little", signed=True))

    def op_float(self) -> None:
        self.stack.append(float(self._readline()))

    def op_binfloat(self) -> None:
        import struct

        self.stack.append(struct.unpack(">d", self._read(8))[0])

    def _sized(self, n: int, kind: str) -> None:
        if n > _BIG:
            start = self._skip(n)
            self.stack.append(Opaque("blob", (start, n, kind), self.op_offset))
            return
        raw = self._read(n)
        if kind == "bytes":
            self.stack.append(raw)
        elif kind == "str":
            self.stack.append(raw.decode("utf-8", "surrogatepass"))
        else:  # py2 str: decoded with the loader's encoding (ASCII by default, latin-1 superset)
            self.stack.append(raw.decode("latin-1"))

    def op_string(self) -> None:
        line = self._readline()
        if len(line) < 2 or line[0] != line[-1] or line[0] not in b"\"'":
            raise _Error("the STRING opcode argument must be quoted", self.op_offset)
        raw = codecs.escape_decode(line[1:-1])[0]
        self.stack.append(raw.decode("latin-1"))

    def op_binstring(self) -> None:
        n = int.from_bytes(self._read(4), "little", signed=True)
        if n < 0:
            raise _Error("BINSTRING with a negative byte count", self.op_offset)
        self._sized(n, "py2str")

    def op_short_binstring(self) -> None:
        self._sized(self._byte(), "py2str")

    def op_unicode(self) -> None:
        self.stack.append(self._readline().decode("raw-unicode-escape"))

    def op_binunicode(self) -> None:
        self._sized(self._uint(4), "str")

    def op_short_binunicode(self) -> None:
        self._sized(self._byte(), "str")

    def op_binunicode8(self) -> None:
        self._sized(self._uint(8), "str")

    def op_binbytes(self) -> None:
        self._sized(self._uint(4), "bytes")

    def op_short_binbytes(self) -> None:
        self._sized(self._byte(), "bytes")

    def op_binbytes8(self) -> None:
        self._sized(self._uint(8), "bytes")

    def op_bytearray8(self) -> None:
        self._sized(self._uint(8), "bytes")

    # containers
    def op_empty_list(self) -> None:
        self.stack.append([])

    def op_empty_tuple(self) -> None:
        self.stack.append(())

    def op_empty_dict(self) -> None:
        self.stack.append(SDict([]))

    def op_empty_set(self) -> None:
        self.stack.append(SSet([], frozen=False))

    def op_list(self) -> None:
        items = self._pop_mark()
        self._weight(items, items)
        self.stack.append(items)

    def op_tuple(self) -> None:
        value = tuple(self._pop_mark())
        self._weight(value, value)
        self.stack.append(value)

    def op_tuple1(self) -> None:
        value = (self._pop(),)
        self._weight(value, value)
        self.stack.append(value)

    def op_tuple2(self) -> None:
        b = self._pop()
        value = (self._pop(), b)
        self._weight(value, value)
        self.stack.append(value)

    def op_tuple3(self) -> None:
        c = self._pop()
        b = self._pop()
        value = (self._pop(), b, c)
        self._weight(value, value)
        self.stack.append(value)

    def op_dict(self) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise _Error("odd number of items for DICT", self.op_offset)
        value = SDict(list(zip(items[::2], items[1::2], strict=True)))
        self._weight(items, value)
        self.stack.append(value)

    def op_frozenset(self) -> None:
        items = self._pop_mark()
        value = SSet(items, frozen=True)
        self._weight(items, value)
        self.stack.append(value)

    def _extend(self, target: object, items: list[object], opname: str) -> None:
        w = self._weights
        add = sum(map(w.get, map(id, items), repeat(1)))
        if type(target) is list:
            target.extend(items)
        elif type(target) is SSet and not target.frozen:
            target.items.extend(items)
        elif type(target) is SDict:
            target.pairs.extend(zip(items[::2], items[1::2], strict=True))
        else:
            self._mutate(target, opname)
        if items:
            self._grow(target, w.get(id(target), 1) + add)

    def op_append(self) -> None:
        value = self._pop()
        self._extend(self._top(), [value], "APPEND")

    def op_appends(self) -> None:
        items = self._pop_mark()
        self._extend(self._top(), items, "APPENDS")

    def op_setitem(self) -> None:
        value = self._pop()
        key = self._pop()
        self._extend(self._top(), [key, value], "SETITEM")

    def op_setitems(self) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise _Error("odd number of items for SETITEMS", self.op_offset)
        self._extend(self._top(), items, "SETITEMS")

    def op_additems(self) -> None:
        items = self._pop_mark()
        target = self._top()
        if type(target) is SDict:
            raise _Error("ADDITEMS on a dict", self.op_offset)
        self._extend(target, items, "ADDITEMS")

    # memo
    def _put(self, idx: int) -> None:
        if idx < 0 or idx > _MAGIC_SLOTS:
            raise _Error(f"bad memo index {idx}", self.op_offset)
        self.memo[idx] = self._top()
        if len(self.memo) > self.max_memo:
            raise _LimitHit("memo", f"more than {self.max_memo} memo entries", self.op_offset)

    def _get(self, idx: int) -> None:
        try:
            self.stack.append(self.memo[idx])
        except KeyError:
            raise _Error(f"memo value not found at index {idx}", self.op_offset) from None

    def op_put(self) -> None:
        self._put(int(self._readline()))

    def op_binput(self) -> None:
        self._put(self._byte())

    def op_long_binput(self) -> None:
        self._put(self._uint(4))

    def op_memoize(self) -> None:
        self._put(len(self.memo))

    def op_get(self) -> None:
        self._get(int(self._readline()))

    def op_binget(self) -> None:
        self._get(self._byte())

    def op_long_binget(self) -> None:
        self._get(self._uint(4))

    # globals and calls
    def op_global(self) -> None:
        module = self._readline().decode("utf-8")
        name = self._readline().decode("utf-8")
        self.stack.append(self._global(module, name))

    def op_stack_global(self) -> None:
        name = self._pop()
        module = self._pop()
        if type(module) is str and type(name) is str:
            self.stack.append(self._global(module, name))
            return
        text = f"{describe(module)}, {describe(name)}"
        if not self.sink.probe:
            self.sink.issue(
                Severity.CRITICAL,
                "pickle.dynamic-global",
                f"STACK_GLOBAL with operands computed at load time ({text})",
                self.op_offset,
                why="the imported name cannot be known without running the pickle",
            )
        self.stack.append(Opaque("dynamic-global", text, self.op_offset))

    def op_inst(self) -> None:
        module = self._readline().decode("ascii")
        name = self._readline().decode("ascii")
        cls = self._global(module, name)
        args = tuple(self._pop_mark())
        self.stack.append(self._call(cls, args, "INST"))

    def op_obj(self) -> None:
        items = self._pop_mark()
        if not items:
            raise _Error("OBJ without a class", self.op_offset)
        self.stack.append(self._call(items[0], tuple(items[1:]), "OBJ"))

    def op_reduce(self) -> None:
        args = self._pop()
        func = self._top()
        self.stack[-1] = self._call(func, args, "REDUCE")

    def op_newobj(self) -> None:
        args = self._pop()
        cls = self._pop()
        self.stack.append(self._call(cls, args, "NEWOBJ"))

    def op_newobj_ex(self) -> None:
        kwargs = self._pop()
        args = self._pop()
        cls = self._pop()
        call = self._call(cls, args, "NEWOBJ_EX")
        call.state = kwargs  # kept for reporting; NEWOBJ_EX's kwargs are not set by BUILD
        self.stack.append(call)

    def op_build(self) -> None:
        state = self._pop()
        obj = self._top()
        if type(obj) is Call:
            obj.state = state
            if self.joblib and not self.sink.probe and _is_array_wrapper(obj):
                self._joblib_array(obj)
            return
        if type(obj) is Global:
            if not self.sink.probe:
                self.sink.issue(
                    Severity.CRITICAL,
                    "pickle.attribute-injection",
                    f"BUILD sets attributes of the module-level object {obj.module}.{obj.name}",
                    self.op_offset,
                    why="a legitimate pickle only builds objects it created; setting attributes "
                    "on a class or function changes code other callers run",
                    symbol=f"{obj.module}.{obj.name}",
                )
            return
        if type(obj) is not Opaque:
            raise _Error(f"BUILD on a {type(obj).__name__} value", self.op_offset)

    def op_persid(self) -> None:
        pid = self._readline().decode("ascii")
        self._persistent(pid)

    def op_binpersid(self) -> None:
        self._persistent(self._pop())

    def _persistent(self, pid: object) -> None:
        if type(pid) is tuple and len(pid) >= 2 and pid[0] == "module" and type(pid[1]) is Global:
            # legacy torch.save of a whole module: persistent_load returns the class itself
            self.stack.append(pid[1])
            return
        ok = (type(pid) is tuple and pid and pid[0] == "storage") or type(pid) is int
        if not ok and not self.sink.probe:
            self.sink.issue(
                Severity.MEDIUM,
                "pickle.persistent-id",
                f"persistent id {describe(pid)} is resolved by the loader's persistent_load",
                self.op_offset,
                why="torch only emits ('storage', ...) ids; other ids reach application code",
            )
        self.stack.append(Opaque("persistent", pid, self.op_offset))

    def _ext(self, code: int) -> None:
        if code <= 0:
            raise _Error("EXT specifies code <= 0", self.op_offset)
        if not self.sink.probe:
            self.sink.issue(
                Severity.HIGH,
                "pickle.extension",
                f"extension code {code} names a callable from the loader's copyreg registry",
                self.op_offset,
                why="the registry is empty by default; what the code resolves to is unknowable",
            )
        self.stack.append(Opaque("extension", code, self.op_offset))

    def op_ext1(self) -> None:
        self._ext(self._byte())

    def op_ext2(self) -> None:
        self._ext(self._uint(2))

    def op_ext4(self) -> None:
        self._ext(int.from_bytes(self._read(4), "little", signed=True))

    def op_next_buffer(self) -> None:
        if not self.sink.probe:
            self.sink.issue(
                Severity.HIGH,
                "pickle.out-of-band-buffer",
                "NEXT_BUFFER takes data from outside the file (out-of-band buffer)",
                self.op_offset,
                why="model files never need out-of-band buffers; the data cannot be verified",
            )
        self.stack.append(Opaque("buffer", None, self.op_offset))

    def op_readonly_buffer(self) -> None:
        self._top()

    # ------------------------------------------------------------------ joblib

    def _joblib_array(self, wrapper: Call) -> None:
        """joblib reads the array bytes straight from the file after BUILD on the wrapper."""
        self.sink.joblib = True
        info = numpy_array_bytes(wrapper.state)
        if info is None:
            raise _Error(
                "joblib NumpyArrayWrapper with a shape/dtype the scanner cannot size; "
                "the rest of the stream cannot be located",
                self.op_offset,
            )
        nbytes, has_object, aligned = info
        in_frame = self.pos < self.frame_end != _NOFRAME
        start = self.frame_end if in_frame else self.pos
        if in_frame:
            self._frame_violation(
                "joblib array data starts inside a frame; the pure-Python reader takes it "
                "from the frame end",
                self.op_offset,
            )
        if has_object:
            sub = Machine(self.data, start, self.sink, mode=Mode.LINEAR, joblib=False, end=self.end)
            sub.max_ops = self.max_ops - self.ops
            sub.run()
            if sub.error is not None:
                raise _Error(f"nested object-array pickle: {sub.error}", sub.error_offset)
            after = sub.pos
        else:
            p = start
            if aligned:
                if p >= self.end:
                    raise _Error("joblib array padding is truncated", p)
                p += 1 + self.data[p]
            after = p + nbytes
            if after > self.end:
                raise _Error(f"joblib array of {nbytes} bytes at offset {p} runs past the end", p)
        if in_frame:
            self.resume_at = after
        else:
            self.pos = after


def _is_array_wrapper(call: Call) -> bool:
    callee = call.callee
    if type(callee) is Global and callee.module == "copyreg" and callee.name == "_reconstructor":
        args = call.args
        callee = args[0] if type(args) is tuple and args else None
    return (
        type(callee) is Global
        and callee.module == "joblib.numpy_pickle"
        and callee.name == "NumpyArrayWrapper"
    )


def _ident(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _build_dispatch() -> list[Callable[[Machine], None]]:
    names = {
        b"(": "mark", b".": "stop", b"0": "pop", b"1": "pop_mark", b"2": "dup",
        b"F": "float", b"I": "int", b"J": "binint", b"K": "binint1", b"L": "long",
        b"M": "binint2", b"N": "none", b"P": "persid", b"Q": "binpersid", b"R": "reduce",
        b"S": "string", b"T": "binstring", b"U": "short_binstring", b"V": "unicode",
        b"X": "binunicode", b"a": "append", b"b": "build", b"c": "global", b"d": "dict",
        b"}": "empty_dict", b"e": "appends", b"g": "get", b"h": "binget", b"i": "inst",
        b"j": "long_binget", b"l": "list", b"]": "empty_list", b"o": "obj", b"p": "put",
        b"q": "binput", b"r": "long_binput", b"s": "setitem", b"t": "tuple",
        b")": "empty_tuple", b"u": "setitems", b"G": "binfloat",
        b"\x80": "proto", b"\x81": "newobj", b"\x82": "ext1", b"\x83": "ext2", b"\x84": "ext4",
        b"\x85": "tuple1", b"\x86": "tuple2", b"\x87": "tuple3", b"\x88": "newtrue",
        b"\x89": "newfalse", b"\x8a": "long1", b"\x8b": "long4",
        b"B": "binbytes", b"C": "short_binbytes",
        b"\x8c": "short_binunicode", b"\x8d": "binunicode8", b"\x8e": "binbytes8",
        b"\x8f": "empty_set", b"\x90": "additems", b"\x91": "frozenset", b"\x92": "newobj_ex",
        b"\x93": "stack_global", b"\x94": "memoize", b"\x95": "frame",
        b"\x96": "bytearray8", b"\x97": "next_buffer", b"\x98": "readonly_buffer",
    }  # fmt: skip
    table: list[Callable[[Machine], None]] = [Machine.op_bad] * 256
    for code, name in names.items():
        table[code[0]] = getattr(Machine, f"op_{name}")
    return table


_DISPATCH = _build_dispatch()
