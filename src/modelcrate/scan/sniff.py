"""Format by content, not by name: magic bytes and structure decide.

The name is only a tie-breaker for formats without a magic number (protobuf, YAML).
"""

from __future__ import annotations

import struct
import zlib

from modelcrate.scan.context import Blob

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


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack_from("<Q", head)
    return n >= 2 and head[8:9] == b"{" and head[9:10] in b'"} \t\r\n'


def _has_trailing_zip(data: Blob) -> bool:
    tail_start = max(0, len(data) - 65_557)
    return data.rfind(b"PK\x05\x06", tail_start) >= 0 and data.find(b"PK\x03\x04") >= 0


def sniff(data: Blob, name: str = "") -> str:
    """Return a format name: a key of ``context.SCANNERS``, ``"unknown"`` or ``"empty"``."""
    if len(data) == 0:
        return "empty"
    head = bytes(data[:512])
    for magic, fmt in _MAGICS:
        if head.startswith(magic):
            return fmt
    if len(data) >= 262 and bytes(data[257:262]) == b"ustar":
        return "tar"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "pickle"
    if head.startswith(b"BZh") and head[3:4] in b"123456789" and len(head) > 3:
        return "bz2"
    if _is_safetensors(head, len(data)):
        return "safetensors"
    lower = name.lower().rsplit("/", 1)[-1]
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"[") and not lower.endswith(".ubj"):
        return "json"
    if _is_zlib(head):
        return "zlib"
    if head[:1] == b"\x5d" and head[5:13] == b"\xff" * 8:
        # raw .lzma (FORMAT_ALONE, as joblib writes it): properties 0x5d, dict size, size unknown
        return "lzma"
    from modelcrate.scan import protobuf_wire

    if lower == "saved_model.pb" or (
        lower.endswith(".pb") and protobuf_wire.looks_like_savedmodel(data)
    ):
        return "savedmodel"
    if lower.endswith(".onnx") or protobuf_wire.looks_like_onnx(data):
        return "onnx"
    from modelcrate.scan.pickle_scan import looks_like_pickle

    if looks_like_pickle(data):
        return "pickle"
    if lower.endswith((".yaml", ".yml")):
        return "yaml"
    if _has_trailing_zip(data):
        return "zip"
    if head.startswith(b"tree\nversion="):
        return "lightgbm-text"
    return "unknown"
