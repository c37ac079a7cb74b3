"""A sample as a tree of layers, so that mutators can change one layer and re-render the rest.

``Node.kind`` says how a node renders: leaves hold bytes (``pickle``: a whole stream, ``ops``: a
run of whole opcodes inside a larger stream, ``raw``: data a loader reads as bytes); the others
hold children and render options (``opts``) that container mutators change: ``concat``, ``zip``,
``tar``, the compressions (``gzip``, ``zlib``, ``bz2``, ``xz``, ``lzma``, ``lz4``), ``zf`` (joblib's
old ``ZF`` format) and ``npy``.

``frozen`` holds the bytes a real library wrote for an unchanged subtree; a mutation clears it on
the path to the changed node, so an unmutated seed is exactly the library's output.
"""

from __future__ import annotations

import bz2
import copy
import io
import lzma
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Any

LEAVES = ("pickle", "ops", "raw")
COMPRESSIONS = ("gzip", "zlib", "bz2", "xz", "lzma", "lz4")


@dataclass
class Node:
    kind: str
    data: bytes = b""
    name: str = ""
    opts: dict[str, Any] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    frozen: bytes | None = None
    role: str = ""  # "main" for the pickle a loader's object comes from
    member: dict[str, Any] = field(default_factory=dict)  # its fields as an archive member

    def walk(self, path: tuple[int, ...] = ()) -> list[tuple[tuple[int, ...], Node]]:
        out = [(path, self)]
        for i, c in enumerate(self.children):
            out.extend(c.walk((*path, i)))
        return out

    def at(self, path: tuple[int, ...]) -> Node:
        node = self
        for i in path:
            node = node.children[i]
        return node

    def thaw(self, path: tuple[int, ...]) -> None:
        """Forget the library bytes of every node from the root down to ``path``."""
        node = self
        node.frozen = None
        for i in path:
            node = node.children[i]
            node.frozen = None

    def clone(self) -> Node:
        return copy.deepcopy(self)


@dataclass
class Sample:
    """A seed or a mutant: its tree and the file name the loaders see (pandas reads suffixes)."""

    seed_id: str
    name: str
    root: Node
    malicious: bool
    notes: list[str] = field(default_factory=list)  # what each mutation did, for reports

    def render(self) -> bytes:
        return render(self.root)

    def clone(self) -> Sample:
        return Sample(self.seed_id, self.name, self.root.clone(), self.malicious, list(self.notes))

    def note(self, text: str) -> None:
        self.notes.append(text)


def render(node: Node) -> bytes:
    if node.frozen is not None:
        return node.frozen
    if node.kind in LEAVES:
        return node.data
    if node.kind == "concat":
        return b"".join(render(c) for c in node.children)
    if node.kind == "zip":
        return render_zip(node)
    if node.kind == "tar":
        return render_tar(node)
    if node.kind == "npy":
        return render_npy(node)
    if node.kind == "zf":
        return render_zf(node)
    if node.kind in COMPRESSIONS:
        return render_compressed(node)
    raise ValueError(f"no renderer for {node.kind}")


# ---------------------------------------------------------------------------------------------
# zip


def _local(
    name: bytes, body: bytes, usize: int, crc: int, *, method: int, o: dict[str, Any]
) -> bytes:
    flags = int(o.get("flags", 0))
    extra = bytes(o.get("extra", b""))
    desc = bool(o.get("descriptor", False))
    lcrc, lc, lu = (0, 0, 0) if desc else (crc, len(body), usize)
    head = struct.pack(
        "<4s5H3L2H",
        b"PK\x03\x04",
        20,
        flags | (0x08 if desc else 0),
        method,
        0,
        0x21,
        lcrc,
        lc,
        lu,
        len(name),
        len(extra),
    )
    tail = struct.pack("<4s3L", b"PK\x07\x08", crc, len(body), usize) if desc else b""
    return head + name + extra + body + tail


def _member_bytes(c: Node) -> tuple[bytes, bytes, int, int, int]:
    """(stored name, body, uncompressed size, crc, method) of one zip member."""
    data = render(c)
    o = c.member
    method = int(o.get("method", 0))
    if method == 8:
        co = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = co.compress(data) + co.flush()
    else:
        body = data
    crc = zlib.crc32(data) ^ int(o.get("crc_xor", 0))
    return c.name.encode(), body, len(data) + int(o.get("usize_delta", 0)), crc, method


def _zip_part(members: list[Node], start: int, align: int) -> tuple[bytes, list[bytes]]:
    """Local records from offset ``start`` and the matching central entries (offset relative)."""
    out = bytearray()
    central: list[bytes] = []
    for c in members:
        name, body, usize, crc, method = _member_bytes(c)
        o = dict(c.member)
        lname = str(o.get("local_name", c.name)).encode()
        if align and "extra" not in o:
            here = start + len(out) + 30 + len(lname)
            pad = (-(here + 4)) % align
            o["extra"] = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # torch's "FB" padding
        off = start + len(out)
        out += _local(lname, body, usize, crc, method=method, o=o)
        flags = int(o.get("flags", 0)) | (0x08 if o.get("descriptor") else 0)
        cextra = bytes(o.get("cextra", b""))
        comment = bytes(o.get("comment", b""))
        central.append(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                0x031E,
                20,
                flags,
                method,
                0,
                0x21,
                crc,
                len(body),
                usize,
                len(name),
                len(cextra),
                len(comment),
                0,
                0,
                0o644 << 16,
                off,
            )
            + name
            + cextra
            + comment
        )
    return bytes(out), central


def _eocd(count: int, size: int, offset: int, comment: bytes) -> bytes:
    return struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, size, offset, len(comment)
    ) + bytes(comment)


def _rebase(entries: list[bytes], delta: int) -> bytes:
    out = bytearray()
    for e in entries:
        b = bytearray(e)
        (off,) = struct.unpack_from("<L", b, 42)
        struct.pack_into("<L", b, 42, max(0, off + delta) & 0xFFFFFFFF)
        out += b
    return bytes(out)


def render_zip(node: Node) -> bytes:
    o = node.opts
    prefix = bytes(o.get("prefix", b""))
    align = int(o.get("align", 0))
    order = o.get("order")
    members = [node.children[i] for i in order] if order else list(node.children)
    decoy = o.get("decoy")
    out = bytearray(prefix)
    if decoy:
        # a second, benign central directory at the offset the end record states, the real one
        # where zipfile looks for it (end record position minus the stated size)
        decoys = [Node(m.kind, b"\x80\x02}q\x00.", m.name) for m in members]
        dlocal, dcentral = _zip_part(decoys, len(out), 0)
        out += dlocal
        dcd = b"".join(dcentral)
        # the real records must sit past len(dcd): their stated offsets are rebased by it
        out += b"\x00" * max(0, len(dcd) - len(out))
        rlocal, rcentral = _zip_part(members, len(out), align)
        out += rlocal
        dcd_off = len(out)
        out += dcd
        rcd = _rebase(rcentral, -len(dcd))
        out += rcd
        out += _eocd(len(members), len(rcd), dcd_off, bytes(o.get("comment", b"")))
    else:
        local, central = _zip_part(members, len(out), align)
        out += local
        cd_off = len(out)
        cd = b"".join(central)
        out += cd
        count = len(members) + int(o.get("count_delta", 0))
        stated = cd_off + int(o.get("cd_offset_delta", 0))
        out += _eocd(count, len(cd), max(0, stated), bytes(o.get("comment", b"")))
    return bytes(out) + bytes(o.get("trailing", b""))


# ---------------------------------------------------------------------------------------------
# tar


def _checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    chk = sum(block)
    block[148:156] = b"%06o\x00 " % chk


def render_tar(node: Node) -> bytes:
    o = node.opts
    fmt = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}.get(
        str(o.get("format", "ustar")), tarfile.USTAR_FORMAT
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for c in node.children:
            data = render(c)
            info = tarfile.TarInfo(c.name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    raw = bytearray(buf.getvalue())
    # walk the header blocks to patch them
    pos = 0
    headers: list[int] = []
    while pos + 512 <= len(raw) and raw[pos : pos + 512] != b"\x00" * 512:
        headers.append(pos)
        size = int(raw[pos + 124 : pos + 136].rstrip(b"\x00 ") or b"0", 8)
        pos += 512 + (size + 511) // 512 * 512
    end = pos
    for h in headers:
        block = raw[h : h + 512]
        if o.get("v7"):
            block[257:512] = b"\x00" * 255
        if o.get("size_base256") and raw[h + 156 : h + 157] in (b"0", b"\x00"):
            size = int(block[124:136].rstrip(b"\x00 ") or b"0", 8)
            block[124:136] = b"\x80" + size.to_bytes(11, "big")
        _checksum(block)
        if o.get("bad_checksum"):
            block[148:150] = b"77"
        raw[h : h + 512] = block
    if o.get("no_end"):
        raw = raw[:end]
    return bytes(raw) + bytes(o.get("trailing", b""))


# ---------------------------------------------------------------------------------------------
# NPY


def npy_header(o: dict[str, Any], body_len: int) -> bytes:
    keys = {
        "descr": str(o.get("descr", "'|O'")),
        "fortran_order": str(o.get("fortran", "False")),
        "shape": str(o.get("shape", "(1,)")),
    }
    order = list(o.get("order", ["descr", "fortran_order", "shape"]))
    text = "{" + "".join(f"'{k}': {keys[k]}, " for k in order) + "}"
    major, minor = o.get("version", (1, 0))
    prefix = 6 + 2 + (2 if major == 1 else 4)
    align = int(o.get("align", 64))
    raw = text.encode("utf-8" if major >= 3 else "latin-1") + b" " * int(o.get("extra_pad", 0))
    pad = (-(prefix + len(raw) + 1)) % align if align > 1 else 0
    raw += b" " * pad + str(o.get("terminator", "\n")).encode()
    size = len(raw) + int(o.get("len_delta", 0))
    fmt = "<H" if major == 1 else "<I"
    return b"\x93NUMPY" + bytes([major, minor]) + struct.pack(fmt, size & 0xFFFFFFFF) + raw


def render_npy(node: Node) -> bytes:
    body = render(node.children[0])
    return npy_header(node.opts, len(body)) + body + bytes(node.opts.get("trailing", b""))


# ---------------------------------------------------------------------------------------------
# compressions


def _pieces(data: bytes, cuts: list[float]) -> list[bytes]:
    points = sorted({int(len(data) * max(0.0, min(1.0, c))) for c in cuts})
    out = []
    prev = 0
    for p in [*points, len(data)]:
        if p > prev:
            out.append(data[prev:p])
            prev = p
    return out or [b""]


def _gzip_member(data: bytes, o: dict[str, Any]) -> bytes:
    flags = 0
    extra = b""
    if o.get("fextra") is not None:
        flags |= 4
        fx = bytes(o["fextra"])
        extra += struct.pack("<H", len(fx)) + fx
    if o.get("fname") is not None:
        flags |= 8
        extra += bytes(o["fname"]) + b"\x00"
    if o.get("fcomment") is not None:
        flags |= 16
        extra += bytes(o["fcomment"]) + b"\x00"
    head = b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<L", 0) + b"\x02\xff" + extra
    if o.get("fhcrc"):
        head = bytearray(head)
        head[3] |= 2
        head = bytes(head) + struct.pack("<H", zlib.crc32(bytes(head)) & 0xFFFF)
    co = zlib.compressobj(int(o.get("level", 6)), zlib.DEFLATED, -15)
    body = co.compress(data) + co.flush()
    return head + body + struct.pack("<2L", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def _lz4_frame(data: bytes, o: dict[str, Any]) -> bytes:
    import lz4.frame

    return bytes(
        lz4.frame.compress(
            data,
            block_size=int(o.get("block_size", 0)),
            content_checksum=bool(o.get("content_checksum", False)),
            block_checksum=bool(o.get("block_checksum", False)),
            store_size=bool(o.get("store_size", True)),
        )
    )


def compress_one(kind: str, data: bytes, o: dict[str, Any]) -> bytes:
    if kind == "gzip":
        return _gzip_member(data, o)
    if kind == "zlib":
        return zlib.compress(data, int(o.get("level", 3)))
    if kind == "bz2":
        return bz2.compress(data, int(o.get("level", 9)))
    if kind == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=int(o.get("check", 4)))
    if kind == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE)
    if kind == "lz4":
        return _lz4_frame(data, o)
    raise ValueError(kind)


def render_compressed(node: Node) -> bytes:
    data = render(node.children[0])
    o = node.opts
    parts = [compress_one(node.kind, p, o) for p in _pieces(data, list(o.get("split", [])))]
    sep = bytes(o.get("between", b""))
    return bytes(o.get("prefix", b"")) + sep.join(parts) + bytes(o.get("trailing", b""))


def render_zf(node: Node) -> bytes:
    """joblib <= 0.9's single-file format: ``ZF`` + hex length padded to 19 + a zlib stream."""
    data = render(node.children[0])
    o = node.opts
    n = len(data) + int(o.get("len_delta", 0))
    text = str(o.get("hexfmt", "0x{:x}")).format(n)
    width = int(o.get("width", 19))
    head = b"ZF" + text.encode().ljust(width, bytes(o.get("pad", b" ")))
    return head + bytes(o.get("gap", b"")) + zlib.compress(data, int(o.get("level", 1)))
