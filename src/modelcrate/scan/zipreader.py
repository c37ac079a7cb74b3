"""A tolerant, read-only zip reader over raw bytes, modelled on what PyTorch's miniz accepts.

:mod:`zipfile` rejects archives that loaders happily open (CRC mismatches, "encrypted" flag
bits, local/central name mismatches), and one bad member aborts its iteration. A scanner that
trusts it fails open. This reader never raises on malformed input: it returns entries plus a
list of problems, and finds member data the way miniz does -- the central directory gives the
sizes and the local header offset, the *local* header's own name and extra lengths give the
data start.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from modelcrate.scan.context import Blob

EOCD_SIG = b"PK\x05\x06"
EOCD64_SIG = b"PK\x06\x06"
EOCD64_LOC_SIG = b"PK\x06\x07"
CENTRAL_SIG = b"PK\x01\x02"
LOCAL_SIG = b"PK\x03\x04"

_EOCD = struct.Struct("<4s4H2LH")  # 22 bytes
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_EOCD64_LOC = struct.Struct("<4sLQL")  # 20 bytes
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # 46 bytes
_LOCAL = struct.Struct("<4s5H3L2H")  # 30 bytes
_MAX_COMMENT = 65_535

FLAG_ENCRYPTED = 0x1
FLAG_DATA_DESCRIPTOR = 0x8
FLAG_PATCHED = 0x20
FLAG_STRONG_ENCRYPTION = 0x40
FLAG_UTF8 = 0x800


@dataclass(frozen=True)
class ZipEntry:
    """One member, as the central directory (or a local header, when there is none) describes it."""

    index: int
    raw_name: bytes
    name: str
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    local_offset: int
    external_attr: int
    create_system: int
    record_offset: int  # where this entry's central (or local) record starts

    @property
    def is_dir(self) -> bool:
        return self.name.endswith(("/", "\\")) and self.size == 0

    @property
    def unix_mode(self) -> int:
        return (self.external_attr >> 16) & 0xFFFF if self.create_system == 3 else 0


@dataclass(frozen=True)
class LocalHeader:
    """The local header of a member: where its data really starts, and what it claims."""

    offset: int
    raw_name: bytes
    flags: int
    method: int
    data_start: int


@dataclass(frozen=True)
class Directory:
    """The result of reading an archive's end records: entries plus what was wrong with them."""

    entries: tuple[ZipEntry, ...]
    problems: tuple[tuple[int, str], ...]  # (offset, message)
    declared_count: int
    has_central_directory: bool
    prefix_bytes: int  # bytes before the first local header (self-extractor stubs, polyglots)


def decode_name(raw: bytes, flags: int) -> str:
    """Decode a member name as zipfile does: UTF-8 when flagged, else CP437."""
    if flags & FLAG_UTF8:
        return raw.decode("utf-8", "replace")
    return raw.decode("cp437")


def _find_eocd(data: Blob) -> int:
    size = len(data)
    start = max(0, size - _EOCD.size - _MAX_COMMENT)
    pos = data.rfind(EOCD_SIG, start)
    while pos >= 0:
        if pos + _EOCD.size <= size:
            return pos
        pos = data.rfind(EOCD_SIG, start, pos)
    return -1


def has_central_directory(data: Blob) -> bool:
    """True when an end record near the end points at a central directory (read from the end).

    This is how :mod:`zipfile` (and every reader that seeks to the end) finds an archive, so
    it also finds one appended to a pickle or any other file. Only the tail and the first
    central record are read.
    """
    eocd = _find_eocd(data)
    if eocd < 0:
        return False
    _, _disk, _cd_disk, _n_disk, count, cd_size, cd_offset, _clen = _EOCD.unpack_from(
        bytes(data[eocd : eocd + _EOCD.size])
    )
    loc64 = eocd - _EOCD64_LOC.size
    if loc64 >= 0 and bytes(data[loc64 : loc64 + 4]) == EOCD64_LOC_SIG:
        _, _d, eocd64_off, _t = _EOCD64_LOC.unpack_from(bytes(data[loc64 : loc64 + 20]))
        rec = bytes(data[eocd64_off : eocd64_off + _EOCD64.size])
        if len(rec) == _EOCD64.size and rec[:4] == EOCD64_SIG:
            fields = _EOCD64.unpack_from(rec)
            count, cd_size, cd_offset = fields[7], fields[8], fields[9]
    if count == 0:
        return False  # an empty archive holds nothing to scan
    for start in (cd_offset, eocd - cd_size):
        if 0 <= start < len(data) and bytes(data[start : start + 4]) == CENTRAL_SIG:
            return True
    return False


def _zip64_extra(extra: bytes, need: list[str], values: dict[str, int]) -> None:
    """Replace 0xFFFFFFFF fields from the ZIP64 extended-information extra field (id 1)."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        if tag == 1:
            off = 0
            for key in need:
                if off + 8 > len(body):
                    break
                (values[key],) = struct.unpack_from("<Q", body, off)
                off += 8
            return
        pos += 4 + length


def read_directory(data: Blob, max_entries: int) -> Directory:
    """Read the central directory (ZIP64 aware); fall back to a forward walk of local headers."""
    problems: list[tuple[int, str]] = []
    eocd = _find_eocd(data)
    if eocd < 0:
        problems.append((0, "no end-of-central-directory record: members found by local headers"))
        entries = tuple(walk_local_headers(data, max_entries, problems))
        return Directory(entries, tuple(problems), len(entries), False, _prefix(data, entries))
    _, _disk, _cd_disk, _n_disk, count, cd_size, cd_offset, _clen = _EOCD.unpack_from(
        bytes(data[eocd : eocd + _EOCD.size])
    )
    loc64 = eocd - _EOCD64_LOC.size
    zip64 = loc64 >= 0 and bytes(data[loc64 : loc64 + 4]) == EOCD64_LOC_SIG
    if zip64:
        _, _d, eocd64_off, _t = _EOCD64_LOC.unpack_from(bytes(data[loc64 : loc64 + 20]))
        rec = bytes(data[eocd64_off : eocd64_off + _EOCD64.size])
        if len(rec) == _EOCD64.size and rec[:4] == EOCD64_SIG:
            fields = _EOCD64.unpack_from(rec)
            count, cd_size, cd_offset = fields[7], fields[8], fields[9]
        else:
            problems.append((loc64, "ZIP64 locator points at no ZIP64 end record"))
    # Data prepended to the archive shifts every offset (self-extractors, polyglots).
    cd_end_expected = cd_offset + cd_size
    shift = 0
    if bytes(data[cd_offset : cd_offset + 4]) != CENTRAL_SIG:
        guess = eocd - cd_size
        if 0 <= guess < len(data) and bytes(data[guess : guess + 4]) == CENTRAL_SIG:
            shift = guess - cd_offset
            problems.append((guess, f"central directory offset is off by {shift} bytes"))
        else:
            problems.append((eocd, "central directory not found where the end record says"))
            entries = tuple(walk_local_headers(data, max_entries, problems))
            return Directory(entries, tuple(problems), len(entries), False, _prefix(data, entries))
    elif cd_end_expected != eocd and not zip64:
        problems.append((eocd, "central directory size disagrees with its end record"))
    entries_list: list[ZipEntry] = []
    pos = cd_offset + shift
    for index in range(min(count, max_entries)):
        head = bytes(data[pos : pos + _CENTRAL.size])
        if len(head) < _CENTRAL.size or head[:4] != CENTRAL_SIG:
            problems.append((pos, f"central directory ends after {index} of {count} entries"))
            break
        f = _CENTRAL.unpack(head)
        flags, method, crc, csize, usize = f[3], f[4], f[7], f[8], f[9]
        nlen, xlen, clen = f[10], f[11], f[12]
        ext_attr, local_off = f[15], f[16]
        raw_name = bytes(data[pos + 46 : pos + 46 + nlen])
        extra = bytes(data[pos + 46 + nlen : pos + 46 + nlen + xlen])
        values = {"size": usize, "csize": csize, "offset": local_off}
        need = [
            k
            for k, v in (("size", usize), ("csize", csize), ("offset", local_off))
            if v == 0xFFFFFFFF
        ]
        if need:
            _zip64_extra(extra, need, values)
        entries_list.append(
            ZipEntry(
                index=index,
                raw_name=raw_name,
                name=decode_name(raw_name, flags),
                flags=flags,
                method=method,
                crc=crc,
                compressed_size=values["csize"],
                size=values["size"],
                local_offset=values["offset"] + shift,
                external_attr=ext_attr,
                create_system=f[1] >> 8,
                record_offset=pos,
            )
        )
        pos += 46 + nlen + xlen + clen
    entries = tuple(entries_list)
    return Directory(entries, tuple(problems), count, True, _prefix(data, entries))


def _prefix(data: Blob, entries: tuple[ZipEntry, ...]) -> int:
    if not entries:
        return 0
    first = min(e.local_offset for e in entries)
    return first if 0 < first <= len(data) else 0


def read_local(data: Blob, entry: ZipEntry) -> LocalHeader | None:
    """The local header at the entry's offset, or None when there is none."""
    off = entry.local_offset
    head = bytes(data[off : off + _LOCAL.size])
    if len(head) < _LOCAL.size or head[:4] != LOCAL_SIG:
        return None
    f = _LOCAL.unpack(head)
    nlen, xlen = f[9], f[10]
    raw_name = bytes(data[off + 30 : off + 30 + nlen])
    return LocalHeader(off, raw_name, f[2], f[3], off + 30 + nlen + xlen)


def walk_local_headers(
    data: Blob, max_entries: int, problems: list[tuple[int, str]]
) -> Iterator[ZipEntry]:
    """Members found by scanning local headers forward (no usable central directory)."""
    pos = data.find(LOCAL_SIG)
    index = 0
    size = len(data)
    while pos >= 0 and index < max_entries:
        head = bytes(data[pos : pos + _LOCAL.size])
        if len(head) < _LOCAL.size:
            problems.append((pos, "truncated local header"))
            return
        f = _LOCAL.unpack(head)
        flags, method, crc, csize, usize, nlen, xlen = f[2], f[3], f[6], f[7], f[8], f[9], f[10]
        raw_name = bytes(data[pos + 30 : pos + 30 + nlen])
        data_start = pos + 30 + nlen + xlen
        if csize == 0xFFFFFFFF or usize == 0xFFFFFFFF:
            extra = bytes(data[pos + 30 + nlen : data_start])
            values = {"size": usize, "csize": csize}
            _zip64_extra(extra, ["size", "csize"], values)
            csize, usize = values["csize"], values["size"]
        if flags & FLAG_DATA_DESCRIPTOR and csize == 0:
            # size unknown until the data descriptor: the data runs to the next record
            nxt = _next_record(data, data_start)
            csize = (nxt if nxt >= 0 else size) - data_start
        yield ZipEntry(
            index=index,
            raw_name=raw_name,
            name=decode_name(raw_name, flags),
            flags=flags,
            method=method,
            crc=crc,
            compressed_size=max(0, csize),
            size=usize,
            local_offset=pos,
            external_attr=0,
            create_system=0,
            record_offset=pos,
        )
        index += 1
        end = data_start + max(0, csize)
        pos = data.find(LOCAL_SIG, end if end > pos else pos + 4)


def _next_record(data: Blob, start: int) -> int:
    found = [p for sig in (LOCAL_SIG, CENTRAL_SIG) if (p := data.find(sig, start)) >= 0]
    return min(found) if found else -1
