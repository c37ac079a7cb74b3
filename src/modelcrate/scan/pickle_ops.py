"""Opcode handlers of the symbolic Pickle Machine: one ``op_*`` method per pickle opcode.

:class:`~modelcrate.scan.pickle_vm.Machine` inherits them from :class:`Opcodes`; its dispatch
table holds these functions directly, so the split costs no indirection per opcode. FRAME is
handled by the machine itself, next to the framed reads it changes. The reading, stack, symbol
and call helpers the handlers use live on the machine and are declared here for type checking.
"""

from __future__ import annotations

import codecs
from itertools import repeat
from typing import TYPE_CHECKING

from modelcrate.scan.findings import Severity
from modelcrate.scan.pickle_sink import LimitHit, MachineError
from modelcrate.scan.pickle_values import Call, Global, Opaque, SDict, SSet, describe

if TYPE_CHECKING:
    from modelcrate.scan.context import Blob
    from modelcrate.scan.pickle_sink import Sink

__all__ = ["Opcodes"]

_BIG = 65_536  # longer literals stay in the blob as Opaque("blob", (start, length))
_STORAGE_SIZES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8, "QInt8Storage": 1,
    "QUInt8Storage": 1, "QInt32Storage": 4, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1,
}  # fmt: skip
_HIGHEST_PROTOCOL = 5
_MAGIC_SLOTS = 1 << 31  # sanity cap for memo indices


class Opcodes:
    """The opcode handlers; a mixin of :class:`~modelcrate.scan.pickle_vm.Machine` only."""

    # machine state the handlers use (set by ``Machine.__init__``)
    data: Blob
    pos: int
    end: int
    sink: Sink
    joblib: bool
    max_depth: int
    max_memo: int
    stack: list[object]
    metastack: list[list[object]]
    memo: dict[int, object]
    proto: int
    stopped: bool
    value: object
    op_offset: int
    _weights: dict[int, int]

    if TYPE_CHECKING:  # implemented by Machine

        def _read(self, n: int) -> bytes: ...
        def _skip(self, n: int) -> int: ...
        def _readline(self) -> bytes: ...
        def _uint(self, n: int) -> int: ...
        def _byte(self) -> int: ...
        def _pop(self) -> object: ...
        def _top(self) -> object: ...
        def _pop_mark(self) -> list[object]: ...
        def _weight(self, items: list[object] | tuple[object, ...], value: object) -> None: ...
        def _grow(self, value: object, total: int) -> None: ...
        def _global(self, module: str, name: str) -> Global: ...
        def _call(self, callee: object, args: object, kind: str, kwargs: object = None) -> Call: ...
        def _mutation(self, target: object, opname: str, state: object = None) -> None: ...
        def _joblib_array(self, wrapper: Call) -> None: ...

    # stack and control
    def op_bad(self) -> None:
        op = self.data[self.op_offset]
        raise MachineError(f"invalid opcode 0x{op:02x}", self.op_offset)

    def op_proto(self) -> None:
        proto = self._byte()
        if proto > _HIGHEST_PROTOCOL:
            raise MachineError(f"unsupported pickle protocol {proto}", self.op_offset)
        self.proto = proto

    def op_stop(self) -> None:
        self.value = self._pop()
        self.stopped = True

    def op_mark(self) -> None:
        self.metastack.append(self.stack)
        self.stack = []
        if len(self.metastack) > self.max_depth:
            raise LimitHit(
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
            raise MachineError("LONG4 with a negative byte count", self.op_offset)
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
            raise MachineError("the STRING opcode argument must be quoted", self.op_offset)
        raw = codecs.escape_decode(line[1:-1])[0]
        self.stack.append(raw.decode("latin-1"))

    def op_binstring(self) -> None:
        n = int.from_bytes(self._read(4), "little", signed=True)
        if n < 0:
            raise MachineError("BINSTRING with a negative byte count", self.op_offset)
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
            raise MachineError("odd number of items for DICT", self.op_offset)
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

    def _mutate(self, target: object, opname: str) -> None:
        """APPEND/SETITEM/ADDITEMS on something that is not a literal container."""
        t = type(target)
        if t is Global or t is Call or t is Opaque:
            if not self.sink.probe:
                self._mutation(target, opname)
            return
        raise MachineError(f"{opname} on a {t.__name__} value", self.op_offset)

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
            raise MachineError("odd number of items for SETITEMS", self.op_offset)
        self._extend(self._top(), items, "SETITEMS")

    def op_additems(self) -> None:
        items = self._pop_mark()
        target = self._top()
        if type(target) is SDict:
            raise MachineError("ADDITEMS on a dict", self.op_offset)
        self._extend(target, items, "ADDITEMS")

    # memo
    def _put(self, idx: int) -> None:
        if idx < 0 or idx > _MAGIC_SLOTS:
            raise MachineError(f"bad memo index {idx}", self.op_offset)
        self.memo[idx] = self._top()
        if len(self.memo) > self.max_memo:
            raise LimitHit("memo", f"more than {self.max_memo} memo entries", self.op_offset)

    def _get(self, idx: int) -> None:
        try:
            self.stack.append(self.memo[idx])
        except KeyError:
            raise MachineError(f"memo value not found at index {idx}", self.op_offset) from None

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
            raise MachineError("OBJ without a class", self.op_offset)
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
        call = self._call(cls, args, "NEWOBJ_EX", kwargs)
        call.state = kwargs  # kept for reporting; NEWOBJ_EX's kwargs are not set by BUILD
        self.stack.append(call)

    def op_build(self) -> None:
        state = self._pop()
        obj = self._top()
        t = type(obj)
        if t is Call:
            obj.state = state  # type: ignore[attr-defined]
            if not self.sink.probe:
                self._mutation(obj, "BUILD", state)
                if self.joblib and _is_array_wrapper(obj):  # type: ignore[arg-type]
                    self._joblib_array(obj)  # type: ignore[arg-type]
            return
        if t is Global or t is Opaque:
            if not self.sink.probe:
                self._mutation(obj, "BUILD")
            return
        raise MachineError(f"BUILD on a {t.__name__} value", self.op_offset)

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
        if ok and type(pid) is tuple and self.sink.storage_limit is not None:
            self._storage_size(pid)
        if not ok and not self.sink.probe:
            self.sink.issue(
                Severity.MEDIUM,
                "pickle.persistent-id",
                f"persistent id {describe(pid)} is resolved by the loader's persistent_load",
                self.op_offset,
                why="torch only emits ('storage', ...) ids; other ids reach application code",
            )
        self.stack.append(Opaque("persistent", pid, self.op_offset))

    def _storage_size(self, pid: tuple[object, ...]) -> None:
        """Legacy torch.load allocates ``numel`` elements per storage id before it reads the
        data, which follows in the same file: a storage larger than the file is forged."""
        limit = self.sink.storage_limit or 0
        numel = pid[4] if len(pid) >= 5 else None
        cls = pid[1]
        size = _STORAGE_SIZES.get(cls.name, 1) if type(cls) is Global else 1
        if type(numel) is int and 0 <= numel * size <= limit:
            return
        self.sink.issue(
            Severity.HIGH,
            "pickle.call",
            f"a legacy torch storage claims {numel} elements of {size} bytes, more than the "
            f"{limit} bytes of its file",
            self.op_offset,
            why="torch.load allocates the storage before reading its data",
            symbol=describe(cls),
        )

    def _ext(self, code: int) -> None:
        if code <= 0:
            raise MachineError("EXT specifies code <= 0", self.op_offset)
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
