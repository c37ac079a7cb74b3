"""Format by content, not by name: every detector that accepts the bytes is reported.

Loaders look at different places in a file, so one file can be several formats at once (a
polyglot), and the scan must see it as each loader does:

* pickle loaders (``pickle.load``, ``torch.load`` of a non-zip, ``joblib.load``,
  ``numpy.load(allow_pickle=True)``, ``pandas.read_pickle``) run opcodes from byte 0;
* zip readers find the end-of-central-directory record at the end of the file;
* tar readers check a header checksum at byte 0 (the ``ustar`` magic sits at 257);
* the HDF5 library (h5py, Keras ``.h5``) looks for its superblock at 0, 512, 1024, 2048, ...;
* safetensors reads an 8-byte header length at 0; GGUF, NPY, HDF5, 7z and the compressed
  formats a magic number at 0.

:func:`sniff_all` returns every format whose detector accepts the bytes (the primary one
first) and the engine analyses the file as each. A cheap probe decides whether a pickle loader
could run the file, so a real safetensors or zip file never pays for a pickle scan. The name
is only a tie-breaker for formats without a magic number (protobuf, YAML).
"""

from __future__ import annotations

import re
import struct
import tarfile
import zlib

from modelcrate.scan.context import Blob
from modelcrate.scan.zipreader import has_central_directory

_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"PK\x07\x08", "zip"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\x93NUMPY", "npy"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"GGUF", "gguf"),
    (b"ZF0x", "joblib-zf"),
)
# The order a polyglot's formats are listed in: the first is the file's reported format.
_PRIMARY = (
    "magic",
    "pickle",
    "tar",
    "bz2",
    "safetensors",
    "json",
    "zlib",
    "lzma",
    "savedmodel",
    "onnx",
    "yaml",
    "trailing-zip",
    "hdf5-userblock",
    "lightgbm-text",
)
_HDF5 = b"\x89HDF\r\n\x1a\n"
# Magic numbers on which CPython's unpickler fails at once (no opcode, or STACK_GLOBAL/NEWFALSE
# followed by no opcode): such files need no pickle probe. ``PK`` (PERSID) and ``GGUF``
# (BINFLOAT) are opcodes, so zip and GGUF files are probed.
_NEVER_PICKLES = frozenset({"gzip", "xz", "7z", "lz4", "npy", "hdf5", "joblib-zf"})
_TAR_CHECKSUM = re.compile(rb"[0-7 \x00]{8}")


def _is_zlib(head: bytes) -> bool:
    """A zlib header (2 bytes, checksum) whose first block also inflates without error.

    The 2-byte check alone matches text such as a protocol-0 pickle starting ``(S``.
    """
    if len(head) < 2:
        return False
    cmf, flg = head[0], head[1]
    if not (cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf * 256 + flg) % 31 == 0 and not flg & 0x20):
        return False
    try:
        zlib.decompressobj().decompress(head, 256)
    except zlib.error:
        return False
    return True


def _is_safetensors(head: bytes) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack_from("<Q", head)
    return n >= 2 and head[8:9] == b"{" and head[9:10] in b'"} \t\r\n'


def _is_tar(data: Blob, head: bytes) -> bool:
    """``ustar`` at 257, or a first header whose checksum :mod:`tarfile` accepts (V7 tar)."""
    if len(data) >= 262 and bytes(data[257:262]) == b"ustar":
        return True
    if len(head) < 512:
        return False
    field = head[148:156]
    if not (_TAR_CHECKSUM.fullmatch(field) or field[:1] in (b"\x80", b"\xff")):
        return False
    try:
        tarfile.TarInfo.frombuf(head[:512], "utf-8", "surrogateescape")
    except (tarfile.HeaderError, ValueError, UnicodeError):
        return False
    return True


def could_unpickle(data: Blob, head: bytes | None = None) -> bool:
    """Could a pickle loader run this from byte 0? A PROTO header or the pickle probe says so."""
    head = bytes(data[:2]) if head is None else head
    if head[:1] == b"\x80":
        return len(head) > 1 and head[1] <= 5
    from modelcrate.scan.pickle_scan import looks_like_pickle

    return looks_like_pickle(data)


def _text_and_protobuf(data: Blob, head: bytes, lower: str) -> list[str]:
    """Detectors without a magic number: consulted only when no binary format claims the file."""
    found: list[str] = []
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"[") and not lower.endswith(".ubj"):
        found.append("json")
    if _is_zlib(head):
        found.append("zlib")
    if head[:1] == b"\x5d" and head[5:13] == b"\xff" * 8:
        # raw .lzma (FORMAT_ALONE, as joblib writes it): properties 0x5d, dict size, size unknown
        found.append("lzma")
    from modelcrate.scan import protobuf_wire

    if lower == "saved_model.pb" or (
        lower.endswith(".pb") and protobuf_wire.looks_like_savedmodel(data)
    ):
        found.append("savedmodel")
    elif lower.endswith(".onnx") or protobuf_wire.looks_like_onnx(data):
        found.append("onnx")
    if lower.endswith((".yaml", ".yml")) and not found:
        found.append("yaml")
    if head.startswith(b"tree\nversion=") and not found:
        found.append("lightgbm-text")
    return found


def sniff_all(data: Blob, name: str = "") -> tuple[str, ...]:
    """Every format whose detector accepts ``data``, the primary one first.

    Each is a key of ``context.SCANNERS`` (or ``lightgbm-text``); ``("unknown",)`` when none
    matches, ``("empty",)`` for no bytes.
    """
    if len(data) == 0:
        return ("empty",)
    head = bytes(data[:512])
    lower = name.lower().replace("\\", "/").rsplit("/", 1)[-1]
    found: dict[str, str] = {}  # detector -> format
    for magic, fmt in _MAGICS:
        if head.startswith(magic):
            found["magic"] = fmt
            break
    if found.get("magic") not in _NEVER_PICKLES and could_unpickle(data, head):
        found["pickle"] = "pickle"
    if _is_tar(data, head):
        found["tar"] = "tar"
    if head.startswith(b"BZh") and head[3:4] in b"123456789" and len(head) > 3:
        found["bz2"] = "bz2"
    if _is_safetensors(head):
        found["safetensors"] = "safetensors"
    if not set(found) - {"pickle"}:
        for fmt in _text_and_protobuf(data, head, lower):
            found[fmt] = fmt
    if found.get("magic") != "zip" and has_central_directory(data):
        found["trailing-zip"] = "zip"
    if found.get("magic") != "hdf5" and _hdf5_after_userblock(data):
        found["hdf5-userblock"] = "hdf5"
    formats = [found[k] for k in _PRIMARY if k in found]
    if not formats and _long_first_argument(data):
        formats.append("pickle")
    if not formats and _has_zip_records(data):
        formats.append("zip")  # local headers and an end record, no usable directory
    return tuple(formats) if formats else ("unknown",)


# First opcodes whose argument can be longer than the pickle probe reads, with the size of
# their length field: BINBYTES, BINSTRING, BINUNICODE, BINUNICODE8, BINBYTES8, BYTEARRAY8.
_LONG_ARGUMENT = {0x42: 4, 0x54: 4, 0x58: 4, 0x8D: 8, 0x8E: 8, 0x96: 8}
_PROBE_WINDOW = 64 * 1024
_LINE_SEARCH = 16 * 1024 * 1024


def _long_first_argument(data: Blob) -> bool:
    """A first opcode whose string runs past the probe's window but ends inside the file.

    The probe cannot see the opcodes after such a string, yet a pickle loader reads the string
    and runs them: the file is analysed as a pickle rather than called unknown.
    """
    head = bytes(data[:9])
    if not head:
        return False
    width = _LONG_ARGUMENT.get(head[0])
    if width is not None:
        if len(head) < 1 + width:
            return False
        length = int.from_bytes(head[1 : 1 + width], "little", signed=head[0] == 0x54)
        return _PROBE_WINDOW < 1 + width + length <= len(data)
    if head[:1] in (b"S", b"V"):  # STRING / UNICODE: one text line
        if data.find(b"\n", 0, _PROBE_WINDOW) >= 0:
            return False
        return data.find(b"\n", _PROBE_WINDOW, _LINE_SEARCH) >= 0
    return False


def _has_zip_records(data: Blob) -> bool:
    tail_start = max(0, len(data) - 65_557)
    return data.rfind(b"PK\x05\x06", tail_start) >= 0 and data.find(b"PK\x03\x04") >= 0


def _hdf5_after_userblock(data: Blob) -> bool:
    """The HDF5 library (h5py, Keras) finds the superblock at 0, 512, 1024, 2048, ...: a file
    can start with anything (a pickle) and still open as HDF5."""
    offset = 512
    while offset + len(_HDF5) <= len(data):
        if bytes(data[offset : offset + len(_HDF5)]) == _HDF5:
            return True
        offset *= 2
    return False


def sniff(data: Blob, name: str = "") -> str:
    """The primary format of ``data`` (see :func:`sniff_all` for every format it also is)."""
    return sniff_all(data, name)[0]
