"""A minimal, bounded reader of the protobuf wire format, working on offsets into a blob.

Nothing is decoded eagerly: a length-delimited field is reported as a ``(start, end)`` range
into the same buffer, so a 2 GB ``raw_data`` tensor is skipped without being read or copied.
Groups (wire types 3/4) are rejected: no ONNX or TensorFlow message uses them. Callers walk
nested messages themselves and must cap their own depth (see ``MAX_DEPTH``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from modelcrate.scan.context import Blob

VARINT = 0
I64 = 1
LEN = 2
I32 = 5

MAX_DEPTH = 64  # nested messages a caller may descend into
MAX_VARINT_BYTES = 10


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at byte {offset}")
        self.offset = offset


@dataclass(frozen=True)
class Field:
    """One field. ``value`` is the integer for VARINT/I64/I32 and the payload length for LEN,
    whose payload is ``data[start:end]``. ``offset`` is where the field's tag starts."""

    number: int
    wire: int
    value: int
    start: int
    end: int
    offset: int


def read_varint(data: Blob, pos: int, end: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; return ``(value, next_pos)``. At most 10 bytes."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise WireError("truncated varint", start)
        if pos - start >= MAX_VARINT_BYTES:
            raise WireError("varint longer than 10 bytes", start)
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7


def iter_fields(data: Blob, start: int = 0, end: int | None = None) -> Iterator[Field]:
    """Yield the fields of the message in ``data[start:end]``. Raises :class:`WireError`."""
    stop = len(data) if end is None else end
    if start < 0 or stop > len(data) or start > stop:
        raise WireError("message range outside the buffer", start)
    pos = start
    while pos < stop:
        offset = pos
        key, pos = read_varint(data, pos, stop)
        number, wire = key >> 3, key & 7
        if number == 0 or number > 0x1FFFFFFF:
            raise WireError(f"invalid field number {number}", offset)
        if wire == VARINT:
            value, pos = read_varint(data, pos, stop)
            yield Field(number, wire, value, pos, pos, offset)
        elif wire == I64:
            if pos + 8 > stop:
                raise WireError("truncated 64-bit field", offset)
            value = int.from_bytes(bytes(data[pos : pos + 8]), "little")
            pos += 8
            yield Field(number, wire, value, pos, pos, offset)
        elif wire == I32:
            if pos + 4 > stop:
                raise WireError("truncated 32-bit field", offset)
            value = int.from_bytes(bytes(data[pos : pos + 4]), "little")
            pos += 4
            yield Field(number, wire, value, pos, pos, offset)
        elif wire == LEN:
            length, pos = read_varint(data, pos, stop)
            if length > stop - pos:
                raise WireError(f"length {length} runs past the end of the message", offset)
            yield Field(number, wire, length, pos, pos + length, offset)
            pos += length
        else:
            raise WireError(f"unsupported wire type {wire} (groups are not allowed)", offset)


class TooManyFields(Exception):
    """A :class:`Reader` went past its field budget."""


@dataclass
class Reader:
    """Walks nested messages of one blob with a total field budget and a depth cap."""

    data: Blob
    max_fields: int = 20_000_000
    fields: int = 0

    def iter(self, start: int, end: int, depth: int) -> Iterator[Field]:
        """The fields of ``data[start:end]``; raises WireError past ``MAX_DEPTH``."""
        if depth > MAX_DEPTH:
            raise WireError(f"messages nested deeper than {MAX_DEPTH}", start)
        for f in iter_fields(self.data, start, end):
            self.fields += 1
            if self.fields > self.max_fields:
                raise TooManyFields(f"more than {self.max_fields} protobuf fields")
            yield f

    def text(self, f: Field, limit: int = 1 << 20) -> str:
        """A LEN field's payload as text (see :func:`text`)."""
        return text(self.data, f, limit)


def text(data: Blob, f: Field, limit: int = 1 << 20) -> str:
    """A LEN field's payload as text (UTF-8, undecodable bytes replaced), cut at ``limit``."""
    return bytes(data[f.start : min(f.end, f.start + limit)]).decode("utf-8", "replace")


def _fields_prefix(data: Blob, limit: int) -> list[Field] | None:
    """The top-level fields found in the first ``limit`` bytes; None when they are not protobuf.

    A LEN field may run past the window (its payload is skipped, not checked)."""
    out: list[Field] = []
    pos = 0
    size = len(data)
    while pos < size and pos < limit and len(out) < 64:
        try:
            key, p = read_varint(data, pos, size)
            number, wire = key >> 3, key & 7
            if number == 0 or number > 0x1FFFFFFF:
                return None
            if wire == VARINT:
                value, p = read_varint(data, p, size)
                out.append(Field(number, wire, value, p, p, pos))
            elif wire == LEN:
                length, p = read_varint(data, p, size)
                if length > size - p:
                    return None
                out.append(Field(number, wire, length, p, p + length, pos))
                p += length
            elif wire in (I64, I32):
                p += 8 if wire == I64 else 4
                if p > size:
                    return None
                out.append(Field(number, wire, 0, p, p, pos))
            else:
                return None
        except WireError:
            return None
        pos = p
    return out


def looks_like_onnx(data: Blob) -> bool:
    """Cheap guess: an ONNX ModelProto (ir_version varint, a graph, opset imports)."""
    if len(data) < 4 or data[0] != 0x08:  # ModelProto starts with ir_version (field 1, varint)
        return False
    fields = _fields_prefix(data, 4096)
    if not fields:
        return False
    first = fields[0]
    if first.number != 1 or first.wire != VARINT or not 1 <= first.value <= 64:
        return False
    allowed = {1: VARINT, 2: LEN, 3: LEN, 4: LEN, 5: VARINT, 6: LEN, 7: LEN, 8: LEN, 14: LEN}
    allowed |= {20: LEN, 25: LEN}
    for f in fields:
        if allowed.get(f.number) != f.wire:
            return False
    return any(f.number in (7, 8) for f in fields)


def looks_like_savedmodel(data: Blob) -> bool:
    """Cheap guess: a TF SavedModel (schema version + meta graphs), a frozen GraphDef, or a
    Keras ``keras_metadata.pb`` (SavedMetadata): all are routed to the SavedModel scanner."""
    if len(data) < 4:
        return False
    fields = _fields_prefix(data, 4096)
    if not fields:
        return False
    first = fields[0]
    if first.number == 1 and first.wire == VARINT:  # SavedModel: schema version, meta_graphs
        rest = fields[1:]
        return (
            first.value <= 16 and bool(rest) and all(f.number == 2 and f.wire == LEN for f in rest)
        )
    if first.number == 1 and first.wire == LEN:  # GraphDef nodes or SavedMetadata objects
        if not all(f.wire == LEN and f.number in (1, 2, 4) for f in fields):
            return False
        return _is_node_def(data, first) or _is_saved_object(data, first)
    return False


def _is_node_def(data: Blob, f: Field) -> bool:
    """NodeDef: name(1) and op(2) strings, both printable."""
    seen: set[int] = set()
    try:
        for g in iter_fields(data, f.start, f.end):
            if g.number in (1, 2) and g.wire == LEN:
                raw = bytes(data[g.start : g.end])
                if not raw or not raw.isascii() or not raw.decode().isprintable():
                    return False
                seen.add(g.number)
            if len(seen) == 2:
                return True
    except WireError:
        return False
    return len(seen) == 2


def _is_saved_object(data: Blob, f: Field) -> bool:
    """keras SavedObject: node_path(3) / identifier(4) strings and metadata(5) JSON."""
    try:
        for g in iter_fields(data, f.start, f.end):
            if g.number == 5 and g.wire == LEN:
                return bytes(data[g.start : min(g.end, g.start + 1)]) in (b"{", b"")
    except WireError:
        return False
    return False
