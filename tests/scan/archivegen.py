"""Build zips, tars and attack pickles byte by byte for the container tests (nothing is loaded)."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from dataclasses import dataclass

# protocol 2: GLOBAL 'os system', BINUNICODE 'echo', TUPLE1, REDUCE, STOP. Built, never loaded.
EVIL_PICKLE = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00echoq\x01\x85q\x02Rq\x03."
# protocol 0 with the same call: no \x80 magic at all
EVIL_PICKLE_P0 = b"cos\nsystem\n(S'echo'\ntR."
# protocol 2 pickle of {} -- nothing imported
BENIGN_PICKLE = b"\x80\x02}q\x00."


@dataclass
class Member:
    """One zip entry as the tests want it written (including deliberately wrong fields)."""

    name: str
    data: bytes
    method: int = 0  # 0 stored, 8 deflate; any other value is written with the raw data
    flags: int = 0
    crc: int | None = None  # None: the real CRC-32
    local_name: str | None = None  # None: same as ``name``
    unix_mode: int | None = None  # e.g. 0o120777 for a symbolic link
    alias_of: int | None = None  # reuse the local record of an earlier member (overlap bomb)
    size: int | None = None  # declared uncompressed size (None: the real one)
    raw: bool = False  # write ``data`` as the body whatever the method says


def _compress(m: Member) -> bytes:
    if m.method == 8 and not m.raw:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(m.data) + c.flush()
    return m.data


def build_zip(members: list[Member], *, central: bool = True, prefix: bytes = b"") -> bytes:
    """A zip with exactly the given (possibly inconsistent) fields. ZIP64 end records past 65535."""
    out = bytearray(prefix)
    records: list[tuple[Member, int, bytes, int]] = []  # member, local offset, body, crc
    for m in members:
        if m.alias_of is not None:
            _, off, body, crc = records[m.alias_of]
            records.append((m, off, body, crc))
            continue
        body = _compress(m)
        crc = zlib.crc32(m.data) if m.crc is None else m.crc
        lname = (m.name if m.local_name is None else m.local_name).encode()
        size = len(m.data) if m.size is None else m.size
        off = len(out)
        out += struct.pack(
            "<4s5H3L2H",
            b"PK\x03\x04",
            20,
            m.flags,
            m.method,
            0,
            0,
            crc,
            len(body),
            size,
            len(lname),
            0,
        )
        out += lname + body
        records.append((m, off, body, crc))
    if not central:
        return bytes(out)
    cd_start = len(out)
    for m, off, body, crc in records:
        name = m.name.encode()
        system, attr = (3, m.unix_mode << 16) if m.unix_mode is not None else (0, 0)
        size = len(m.data) if m.size is None else m.size
        out += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            (system << 8) | 20,
            20,
            m.flags,
            m.method,
            0,
            0,
            crc,
            len(body),
            size,
            len(name),
            0,
            0,
            0,
            0,
            attr,
            off,
        )
        out += name
    cd_size = len(out) - cd_start
    count = len(records)
    if count > 0xFFFF:
        eocd64 = len(out)
        out += struct.pack(
            "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_start
        )
        out += struct.pack("<4sLQL", b"PK\x06\x07", 0, eocd64, 1)
        count = 0xFFFF
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_start, 0)
    return bytes(out)


def torch_zip(
    pickle_bytes: bytes, *, root: str = "archive", extra: list[Member] | None = None
) -> bytes:
    """A minimal PyTorch-layout zip: ``<root>/data.pkl`` plus the usual small members."""
    members = [
        Member(f"{root}/data.pkl", pickle_bytes),
        Member(f"{root}/byteorder", b"little"),
        Member(f"{root}/version", b"3\n"),
        *(extra or []),
    ]
    return build_zip(members)


@dataclass
class TarItem:
    """One tar member: a file, or a link when ``link`` is given."""

    name: str
    data: bytes = b""
    link: str | None = None
    hard: bool = False


def build_tar(items: list[TarItem]) -> bytes:
    """A tar written by :mod:`tarfile` (writing never extracts anything)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for item in items:
            info = tarfile.TarInfo(item.name)
            if item.link is not None:
                info.type = tarfile.LNKTYPE if item.hard else tarfile.SYMTYPE
                info.linkname = item.link
                tf.addfile(info)
            else:
                info.size = len(item.data)
                tf.addfile(info, io.BytesIO(item.data))
    return buf.getvalue()


def npy_bytes(descr: str, shape: tuple[int, ...], payload: bytes, *, version: int = 1) -> bytes:
    """An NPY file with a hand-written header (``descr`` is the literal text, e.g. "'|O'")."""
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': {shape!r}, }}"
    pre = 10 if version == 1 else 12
    pad = (64 - (pre + len(header) + 1) % 64) % 64
    text = (header + " " * pad + "\n").encode("latin-1")
    length = struct.pack("<H", len(text)) if version == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + length + text + payload
