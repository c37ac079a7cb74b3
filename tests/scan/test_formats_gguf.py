"""GGUF: chat-template SSTI (t45), header defects (t46), files written by the gguf package."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Finding, Location, Severity
from modelcrate.scan.gguf_scan import scan_gguf

LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
U32, STRING, ARRAY = 4, 8, 9


def gstr(s: str | bytes, n: int | None = None) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw) if n is None else n) + raw


def kv_str(key: str, value: str) -> bytes:
    return gstr(key) + struct.pack("<I", STRING) + gstr(value)


def kv_u32(key: str, value: int) -> bytes:
    return gstr(key) + struct.pack("<I", U32) + struct.pack("<I", value)


def tensor(name: str, dims: list[int], ggml_type: int = 0, offset: int = 0) -> bytes:
    out = gstr(name) + struct.pack("<I", len(dims))
    out += b"".join(struct.pack("<Q", d) for d in dims)
    return out + struct.pack("<IQ", ggml_type, offset)


def gguf(
    kvs: list[bytes],
    tensors: list[bytes],
    data: bytes = b"",
    *,
    n_kv: int | None = None,
    n_tensors: int | None = None,
    version: int = 3,
) -> bytes:
    head = b"GGUF" + struct.pack(
        "<IQQ",
        version,
        len(tensors) if n_tensors is None else n_tensors,
        len(kvs) if n_kv is None else n_kv,
    )
    body = head + b"".join(kvs) + b"".join(tensors)
    body += b"\0" * (-len(body) % 32)
    return body + data


def scan(data: bytes) -> list[Finding]:
    ctx = ScanContext()
    assert scan_gguf(data, Location("model.gguf"), ctx, 0) == "gguf"
    return ctx.findings


def ok_file(**kw: object) -> bytes:
    kvs = [kv_str("general.architecture", "llama"), kv_str("tokenizer.chat_template", LLAMA3)]
    return gguf(kvs, [tensor("a", [4]), tensor("b", [8], 0, 32)], b"\0" * 64)


DEFECTS: dict[str, tuple[bytes, str]] = {
    "huge_tensor_count": (gguf([], [], n_tensors=2**62), "tensor count"),
    "huge_kv_count": (gguf([], [], n_kv=2**40), "metadata count"),
    "string_len_2_64": (gguf([gstr("k", 2**64 - 1)], []), "length"),
    "string_past_eof": (gguf([gstr("k", 5000)], []), "past the end"),
    "array_exhaustion": (
        gguf([gstr("arr") + struct.pack("<IIQ", ARRAY, U32, 2**60)], []),
        "array",
    ),
    "nested_arrays": (
        gguf(
            [
                gstr("arr")
                + struct.pack("<IIQ", ARRAY, ARRAY, 1)
                + struct.pack("<IQ", ARRAY, 1)
                + struct.pack("<IQ", U32, 0)
            ],
            [],
        ),
        "nested",
    ),
    "unknown_value_type": (gguf([gstr("k") + struct.pack("<I", 99)], []), "unknown value type"),
    "alignment_not_pow2": (gguf([kv_u32("general.alignment", 24)], []), "power of two"),
    "alignment_zero": (gguf([kv_u32("general.alignment", 0)], []), "power of two"),
    "duplicate_key": (
        gguf([kv_str("general.name", "a"), kv_str("general.name", "b")], []),
        "more than once",
    ),
    "unknown_tensor_type": (gguf([], [tensor("t", [4], 1234)], b"\0" * 32), "unknown ggml"),
    "n_dims_over_4": (gguf([], [tensor("t", [1, 1, 1, 1, 1])], b"\0" * 32), "dimensions"),
    "dims_overflow": (gguf([], [tensor("t", [2**40, 2**40])], b"\0" * 32), "overflow"),
    "offset_past_eof": (gguf([], [tensor("t", [4], 0, 4096)], b"\0" * 32), "past the end"),
    "offset_unaligned": (gguf([], [tensor("t", [4], 0, 3)], b"\0" * 64), "aligned"),
    "overlap": (gguf([], [tensor("a", [8]), tensor("b", [8], 0, 0)], b"\0" * 64), "overlaps"),
    "duplicate_tensor": (
        gguf([], [tensor("a", [4]), tensor("a", [4], 0, 32)], b"\0" * 64),
        "more than once",
    ),
    "block_size": (gguf([], [tensor("q", [33], 8)], b"\0" * 64), "block size"),
    "bad_version": (b"GGUF" + struct.pack("<I", 7) + b"\0" * 16, "version"),
    "truncated": (ok_file()[:120], "past the end"),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_t46_gguf_header_defects(defect: str) -> None:
    data, needle = DEFECTS[defect]
    found = scan(data)
    assert found, defect
    assert all((f.rule_id, f.severity) == ("gguf.malformed", Severity.HIGH) for f in found)
    assert any(needle in f.message for f in found), [f.message for f in found]


def test_hand_written_gguf_is_clean() -> None:
    assert scan(ok_file()) == []


def _write(path: Path, template: str, *, big_endian: bool = False) -> bytes:
    import gguf as gg
    import numpy as np

    endian = gg.GGUFEndian.BIG if big_endian else gg.GGUFEndian.LITTLE
    w = gg.GGUFWriter(str(path), "llama", endianess=endian)
    w.add_name("tiny")
    w.add_context_length(128)
    w.add_chat_template(template)
    w.add_token_list(["<s>", "</s>", "a", "b"])
    w.add_token_scores([0.0, 0.0, -1.0, -2.0])
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def test_benign_gguf_written_by_gguf_package(tmp_path: Path) -> None:
    assert scan(_write(tmp_path / "m.gguf", LLAMA3)) == []
    assert scan(_write(tmp_path / "be.gguf", LLAMA3, big_endian=True)) == []


def test_t45_gguf_chat_template_ssti(tmp_path: Path) -> None:
    evil = LLAMA3 + "{{ lipsum.__globals__['os'].popen('id').read() }}"
    found = scan(_write(tmp_path / "evil.gguf", evil))
    assert [(f.rule_id, f.severity) for f in found] == [("template.ssti", Severity.CRITICAL)]
    named = gguf([kv_str("tokenizer.chat_template.tool_use", "{{ cycler.__init__ }}")], [])
    assert [f.rule_id for f in scan(named)] == ["template.ssti"]


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=8, max_value=400), st.binary(min_size=1, max_size=8))
def test_gguf_fuzz_never_raises(cut: int, junk: bytes) -> None:
    good = ok_file()
    pos = cut % len(good)
    scan(good[:pos])
    scan(good[:pos] + junk + good[pos + len(junk) :])
