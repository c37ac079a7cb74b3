"""Build pickles from raw opcodes for tests. Nothing here ever unpickles what it builds.

Typical use::

    from tests.scan.picklegen import P, call, framed, glob, lit

    payload = P.PROTO2 + call(glob("os", "system"), lit("id")) + P.STOP

Helpers return ``bytes`` fragments that are concatenated into a stream:

* ``glob(module, name)``: GLOBAL (protocol 0 text form); ``sglob``: STACK_GLOBAL from strings.
* ``lit(value)``: a literal (None, bool, int, str, bytes, tuple, list, dict) with binary opcodes.
* ``call(callable, *args)``: MARK args TUPLE REDUCE, where each arg is a fragment.
* ``framed(body, proto)``: PROTO + one FRAME around ``body``.
* ``scan_bytes(data, name)``: scan an in-memory blob and return its findings.
"""

from __future__ import annotations

import struct
import sys
import types

from modelcrate.scan.findings import Finding, Location, Severity


class P:
    """Opcode constants (see ``pickletools``)."""

    PROTO2 = b"\x80\x02"
    PROTO4 = b"\x80\x04"
    PROTO5 = b"\x80\x05"
    MARK = b"("
    STOP = b"."
    POP = b"0"
    POP_MARK = b"1"
    DUP = b"2"
    NONE = b"N"
    TUPLE = b"t"
    EMPTY_TUPLE = b")"
    EMPTY_LIST = b"]"
    EMPTY_DICT = b"}"
    APPEND = b"a"
    APPENDS = b"e"
    LIST = b"l"
    DICT = b"d"
    SETITEM = b"s"
    SETITEMS = b"u"
    REDUCE = b"R"
    BUILD = b"b"
    NEWOBJ = b"\x81"
    NEWOBJ_EX = b"\x92"
    OBJ = b"o"
    STACK_GLOBAL = b"\x93"
    MEMOIZE = b"\x94"
    TUPLE1 = b"\x85"
    TUPLE2 = b"\x86"
    TUPLE3 = b"\x87"
    NEXT_BUFFER = b"\x97"
    READONLY_BUFFER = b"\x98"


def glob(module: str, name: str) -> bytes:
    """GLOBAL opcode (text form, usable at every protocol)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def sglob(module: str, name: str) -> bytes:
    """STACK_GLOBAL from two SHORT_BINUNICODE literals."""
    return lit(module) + lit(name) + P.STACK_GLOBAL


def inst(module: str, name: str, *args: bytes) -> bytes:
    """Protocol-0 INST: MARK args INST module name."""
    return P.MARK + b"".join(args) + b"i" + module.encode() + b"\n" + name.encode() + b"\n"


def put(idx: int) -> bytes:
    return b"q" + bytes([idx])


def get(idx: int) -> bytes:
    return b"h" + bytes([idx])


def frame(n: int) -> bytes:
    return b"\x95" + struct.pack("<Q", n)


def binbytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def string0(text: str) -> bytes:
    """Protocol-0 STRING (quoted, escaped)."""
    return b"S" + repr(text).encode() + b"\n"


def short_binstring(text: str) -> bytes:
    raw = text.encode("latin-1")
    return b"U" + bytes([len(raw)]) + raw


def lit(value: object) -> bytes:
    """A literal with binary opcodes (protocol 2+ forms, except bytes which need 3+)."""
    if value is None:
        return b"N"
    if value is True:
        return b"\x88"
    if value is False:
        return b"\x89"
    if isinstance(value, int):
        if 0 <= value < 256:
            return b"K" + bytes([value])
        if -(2**31) <= value < 2**31:
            return b"J" + struct.pack("<i", value)
        raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw
    if isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) < 256:
            return b"\x8c" + bytes([len(raw)]) + raw
        return b"X" + struct.pack("<I", len(raw)) + raw
    if isinstance(value, bytes):
        if len(value) < 256:
            return b"C" + bytes([len(value)]) + value
        return binbytes(value)
    if isinstance(value, tuple):
        return P.MARK + b"".join(lit(v) for v in value) + P.TUPLE
    if isinstance(value, list):
        return P.MARK + b"".join(lit(v) for v in value) + P.LIST
    if isinstance(value, dict):
        return P.MARK + b"".join(lit(k) + lit(v) for k, v in value.items()) + P.DICT
    raise TypeError(f"no literal form for {type(value).__name__}")


def call(func: bytes, *args: bytes) -> bytes:
    """``func(*args)`` via REDUCE; ``func`` and each arg are opcode fragments."""
    return func + P.MARK + b"".join(args) + P.TUPLE + P.REDUCE


def framed(body: bytes, proto: int = 4) -> bytes:
    """PROTO ``proto`` and one FRAME that holds exactly ``body``."""
    return b"\x80" + bytes([proto]) + frame(len(body)) + body


def scan_bytes(data: bytes, name: str = "model.pkl") -> list[Finding]:
    """Scan an in-memory blob as the engine would and return the findings."""
    install_globals_stub()
    from modelcrate.scan.context import ScanContext

    ctx = ScanContext()
    ctx.scan_blob(data, Location(name), 0, name=name)
    return ctx.findings


def worst(findings: list[Finding]) -> Severity | None:
    return max((f.severity for f in findings), default=None)


def rules(findings: list[Finding], at_least: Severity = Severity.INFO) -> set[str]:
    return {f.rule_id for f in findings if f.severity >= at_least}


def symbols(findings: list[Finding], at_least: Severity = Severity.HIGH) -> set[str]:
    return {f.symbol for f in findings if f.severity >= at_least and f.symbol}


# --------------------------------------------------------------------------------------------
# Temporary stand-in for modelcrate.scan.pickle_globals while it is being written in parallel.
# Installed only when the real module cannot be imported; never used once it exists.

_STUB_DANGEROUS = frozenset(
    [
        "os",
        "posix",
        "nt",
        "subprocess",
        "sys",
        "runpy",
        "timeit",
        "pickle",
        "_pickle",
        "importlib",
        "socket",
        "webbrowser",
        "code",
        "pty",
        "ctypes",
        "shutil",
    ]
)
_STUB_BUILTINS = {"eval", "exec", "getattr", "setattr", "compile", "open", "__import__", "apply"}
_STUB_ALLOW = {
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "object"),
    ("copyreg", "_reconstructor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch", "FloatStorage"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("functools", "partial"),
    ("_codecs", "encode"),
}


def install_globals_stub() -> None:
    try:
        import modelcrate.scan.pickle_globals  # noqa: F401
    except ImportError:
        pass
    else:
        return
    from dataclasses import dataclass

    from modelcrate.scan.policy import Policy

    @dataclass(frozen=True)
    class GlobalVerdict:
        severity: Severity
        reason: str
        category: str
        arg_callables: tuple[int, ...] = ()

    def normalize(module: str, name: str) -> tuple[str, str]:
        mapping = {"__builtin__": "builtins", "copy_reg": "copyreg"}
        return mapping.get(module, module), name

    def classify_global(module: str, name: str, policy: Policy) -> GlobalVerdict:
        root = module.split(".", maxsplit=1)[0]
        if "." in name:
            return GlobalVerdict(Severity.CRITICAL, "dotted name", "dangerous")
        if root in _STUB_DANGEROUS or (module == "builtins" and name in _STUB_BUILTINS):
            return GlobalVerdict(Severity.CRITICAL, "dangerous", "dangerous")
        if (module, name) in _STUB_ALLOW:
            calls = (0,) if name in ("_reconstructor", "partial") else ()
            return GlobalVerdict(Severity.INFO, "allowlisted", "allowlisted", calls)
        return GlobalVerdict(Severity.HIGH, "unknown global", "unknown")

    mod = types.ModuleType("modelcrate.scan.pickle_globals")
    mod.GlobalVerdict = GlobalVerdict  # type: ignore[attr-defined]
    mod.normalize = normalize  # type: ignore[attr-defined]
    mod.classify_global = classify_global  # type: ignore[attr-defined]
    sys.modules["modelcrate.scan.pickle_globals"] = mod
