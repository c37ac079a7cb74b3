"""Opcode-level mutators: insert, re-encode, renumber, reframe, cut and inject pickle opcodes.

A mutator takes a sample and a seeded :class:`random.Random`, changes the sample in place and
returns ``True``, or returns ``False`` when the sample has nothing it applies to. Every choice
comes from the random source, so (seed, step seed) gives the same mutant every time. Container,
wrapper and name mutators are in :mod:`.container_mutators`; :data:`MUTATORS` holds them all.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

from tests.scan.differential import pickleops as po
from tests.scan.differential.structure import Node, Sample

Mutator = Callable[[Sample, random.Random], bool]

OPS_KINDS = ("pickle", "ops")


def pick(
    sample: Sample, rng: random.Random, kinds: tuple[str, ...]
) -> tuple[tuple[int, ...], Node] | None:
    found = [(p, n) for p, n in sample.root.walk() if n.kind in kinds]
    if not found:
        return None
    # the stream a loader's object comes from is the most telling target: favour it
    main = [(p, n) for p, n in found if n.role == "main"]
    if main and rng.random() < 0.5:
        return rng.choice(main)
    return rng.choice(found)


def edit_ops(
    sample: Sample, rng: random.Random, fn: Callable[[list[bytes], random.Random], list[bytes]]
) -> bool:
    """Apply ``fn`` to the (unframed) ops of a random pickle/ops leaf."""
    target = pick(sample, rng, OPS_KINDS)
    if target is None:
        return False
    path, node = target
    ol = po.split(node.data)
    if not ol.ops:
        return False
    ops = po.unframe(ol.ops) if any(op[:1] == po.FRAME for op in ol.ops) else list(ol.ops)
    before = len(sample.notes)
    new = fn(ops, rng)
    node.data = b"".join(new) + ol.tail
    sample.root.thaw(path)
    where = _where(sample, path)
    sample.notes[before:] = [f"{n} in {where}" for n in sample.notes[before:]]
    return True


def _where(sample: Sample, path: tuple[int, ...]) -> str:
    names = []
    node = sample.root
    for i in path:
        node = node.children[i]
        names.append(node.name or f"{node.kind}[{i}]")
    return "/".join(names) or "the file"


def _boundary(ops: list[bytes], rng: random.Random) -> int:
    """An index between ops (never after a final STOP)."""
    end = len(ops) - 1 if ops and ops[-1] == po.STOP else len(ops)
    start = po.body_start(ops)
    if end <= start:
        return start
    return rng.randint(start, end)


# ---------------------------------------------------------------------------------------------


def insert_neutral(sample: Sample, rng: random.Random) -> bool:
    frags = po.neutral_fragments()

    def fn(ops: list[bytes], rng: random.Random) -> list[bytes]:
        at = _boundary(ops, rng)
        frag = rng.choice(frags)
        sample.note(f"inserted neutral {frag[:24]!r} before op {at}")
        return [*ops[:at], frag, *ops[at:]]

    return edit_ops(sample, rng, fn)


PROBE_BREAKERS = (
    b"]Nb0",
    b"I010\n0",
    b"I00\n0",
    b"L0010L\n0",
    b"S'abc'\n0",
    b"\x80\x00",
    b"(1",
)


def prefix_neutral(sample: Sample, rng: random.Random) -> bool:
    """A fragment at the very start of a stream (before or after PROTO): what probes read."""
    choices = (*PROBE_BREAKERS, po.ustar_prefix(), po.zlib_polyglot_prefix(), po.long_string())

    def fn(ops: list[bytes], rng: random.Random) -> list[bytes]:
        frag = rng.choice(choices)
        at = 0 if rng.random() < 0.5 else po.body_start(ops)
        where = "first op" if at == 0 else "op after PROTO"
        sample.note(f"prefixed {frag[:24]!r} ({len(frag)} bytes) as the {where}")
        return [*ops[:at], frag, *ops[at:]]

    return edit_ops(sample, rng, fn)


def str_value(op: bytes) -> str | None:
    code = op[:1]
    try:
        if code == b"\x8c":
            return op[2:].decode("utf-8")
        if code == b"X":
            return op[5:].decode("utf-8")
        if code == b"\x8d":
            return op[9:].decode("utf-8")
        if code == b"V":
            return op[1:-1].decode("raw_unicode_escape")
    except UnicodeDecodeError:
        return None
    return None


def _int_value(op: bytes) -> int | None:
    code = op[:1]
    if code == b"K":
        return op[1]
    if code == b"M":
        return int(struct.unpack("<H", op[1:3])[0])
    if code == b"J":
        return int(struct.unpack("<i", op[1:5])[0])
    if code == b"I" and op[1:-1] not in (b"00", b"01"):
        try:
            return int(op[1:-1])
        except ValueError:
            return None
    return None


def _bytes_value(op: bytes) -> bytes | None:
    code = op[:1]
    if code == b"C":
        return op[2:]
    if code == b"B":
        return op[5:]
    if code == b"\x8e":
        return op[9:]
    return None


def reencode_op(op: bytes, rng: random.Random) -> bytes | None:
    """The same value with another opcode or argument syntax, or None."""
    code = op[:1]
    iv = _int_value(op)
    if iv is not None:
        forms = [
            po.int_text(iv, rng.choice((0, 1, 2))),
            b"L" + str(iv).encode() + rng.choice((b"L", b"")) + b"\n",
            b"J" + struct.pack("<i", iv) if -(2**31) <= iv < 2**31 else po.int_text(iv),
        ]
        raw = iv.to_bytes((iv.bit_length() + 8) // 8, "little", signed=True)
        forms.append(b"\x8a" + bytes([len(raw)]) + raw)
        forms.append(b"\x8b" + struct.pack("<i", len(raw)) + raw)
        return rng.choice(forms)
    sv = str_value(op)
    if sv is not None:
        raw = sv.encode("utf-8")
        forms = [
            po.s_binunicode(sv),
            b"\x8d" + struct.pack("<Q", len(raw)) + raw,
            b"V" + sv.encode("raw_unicode_escape").replace(b"\n", b"\\u000a") + b"\n",
        ]
        if len(raw) < 256:
            forms.append(b"\x8c" + bytes([len(raw)]) + raw)
        return rng.choice(forms)
    bv = _bytes_value(op)
    if bv is not None:
        forms = [b"B" + struct.pack("<I", len(bv)) + bv, b"\x8e" + struct.pack("<Q", len(bv)) + bv]
        if len(bv) < 256:
            forms.append(b"C" + bytes([len(bv)]) + bv)
        return rng.choice(forms)
    if code in po.PUTS:
        return po.memo_op("put", po.memo_index(op), rng.choice((0, 1, 2)))
    if code in po.GETS:
        return po.memo_op("get", po.memo_index(op), rng.choice((0, 1, 2)))
    if code == b"c":
        module, name = op[1:-1].split(b"\n", 1)
        return rng.choice(
            (
                b"\x8c"
                + bytes([len(module)])
                + module
                + b"\x8c"
                + bytes([len(name)])
                + name
                + b"\x93",
                b"V" + module + b"\nV" + name + b"\n\x93",
            )
        )
    if code == b"\x88":
        return b"I01\n"
    if code == b"\x89":
        return b"I00\n"
    if code in (b"]", b"}", b")"):
        return b"(" + {b"]": b"l", b"}": b"d", b")": b"t"}[code]
    if code == b"G" and len(op) == 9:
        return b"F" + repr(struct.unpack(">d", op[1:9])[0]).encode() + b"\n"
    if code == b"U" and len(op) >= 2:
        return b"T" + struct.pack("<I", len(op) - 2) + op[2:]
    return None


def reencode(sample: Sample, rng: random.Random) -> bool:
    def fn(ops: list[bytes], rng: random.Random) -> list[bytes]:
        idx = list(range(len(ops)))
        rng.shuffle(idx)
        out = list(ops)
        changed = 0
        want = rng.choice((1, 1, 2, 5, 1000))
        for i in idx:
            new = reencode_op(out[i], rng)
            if new is not None:
                if changed < 3:
                    sample.note(f"re-encoded op {i} {out[i][:16]!r} as {new[:16]!r}")
                out[i] = new
                changed += 1
                if changed >= want:
                    break
        return out

    return edit_ops(sample, rng, fn)


def memo_renumber(sample: Sample, rng: random.Random) -> bool:
    def fn(ops: list[bytes], rng: random.Random) -> list[bytes]:
        ops = po.explicit_memo(ops)
        mode = rng.choice(("offset", "big", "shuffle"))
        used = sorted({po.memo_index(op) for op in ops if op[:1] in po.PUTS | po.GETS})
        if mode == "offset":
            k = rng.choice((1, 255, 256, 65536, 2**31 - 1 - len(used)))
            mapping = {u: u + k for u in used}
        elif mode == "big":
            mapping = {u: 2**32 - 1 - u for u in used}
        else:
            perm = list(used)
            rng.shuffle(perm)
            mapping = dict(zip(used, perm, strict=True))
        form = rng.choice((0, 1, 2))
        sample.note(f"memo indices renumbered ({mode}, form {form})")
        out = []
        for op in ops:
            if op[:1] in po.PUTS:
                out.append(po.memo_op("put", mapping[po.memo_index(op)], form))
            elif op[:1] in po.GETS:
                out.append(po.memo_op("get", mapping.get(po.memo_index(op), 0), form))
            else:
                out.append(op)
        return out

    return edit_ops(sample, rng, fn)


def delete_op(sample: Sample, rng: random.Random) -> bool:
    def fn(ops: list[bytes], rng: random.Random) -> list[bytes]:
        i = rng.randrange(len(ops))
        sample.note(f"deleted op {i} {ops[i][:16]!r}")
        return ops[:i] + ops[i + 1 :]

    return edit_ops(sample, rng, fn)


def duplicate_op(sample: Sample, rng: random.Random) -> bool:
    def fn(ops: list[bytes], rng: random.Random) -> list[bytes]:
        i = rng.randrange(len(ops))
        sample.note(f"duplicated op {i} {ops[i][:16]!r}")
        return ops[: i + 1] + ops[i:]

    return edit_ops(sample, rng, fn)


def flip_byte(sample: Sample, rng: random.Random) -> bool:
    target = pick(sample, rng, ("pickle", "ops", "raw"))
    if target is None or not target[1].data:
        return False
    path, node = target
    data = bytearray(node.data)
    for _ in range(rng.choice((1, 1, 2, 4))):
        i = rng.randrange(len(data))
        data[i] = rng.choice((rng.randrange(256), data[i] ^ (1 << rng.randrange(8))))
    node.data = bytes(data)
    sample.root.thaw(path)
    sample.note(f"flipped bytes in {_where(sample, path)}")
    return True


def set_proto(sample: Sample, rng: random.Random) -> bool:
    def fn(ops: list[bytes], rng: random.Random) -> list[bytes]:
        new = rng.choice((0, 1, 2, 3, 4, 5, 6, 255, -1))
        sample.note("PROTO removed" if new < 0 else f"PROTO set to {new}")
        if ops and ops[0][:1] == po.PROTO:
            return ops[1:] if new < 0 else [b"\x80" + bytes([new]), *ops[1:]]
        return ops if new < 0 else [b"\x80" + bytes([new]), *ops]

    return edit_ops(sample, rng, fn)


def reframe(sample: Sample, rng: random.Random) -> bool:
    """Frames around op-aligned runs, across op boundaries, or with a wrong declared size."""

    def fn(ops: list[bytes], rng: random.Random) -> list[bytes]:
        start = po.body_start(ops)
        head, body = ops[:start], b"".join(ops[start:])
        mode = rng.choice(("aligned", "unaligned", "wrong", "empty"))
        sample.note(f"re-framed ({mode} frames)")
        out = list(head)
        if mode == "aligned":
            i = start
            while i < len(ops):
                n = rng.randint(1, 8)
                chunk = b"".join(ops[i : i + n])
                out += [po.frame(len(chunk)), chunk]
                i += n
        elif mode == "unaligned":
            pos = 0
            while pos < len(body):
                n = rng.randint(1, 40)
                out += [po.frame(len(body[pos : pos + n])), body[pos : pos + n]]
                pos += n
        elif mode == "wrong":
            out += [po.frame(max(0, len(body) + rng.choice((-3, -1, 1, 7, 2**40)))), body]
        else:
            out += [po.frame(0), po.frame(len(body)), body]
        return out

    return edit_ops(sample, rng, fn)


def stop_placement(sample: Sample, rng: random.Random) -> bool:
    target = pick(sample, rng, OPS_KINDS)
    if target is None:
        return False
    path, node = target
    ol = po.split(node.data)
    ops = po.unframe(ol.ops)
    mode = rng.choice(("early", "drop", "truncate", "garbage", "second", "second_evil"))
    sample.note(f"STOP placement: {mode} in {_where(sample, path)}")
    if mode == "early" and len(ops) > 2:
        at = rng.randint(1, len(ops) - 1)
        ops.insert(at, po.STOP)
    elif mode == "drop" and ops and ops[-1] == po.STOP:
        ops.pop()
    elif mode == "truncate":
        raw = b"".join(ops)
        ops = [raw[: rng.randint(0, max(0, len(raw) - 1))]]
    elif mode == "garbage":
        ops.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))))
    elif mode == "second":
        ops.append(b"\x80\x02}q\x00.")
    else:
        ops.append(po.payload_pickle(rng.randrange(len(po.PAYLOADS)), rng.choice((0, 2, 4))))
    node.data = b"".join(ops) + ol.tail
    sample.root.thaw(path)
    return True


def inject_payload(sample: Sample, rng: random.Random) -> bool:
    def fn(ops: list[bytes], rng: random.Random) -> list[bytes]:
        at = _boundary(ops, rng)
        call = po.payload_call(rng.randrange(len(po.PAYLOADS)), rng.randrange(5))
        sample.note(f"payload {call[:30]!r} injected before op {at}")
        return [*ops[:at], call, *ops[at:]]

    return edit_ops(sample, rng, fn)


OPCODE_MUTATORS: dict[str, tuple[Mutator, int]] = {
    # name: (mutator, weight)
    "op.insert_neutral": (insert_neutral, 6),
    "op.prefix_neutral": (prefix_neutral, 5),
    "op.reencode": (reencode, 6),
    "op.memo_renumber": (memo_renumber, 3),
    "op.delete": (delete_op, 2),
    "op.duplicate": (duplicate_op, 2),
    "op.flip": (flip_byte, 3),
    "op.proto": (set_proto, 2),
    "op.reframe": (reframe, 4),
    "op.stop": (stop_placement, 4),
    "op.inject": (inject_payload, 4),
}
