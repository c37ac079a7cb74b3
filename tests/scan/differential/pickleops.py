"""Pickle streams as lists of opcodes, and the fragments the mutators splice into them.

Nothing here unpickles anything: streams are split with :func:`pickletools.genops`, which only
parses opcodes and their arguments.
"""

from __future__ import annotations

import io
import pickletools
import struct
import zlib
from dataclasses import dataclass

STOP = b"."
PROTO = b"\x80"
FRAME = b"\x95"
MEMOIZE = b"\x94"
PUTS = {b"p", b"q", b"r"}
GETS = {b"g", b"h", b"j"}


@dataclass
class OpList:
    """A stream split into whole opcodes (``ops``, raw bytes each) and what could not be parsed.

    ``complete`` is true when the last op is STOP; ``tail`` is whatever follows the parsed ops
    (bytes after STOP, or an op cut short).
    """

    ops: list[bytes]
    tail: bytes
    complete: bool

    def render(self) -> bytes:
        return b"".join(self.ops) + self.tail


def split(data: bytes) -> OpList:
    """Split ``data`` into opcodes up to and including the first STOP (or as far as it parses)."""
    positions: list[int] = []
    complete = False
    try:
        for opcode, _arg, pos in pickletools.genops(io.BytesIO(data)):
            positions.append(pos if pos is not None else 0)
            if opcode.code == ".":
                complete = True
                break
    except Exception:
        # a truncated op or an unknown byte: everything from the last good op is the tail
        pass
    if not positions:
        return OpList([], data, False)
    ends = [*positions[1:], positions[-1] + 1 if complete else positions[-1]]
    if not complete:
        # the last op was only started (genops raised on its argument): leave it in the tail
        positions, ends = positions[:-1], ends[:-1]
    ops = [data[a:b] for a, b in zip(positions, ends, strict=True)]
    end = ends[-1] if ends else 0
    return OpList(ops, data[end:], complete)


def streams(data: bytes, limit: int = 16) -> list[bytes]:
    """Consecutive complete pickles at the start of ``data``, the remainder as the last item."""
    out: list[bytes] = []
    rest = data
    while rest and len(out) < limit:
        ol = split(rest)
        if not ol.complete:
            break
        n = len(rest) - len(ol.tail)
        out.append(rest[:n])
        rest = rest[n:]
    out.append(rest)
    return out


def unframe(ops: list[bytes]) -> list[bytes]:
    """The same stream without FRAME opcodes (framing is optional for every unpickler)."""
    return [op for op in ops if op[:1] != FRAME]


def explicit_memo(ops: list[bytes]) -> list[bytes]:
    """MEMOIZE replaced by LONG_BINPUT of the index it would have used."""
    memo: set[int] = set()
    out = []
    for op in ops:
        code = op[:1]
        if code == MEMOIZE:
            idx = len(memo)
            memo.add(idx)
            out.append(b"r" + struct.pack("<I", idx))
            continue
        if code in PUTS:
            memo.add(memo_index(op))
        out.append(op)
    return out


def memo_index(op: bytes) -> int:
    code = op[:1]
    if code in (b"p", b"g"):
        return int(op[1:-1])
    if code in (b"q", b"h"):
        return op[1]
    return int(struct.unpack("<I", op[1:5])[0])


def memo_op(kind: str, idx: int, form: int) -> bytes:
    """PUT (``kind="put"``) or GET of ``idx`` in form 0 text, 1 one byte, 2 four bytes."""
    if form == 1 and idx < 256:
        return (b"q" if kind == "put" else b"h") + bytes([idx])
    if form == 0:
        return (b"p" if kind == "put" else b"g") + str(idx).encode() + b"\n"
    return (b"r" if kind == "put" else b"j") + struct.pack("<I", idx)


def body_start(ops: list[bytes]) -> int:
    """Index of the first op after a leading PROTO (and FRAME)."""
    i = 0
    while i < len(ops) and ops[i][:1] in (PROTO, FRAME):
        i += 1
    return i


def frame(n: int) -> bytes:
    return FRAME + struct.pack("<Q", n)


# ---------------------------------------------------------------------------------------------
# literals


def s_unicode(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) < 256:
        return b"\x8c" + bytes([len(raw)]) + raw
    return b"X" + struct.pack("<I", len(raw)) + raw


def s_binunicode(text: str) -> bytes:
    raw = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def int_text(value: int, zeros: int = 0) -> bytes:
    sign = "-" if value < 0 else ""
    return b"I" + (sign + "0" * zeros + str(abs(value))).encode() + b"\n"


# ---------------------------------------------------------------------------------------------
# payloads: harmless callables that are not on the allowlist. A loader that reaches one leaves
# a pickle.find_class audit event; calling it does no damage (and the sandbox blocks processes).

PAYLOADS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("os", "getcwd", ()),
    ("posixpath", "join", ("a", "b")),
    ("builtins", "len", ("ab",)),
    ("time", "monotonic", ()),
    ("builtins", "print", ("differential",)),
    ("os", "system", ("true",)),
)


def payload_call(index: int, form: int) -> bytes:
    """A stack-neutral call of ``PAYLOADS[index]``: push, call, pop. ``form`` picks the encoding.

    0 GLOBAL+REDUCE, 1 STACK_GLOBAL+REDUCE (protocol 4), 2 INST, 3 GLOBAL+OBJ, 4 text args.
    """
    module, name, args = PAYLOADS[index % len(PAYLOADS)]
    form %= 5
    callee = s_unicode(module) + s_unicode(name) + b"\x93" if form == 1 else glob(module, name)
    if form == 2:
        return b"(" + b"".join(s_unicode(a) for a in args) + b"i" + callee[1:] + b"0"
    if form == 3:
        return b"(" + callee + b"".join(s_unicode(a) for a in args) + b"o0"
    if form == 4:
        text = b"".join(b"V" + a.encode("raw_unicode_escape") + b"\n" for a in args)
        return callee + b"(" + text + b"tR0"
    return callee + b"(" + b"".join(s_unicode(a) for a in args) + b"tR0"


def payload_pickle(index: int, proto: int = 2) -> bytes:
    """A whole pickle that calls a payload and returns None."""
    head = b"\x80" + bytes([proto]) if proto >= 2 else b""
    return head + payload_call(index, 1 if proto >= 4 else 0) + b"N."


# ---------------------------------------------------------------------------------------------
# stack-neutral fragments: each pushes and pops its own items, so it may go between any two ops
# of a stream without changing what the stream builds (for a loader that accepts it).


def _long_string(n: int, marker_at: int | None = None, marker: bytes = b"") -> bytes:
    body = bytearray(b"A" * n)
    if marker_at is not None:
        body[marker_at : marker_at + len(marker)] = marker
    return b"X" + struct.pack("<I", n) + bytes(body) + b"0"


def ustar_prefix() -> bytes:
    """A string op that puts ``ustar`` at byte 257 of the file when it starts the stream."""
    return _long_string(300, 257 - 5, b"ustar\x0000")


def zlib_polyglot_prefix() -> bytes:
    """A neutral fragment whose first bytes also form a zlib header and a stored block.

    ``(`` MARK, ``\\x91`` FROZENSET: 0x2891 is a valid zlib header; ``q`` BINPUT has the block
    type bits of a stored block; its index byte and the next three (SHORT_BINUNICODE, length,
    first char) are the stored block's LEN and its one's complement NLEN.
    """
    idx = 200
    n = 255 - idx  # the string length is NLEN's low byte, the first char NLEN's high byte
    frag = b"(\x91q" + bytes([idx]) + b"\x8c" + bytes([n]) + b"s" * n + b"00"
    zlib.decompressobj().decompress(frag, 64)  # raises if it stopped being a zlib prefix
    return frag


NEUTRAL: tuple[bytes, ...] = (
    b"N0",
    b"]Nb0",
    b"(1",
    b"I010\n0",
    b"I00\n0",
    b"I-0\n0",
    b"I+5\n0",
    b"I 7\n0",
    b"L0010L\n0",
    b"L12\n0",
    b"F1e3\n0",
    b"Fnan\n0",
    b"S'abc'\n0",
    b'S"q"\n0',
    b"S'\\x41'\n0",
    b"V\\u0041\n0",
    b"U\x03abc0",
    b"T\x03\x00\x00\x00abc0",
    b"C\x02hi0",
    b"\x8e\x01\x00\x00\x00\x00\x00\x00\x00z0",
    b"\x8d\x01\x00\x00\x00\x00\x00\x00\x00z0",
    b"\x96\x01\x00\x00\x00\x00\x00\x00\x00z0",
    b"Np99999\n0g99999\n0",
    b"Nr\xff\xff\x00\x000j\xff\xff\x00\x000",
    b"N200",
    b"(t0",
    b")0",
    b"}0",
    b"\x8f0",
    b"(\x910",
    b"N\x850",
    b"\x80\x02",
    b"\x80\x05",
    b"\x80\x00",
    b"\x95\x00\x00\x00\x00\x00\x00\x00\x00",
    b"ccollections\nOrderedDict\n0",
    b"\x8c\x0bcollections\x8c\x0bOrderedDict\x930",
    b"ccollections\nOrderedDict\n)R0",
    b"](N\x88\x89e0",
    b"]Na0",
)


def long_string() -> bytes:
    """A neutral string op longer than a 64 KiB probe window."""
    return _long_string(70_000)


def neutral_fragments() -> tuple[bytes, ...]:
    return (*NEUTRAL, long_string(), ustar_prefix(), zlib_polyglot_prefix())
