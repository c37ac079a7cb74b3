"""Symbolic values of the Pickle Machine and the static reasoning done on them.

Nothing here imports or evaluates anything from a scanned artifact: ``bytes_of`` only
re-implements pure data transforms (latin-1 encoding, base64) that pickles use to carry bytes.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from modelcrate.scan.callables import Out
from modelcrate.scan.context import Blob

__all__ = [
    "Call",
    "Global",
    "Opaque",
    "SDict",
    "SSet",
    "bytes_of",
    "describe",
    "is_nested_loader",
    "numpy_array_bytes",
]


@dataclass(frozen=True, slots=True)
class Global:
    """A module attribute imported by GLOBAL/STACK_GLOBAL/INST (names already normalized)."""

    module: str
    name: str
    offset: int


class Call:
    """The result of calling ``callee`` (REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX).

    ``state`` is what a later BUILD passed to it. Mutable on purpose: BUILD updates it.
    ``out`` and ``size`` are what :func:`~modelcrate.scan.callables.judge_call` said of the
    result: whether later opcodes may modify it, and how many items it yields (``None``:
    unknown).
    """

    __slots__ = ("args", "callee", "kind", "offset", "out", "size", "state")

    def __init__(self, callee: object, args: object, kind: str, offset: int) -> None:
        self.callee = callee
        self.args = args
        self.kind = kind
        self.offset = offset
        self.state: object = None
        self.out: Out = Out.VALUE
        self.size: int | None = None

    def __repr__(self) -> str:
        return f"Call({describe(self.callee)}, {self.kind}@{self.offset})"


@dataclass(frozen=True, slots=True)
class Opaque:
    """A value the loader gets from outside the stream or computes: unknown statically.

    ``kind`` is one of ``persistent``, ``extension``, ``buffer``, ``dynamic-global`` and
    ``blob`` (a long literal left in the file: ``detail`` is ``(start, length, kind)``).
    """

    kind: str
    detail: object
    offset: int


class SDict:
    """A dict as ``(key, value)`` pairs: symbolic keys need not be hashable."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[object, object]]) -> None:
        self.pairs = pairs

    def get(self, key: str) -> object:
        for k, v in self.pairs:
            if k == key and type(k) is str:
                return v
        return None

    def has(self, key: str) -> bool:
        return any(type(k) is str and k == key for k, _ in self.pairs)


class SSet:
    """A set or frozenset as a list of items."""

    __slots__ = ("frozen", "items")

    def __init__(self, items: list[object], *, frozen: bool) -> None:
        self.items = items
        self.frozen = frozen


def describe(value: object, depth: int = 0) -> str:
    """A short, bounded human description of a symbolic value."""
    if type(value) is Global:
        return f"{value.module}.{value.name}"
    if type(value) is Call:
        if depth >= 2:
            return "<result of a call>"
        return f"<result of {describe(value.callee, depth + 1)}(...)>"
    if type(value) is Opaque:
        return f"<{value.kind} value>"
    if isinstance(value, str | bytes):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if isinstance(value, bool | int | float) or value is None:
        return repr(value)[:40]
    return f"<{type(value).__name__}>"


# Callables that unpickle (or load a file that may be) a pickle given as their argument.
_NESTED_LOADERS = frozenset(
    {
        ("pickle", "loads"),
        ("pickle", "_loads"),
        ("pickle", "load"),
        ("_pickle", "loads"),
        ("_pickle", "load"),
        ("dill", "loads"),
        ("dill._dill", "loads"),
        ("cloudpickle", "loads"),
        ("joblib", "load"),
        ("numpy", "loads"),
        ("numpy.core.numeric", "loads"),
        ("pandas", "read_pickle"),
        ("torch", "load"),
        ("torch.serialization", "load"),
        ("torch.storage", "_load_from_bytes"),
        ("torch.utils._config_module", "ConfigModule.load_config"),
        ("torch.utils.data.datapipes.utils.decoder", "basichandlers"),
    }
)

_B64 = frozenset(
    {
        ("base64", "b64decode"),
        ("base64", "standard_b64decode"),
        ("base64", "urlsafe_b64decode"),
        ("base64", "decodebytes"),
        ("binascii", "a2b_base64"),
    }
)
_ENCODERS = frozenset({("_codecs", "encode"), ("codecs", "encode")})
_BYTES_CTORS = frozenset({("builtins", "bytes"), ("builtins", "bytearray")})


def is_nested_loader(module: str, name: str) -> bool:
    """True for callables that unpickle their argument."""
    return (module, name) in _NESTED_LOADERS


def bytes_of(value: object, data: Blob, cap: int, depth: int = 0) -> tuple[bytes, bool] | None:
    """The bytes a literal argument evaluates to, when that is knowable without running code.

    Handles bytes/str literals, long literals left in the blob, ``_codecs.encode(s, 'latin1')``
    (how protocol 2 writes bytes), ``builtins.bytes(...)`` and base64 decoding. The flag says
    whether these are exactly the bytes a loader would be given: a bytes value, whole (not cut
    at ``cap``); text and decoded forms are scanned but not exact.
    """
    if depth > 4:
        return None
    if isinstance(value, bytes):
        return value, True
    if isinstance(value, str):
        return value.encode("latin-1", "replace"), False
    blob = _blob(value)
    if blob is not None:
        start, length, kind = blob
        return bytes(data[start : start + min(length, cap)]), kind == "bytes" and length <= cap
    if not isinstance(value, Call) or not isinstance(value.callee, Global):
        return None
    key = (value.callee.module, value.callee.name)
    args = value.args
    if type(args) is not tuple or not args:
        return None
    if key in _ENCODERS:
        encoding = args[1] if len(args) > 1 and type(args[1]) is str else "utf-8"
        text, whole = _text_of(args[0], data, cap)
        if text is None:
            return None
        try:
            return text.encode(encoding), whole
        except (LookupError, UnicodeError):
            return text.encode("latin-1", "replace"), False
    if key in _BYTES_CTORS:
        inner = bytes_of(args[0], data, cap, depth + 1)
        if inner is None:
            return None
        return inner[0], inner[1] and key == ("builtins", "bytes") and len(args) == 1
    if key in _B64:
        inner = bytes_of(args[0], data, cap, depth + 1)
        if inner is None:
            return None
        try:
            raw = inner[0].replace(b"-", b"+").replace(b"_", b"/")
            return binascii.a2b_base64(raw), False
        except (binascii.Error, ValueError):
            return None
    return None


def _text_of(value: object, data: Blob, cap: int) -> tuple[str | None, bool]:
    """A str literal (short, or left in the blob) and whether it is whole."""
    if isinstance(value, str):
        return value, True
    blob = _blob(value)
    if blob is None:
        return None, False
    start, length, kind = blob
    raw = bytes(data[start : start + min(length, cap)])
    if kind == "str":
        return raw.decode("utf-8", "surrogatepass"), length <= cap
    return raw.decode("latin-1"), length <= cap and kind == "py2str"


def _blob(value: object) -> tuple[int, int, str] | None:
    """``(start, length, kind)`` of a long literal left in the blob."""
    if isinstance(value, Opaque) and value.kind == "blob":
        detail = value.detail
        if isinstance(detail, tuple) and len(detail) == 3:
            start, length, kind = detail
            if isinstance(start, int) and isinstance(length, int) and isinstance(kind, str):
                return start, length, kind
    return None


def _dtype_info(dtype: object) -> tuple[int, bool] | None:
    """(itemsize, has_object) of a pickled ``numpy.dtype(...)`` call, from its args and state."""
    if type(dtype) is not Call or type(dtype.callee) is not Global:
        return None
    if dtype.callee.name == "_convert_to_stringdtype_kwargs" and dtype.callee.module in (
        "numpy._core._internal",
        "numpy.core._internal",
    ):
        return 16, True  # numpy 2's StringDType: joblib writes its arrays as a nested pickle
    if dtype.callee.name != "dtype" or not dtype.callee.module.startswith("numpy"):
        return None
    args = dtype.args
    if type(args) is not tuple or not args or type(args[0]) is not str:
        return None
    text = args[0].lstrip("<>|=")
    has_object = text.startswith("O")
    state = dtype.state
    elsize = -1
    if type(state) is tuple and len(state) >= 8:
        if type(state[5]) is int:
            elsize = state[5]
        if type(state[7]) is int and state[7] & 1:
            has_object = True
    if elsize > 0:
        return elsize, has_object
    digits = "".join(ch for ch in text[1:] if ch.isdigit())
    if not digits or len(digits) > 6:
        return (8, True) if has_object else None
    size = int(digits) * (4 if text.startswith("U") else 1)
    return size, has_object


def numpy_array_bytes(state: object) -> tuple[int, bool, bool] | None:
    """(nbytes, has_object, has_alignment_byte) of a joblib ``NumpyArrayWrapper`` state."""
    if type(state) is not SDict:
        return None
    shape = state.get("shape")
    info = _dtype_info(state.get("dtype"))
    if info is None or type(shape) is not tuple:
        return None
    count = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            return None
        count *= dim
        if count > 1 << 62:
            return None
    itemsize, has_object = info
    return count * itemsize, has_object, state.has("numpy_array_alignment_bytes")
