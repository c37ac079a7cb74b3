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

Every call of an allowlisted global is judged by its spec (:mod:`modelcrate.scan.callables`,
the model the restricted unpickler enforces too): whether it may be called or instantiated at
all, its argument bounds, and what it returns (a fresh object BUILD/SETITEM may fill, or a
looked-up one they may not). The machine is the :class:`~modelcrate.scan.callables.Values`
side that shows its symbolic values to those rules.

The machine never raises on bad input: errors, limits and findings end up in a
:class:`~modelcrate.scan.pickle_sink.Sink`. The opcode handlers are in
:mod:`modelcrate.scan.pickle_ops`; what a run collects is in :mod:`modelcrate.scan.pickle_sink`.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from itertools import repeat

from modelcrate.scan.callables import (
    MAX_TOTAL,
    SAFE_CODECS,
    How,
    Kind,
    Out,
    Spec,
    Tag,
    View,
    judge_call,
    kept_state_problem,
    mutation_problem,
)
from modelcrate.scan.context import Blob
from modelcrate.scan.findings import Severity
from modelcrate.scan.pickle_globals import (
    ARGS_CHECKED,
    NESTED_LITERAL_LOADERS,
    GlobalVerdict,
    check_reconstruct_args,
    normalize,
)
from modelcrate.scan.pickle_ops import Opcodes
from modelcrate.scan.pickle_sink import GlobalUse, Issue, LimitHit, MachineError, Nested, Sink
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

__all__ = [
    "Call",
    "Global",
    "GlobalUse",
    "Issue",
    "Machine",
    "Mode",
    "Nested",
    "Opaque",
    "SDict",
    "SSet",
    "Sink",
]

_NOFRAME = sys.maxsize


class Mode(enum.Enum):
    """How FRAME boundaries are honoured (see the module docstring)."""

    LINEAR = "linear"
    CFILE = "c-file"


_RECORDED = Severity.HIGH  # arg_callables must be globals whose verdict is below this
NESTED = "nested"  # verdict category: judged by the nested literal's own scan (pickle_scan)


class Machine(Opcodes):
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
            raise MachineError(f"truncated: needs {n} bytes at offset {p}", p)
        self.pos = e
        return self.data[p:e]

    def _skip(self, n: int) -> int:
        """Like ``_read`` but returns the start offset without copying the bytes."""
        p = self.pos
        if p + n > self.frame_end:
            p = self._cross(p, n)
        if p + n > self.end:
            self.truncated = True
            raise MachineError(f"truncated: needs {n} bytes at offset {p}", p)
        self.pos = p + n
        return p

    def _readline(self) -> bytes:
        p = self.pos
        nl = self.data.find(b"\n", p, self.end)
        if nl < 0:
            self.truncated = True
            raise MachineError(f"line starting at offset {p} has no newline", p)
        if nl + 1 > self.frame_end:
            q = self._cross(p, nl + 1 - p)
            if q != p:
                p = q
                nl = self.data.find(b"\n", p, self.end)
                if nl < 0:
                    raise MachineError(f"line starting at offset {p} has no newline", p)
        self.pos = nl + 1
        return bytes(self.data[p:nl])

    def _uint(self, n: int) -> int:
        return int.from_bytes(self._read(n), "little")

    def _byte(self) -> int:
        p = self.pos
        if p < self.frame_end and p < self.end:
            self.pos = p + 1
            return self.data[p]
        return self._read(1)[0]

    # FRAME is the one opcode handled here: it only moves the frame end the reads above use
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
                raise MachineError("pickle data was truncated (frame longer than the data)", op_at)
            self.frame_end = _NOFRAME
            return
        self.pos = here
        self.frame_end = here + n

    # ------------------------------------------------------------------ stack

    def _pop(self) -> object:
        if not self.stack:
            raise MachineError("stack underflow", self.op_offset)
        return self.stack.pop()

    def _top(self) -> object:
        if not self.stack:
            raise MachineError("stack underflow", self.op_offset)
        return self.stack[-1]

    def _pop_mark(self) -> list[object]:
        if not self.metastack:
            raise MachineError("MARK not found", self.op_offset)
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
            raise LimitHit(
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

    def _call(self, callee: object, args: object, kind: str, kwargs: object = None) -> Call:
        off = self.op_offset
        call = Call(callee, args, kind, off)
        if self.sink.probe:
            return call
        if type(callee) is Global:
            use = self.sink.uses[(callee.module, callee.name)]
            if kind not in use.calls:
                use.calls.append(kind)
            verdict = use.verdict
            if verdict.arg_callables:
                self._check_arg_callables(callee, verdict, args, kind)
            if type(args) is tuple and args:
                self._maybe_nested(callee, args)
            if verdict.spec is not None:
                self._judge(call, callee, verdict.spec, kwargs)
            else:  # unknown, dangerous (already reported) or trusted by the policy
                call.out = Out.FRESH
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

    def _judge(self, call: Call, callee: Global, spec: Spec, kwargs: object) -> None:
        """Apply the callable's spec (:mod:`modelcrate.scan.callables`) to this call."""
        kind = call.kind
        args = call.args
        new = kind in ("NEWOBJ", "NEWOBJ_EX") or (
            kind in ("INST", "OBJ") and args == () and spec.kind is Kind.CLASS
        )
        if not spec.rule and not spec.keeps:  # fast path: no argument to look at
            out = spec.new if new else spec.call
            if out is not None:
                call.out = out
                return
        symbol = f"{callee.module}.{callee.name}"
        j = judge_call(
            View(Tag.GLOBAL, name=symbol, spec=spec),
            args,
            How.NEW if new else How.CALL,
            self,
            kwargs=kwargs,
        )
        call.out = j.out
        call.size = j.size
        sink = self.sink
        if j.problem is not None:
            sink.issue(
                Severity.HIGH,
                "pickle.call",
                f"{j.problem} (via {kind})",
                call.offset,
                why="an allowlisted global is only admitted for what its library's own files "
                "do with it; this use acts, allocates or reaches state while loading",
                symbol=symbol,
            )
        elif j.cost:
            sink.cost += j.cost
            if sink.cost > MAX_TOTAL and not sink.over_budget:
                sink.over_budget = True
                sink.issue(
                    Severity.HIGH,
                    "pickle.call",
                    f"calls made while loading allocate {sink.cost} items from numbers and "
                    f"computed sequences (limit {MAX_TOTAL} per stream)",
                    call.offset,
                    why="a small pickle that allocates huge objects exhausts memory in the loader",
                    symbol=symbol,
                )

    # -- the Values interface of modelcrate.scan.callables: symbolic values as rules see them

    def view(self, value: object) -> View:
        t = type(value)
        if t is str or t is bytes:
            return View(Tag.CONST, value, size=len(value))  # type: ignore[arg-type]
        if value is None or t is int or t is bool or t is float:
            return View(Tag.CONST, value)
        if t is Global:
            g: Global = value  # type: ignore[assignment]
            v = self.sink.verdict(g.module, g.name)
            return View(Tag.GLOBAL, name=f"{g.module}.{g.name}", spec=v.spec)
        if t is Call:
            c: Call = value  # type: ignore[assignment]
            callee = c.callee
            if type(callee) is not Global:
                return View(Tag.MADE, name="a computed callable", out=c.out, size=c.size)
            if callee.name == "encode" and callee.module == "_codecs":
                folded = _encoded(c.args)
                if folded is not None:
                    return folded
            return View(Tag.MADE, name=f"{callee.module}.{callee.name}", out=c.out, size=c.size)
        if t is list or t is tuple:
            return View(Tag.LITERAL, value, size=len(value))  # type: ignore[arg-type]
        if t is SDict:
            return View(Tag.LITERAL, value, size=len(value.pairs))  # type: ignore[attr-defined]
        if t is SSet:
            return View(Tag.LITERAL, value, size=len(value.items))  # type: ignore[attr-defined]
        if t is Opaque and value.kind == "blob":  # type: ignore[attr-defined]
            return View(Tag.CONST, None, size=value.detail[1])  # type: ignore[attr-defined]
        return View(Tag.OTHER)

    def items(self, value: object) -> list[object] | tuple[object, ...] | None:
        if isinstance(value, list | tuple):
            return value
        if isinstance(value, SSet):
            return value.items
        return None

    def entry(self, value: object, key: str) -> tuple[bool, object]:
        if isinstance(value, SDict) and value.has(key):
            return True, value.get(key)
        return False, None

    def members(self, value: object) -> list[object] | tuple[object, ...]:
        if isinstance(value, SDict):
            return [v for _, v in value.pairs]
        return self.items(value) or ()

    def _mutation(self, target: object, opname: str, state: object = None) -> None:
        """BUILD/SETITEM/APPEND...: only on what the pickle built (literal or fresh)."""
        if type(target) is Call and target.out is Out.FRESH:
            callee = target.callee
            if state is None or type(callee) is not Global:
                return
            spec = self.sink.verdict(callee.module, callee.name).spec
            if spec is None or not spec.keeps:
                return  # the common case: BUILD fills a fresh object
        view = self.view(target)
        found = mutation_problem(view, opname)
        symbol = view.name or None
        if found is None and view.tag is Tag.MADE and type(target) is Call and state is not None:
            callee = target.callee
            if type(callee) is Global:
                spec = self.sink.verdict(callee.module, callee.name).spec
                if spec is not None and spec.keeps:
                    why = kept_state_problem(spec, state, self)
                    if why is not None:
                        found = (Severity.HIGH, f"{opname} on the result of {view.name}: {why}")
        if found is None:
            return
        severity, message = found
        self.sink.issue(
            severity,
            "pickle.attribute-injection" if severity >= Severity.CRITICAL else "pickle.call",
            message,
            self.op_offset,
            why="a legitimate pickle only fills objects it created; changing other objects "
            "changes state that code outside the file relies on",
            symbol=symbol,
        )

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
        key = (callee.module, callee.name)
        if not is_nested_loader(callee.module, callee.name):
            first = args[0]
            if not (type(first) is Global and is_nested_loader(first.module, first.name)):
                return
            via = f"{first.module}.{first.name}"
            key = (first.module, first.name)
        cap = self.sink.limits.max_member_bytes
        judged = key in NESTED_LITERAL_LOADERS and key == (callee.module, callee.name)
        complete = False
        for arg in args:
            found = bytes_of(arg, self.data, cap)
            if found is not None and found[0]:
                blob, exact = found
                exact = exact and judged and len(args) == 1
                self.sink.nested.append(Nested(self.op_offset, blob, via, exact))
                complete = complete or exact
        use = self.sink.uses[(callee.module, callee.name)]
        if judged:  # judged by the literal once scanned (pickle_scan), else as dangerous
            if not complete:
                use.checked = use.verdict
            elif use.checked is None:
                use.checked = GlobalVerdict(
                    Severity.INFO,
                    f"{via} deserializes a literal in the file, scanned as a nested pickle",
                    NESTED,
                )

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
                    raise LimitHit(
                        "pickle-ops", f"more than {max_ops} pickle opcodes", self.op_offset
                    )
                table[op](self)
                if len(self.stack) > max_depth:
                    raise LimitHit(
                        "stack-depth", f"pickle stack deeper than {max_depth}", self.op_offset
                    )
        except MachineError as exc:
            self.error = str(exc)
            self.error_offset = exc.offset
        except LimitHit as exc:
            self.error = str(exc)
            self.error_offset = exc.offset
            sink.limit_hits.append((exc.name, str(exc), exc.offset))
        except (ValueError, OverflowError, UnicodeDecodeError, MemoryError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:200]
            self.error_offset = self.op_offset
        sink.ops += self.ops
        return self

    # ------------------------------------------------------------------ joblib

    def _joblib_array(self, wrapper: Call) -> None:
        """joblib reads the array bytes straight from the file after BUILD on the wrapper."""
        self.sink.joblib = True
        info = numpy_array_bytes(wrapper.state)
        if info is None:
            raise MachineError(
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
                raise MachineError(f"nested object-array pickle: {sub.error}", sub.error_offset)
            after = sub.pos
        else:
            p = start
            if aligned:
                if p >= self.end:
                    raise MachineError("joblib array padding is truncated", p)
                p += 1 + self.data[p]
            after = p + nbytes
            if after > self.end:
                raise MachineError(
                    f"joblib array of {nbytes} bytes at offset {p} runs past the end", p
                )
        if in_frame:
            self.resume_at = after
        else:
            self.pos = after


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


def _encoded(args: object) -> View | None:
    """``_codecs.encode(text, codec)`` with constant arguments: the bytes, as a loader sees them."""
    if type(args) is not tuple or not 1 <= len(args) <= 2 or type(args[0]) is not str:
        return None
    codec = args[1] if len(args) == 2 else "utf-8"
    if type(codec) is not str or codec.lower() not in SAFE_CODECS:
        return None
    text: str = args[0]
    if len(text) > 256:  # long data: only its length matters to the rules
        return View(Tag.CONST, None, size=len(text))
    try:
        data = text.encode(codec)
    except UnicodeError:
        return None
    return View(Tag.CONST, data, size=len(data))
