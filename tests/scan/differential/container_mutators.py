"""Container-level mutators: zip and tar fields and directories, compression framing, joblib's
array wrapper, NPY headers, file names and what surrounds the file.

Same contract as :mod:`.mutators`: change the sample in place and return ``True``, or return
``False`` when it does not apply; every choice from the given random source.
"""

from __future__ import annotations

import pickle
import random
import struct
from functools import cache

from tests.scan.differential import pickleops as po
from tests.scan.differential.mutators import Mutator, str_value
from tests.scan.differential.structure import COMPRESSIONS, Node, Sample


def _pick(
    sample: Sample, rng: random.Random, kinds: tuple[str, ...]
) -> tuple[tuple[int, ...], Node] | None:
    found = [(p, n) for p, n in sample.root.walk() if n.kind in kinds]
    return rng.choice(found) if found else None


def _rand(rng: random.Random, lo: int, hi: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(lo, hi)))


def _inject_node(node: Node, rng: random.Random) -> None:
    """A payload call in the first stream of ``node`` (frames dropped)."""
    for _, leaf in node.walk():
        if leaf.kind in ("pickle", "ops"):
            ol = po.split(leaf.data)
            ops = po.unframe(ol.ops)
            at = po.body_start(ops)
            ops.insert(at, po.payload_call(rng.randrange(len(po.PAYLOADS)), rng.randrange(5)))
            leaf.data = b"".join(ops) + ol.tail
            leaf.frozen = None
            return


def _replace(sample: Sample, path: tuple[int, ...], new: Node) -> None:
    if not path:
        sample.root = new
        return
    parent = sample.root.at(path[:-1])
    parent.children[path[-1]] = new
    sample.root.thaw(path[:-1])


@cache
def _object_array_pickle(proto: int) -> bytes:
    import numpy as np

    return pickle.dumps(np.array([1, "a", None], dtype=object), protocol=proto)


def _nested_pickle(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return _object_array_pickle(rng.choice((2, 3, 5)))
    return po.payload_pickle(rng.randrange(len(po.PAYLOADS)), rng.choice((2, 4, 5)))


# ---------------------------------------------------------------------------------------------
# zip


def zip_member_field(sample: Sample, rng: random.Random) -> bool:
    t = _pick(sample, rng, ("zip",))
    if t is None or not t[1].children:
        return False
    path, z = t
    i = rng.randrange(len(z.children))
    m = z.children[i].member
    field = rng.choice(
        ("method", "flags", "extra", "cextra", "local_name", "crc", "descriptor", "comment")
    )
    if field == "method":
        m["method"] = rng.choice((0, 8, 8, 12, 14, 99))
    elif field == "flags":
        m["flags"] = rng.choice((0x1, 0x8, 0x800, 0x40, 0x2000, rng.randrange(1 << 16)))
    elif field == "extra":
        kind = rng.choice((0x0001, 0x5455, 0x7875, 0xCAFE, rng.randrange(1 << 16)))
        body = _rand(rng, 0, 24)
        m["extra"] = struct.pack("<HH", kind, len(body) + rng.choice((0, 0, 1, -1))) + body
    elif field == "cextra":
        body = _rand(rng, 0, 24)
        m["cextra"] = struct.pack("<HH", rng.randrange(1 << 16), len(body)) + body
    elif field == "local_name":
        name = z.children[i].name
        m["local_name"] = rng.choice((name + "x", name.upper(), "../" + name, "a" * 300, ""))
    elif field == "crc":
        m["crc_xor"] = 1 << rng.randrange(32)
        if rng.random() < 0.5:
            m["usize_delta"] = rng.choice((-1, 1, 1 << 20))
    elif field == "descriptor":
        m["descriptor"] = True
    else:
        m["comment"] = _rand(rng, 1, 40)
    sample.note(f"zip member {z.children[i].name!r}: {field} -> {m}")
    sample.root.thaw((*path, i))
    return True


def zip_archive_field(sample: Sample, rng: random.Random) -> bool:
    t = _pick(sample, rng, ("zip",))
    if t is None:
        return False
    path, z = t
    field = rng.choice(("comment", "prefix", "decoy", "cd_offset", "count", "trailing", "order"))
    o = z.opts
    if field == "comment":
        o["comment"] = rng.choice(
            (_rand(rng, 1, 64), b"PK\x05\x06" + b"\x00" * 18, po.payload_pickle(0, 2))
        )
    elif field == "prefix":
        o["prefix"] = rng.choice(
            (
                _rand(rng, 1, 100),
                b"\x80\x02}q\x00.",
                po.payload_pickle(rng.randrange(len(po.PAYLOADS)), rng.choice((0, 2, 4))),
                b"\x00" * 512,
            )
        )
    elif field == "decoy":
        o["decoy"] = True
    elif field == "cd_offset":
        o["cd_offset_delta"] = rng.choice((-46, -1, 1, 4, 1 << 20))
    elif field == "count":
        o["count_delta"] = rng.choice((-1, 1, 100))
    elif field == "trailing":
        o["trailing"] = rng.choice((_rand(rng, 1, 64), po.payload_pickle(1, 2)))
    else:
        order = list(range(len(z.children)))
        rng.shuffle(order)
        o["order"] = order
    shown = {k: (v[:24] if isinstance(v, bytes) else v) for k, v in o.items() if k != "align"}
    sample.note(f"zip archive: {field} -> {shown}")
    sample.root.thaw(path)
    return True


def archive_dup_member(sample: Sample, rng: random.Random) -> bool:
    """A second member with the same name (zipfile and tarfile take the last one)."""
    t = _pick(sample, rng, ("zip", "tar"))
    if t is None or not t[1].children:
        return False
    path, arc = t
    i = rng.randrange(len(arc.children))
    dup = arc.children[i].clone()
    for _, n in dup.walk():
        n.frozen = None
    if rng.random() < 0.8:
        _inject_node(dup, rng)
    at = rng.choice((i + 1, len(arc.children), i))
    arc.children.insert(at, dup)
    sample.note(f"{arc.kind} member {dup.name!r} duplicated at position {at}")
    arc.opts.pop("order", None)
    sample.root.thaw(path)
    return True


def archive_rename(sample: Sample, rng: random.Random) -> bool:
    t = _pick(sample, rng, ("zip", "tar"))
    if t is None or not t[1].children:
        return False
    path, arc = t
    c = rng.choice(arc.children)
    c.name = rng.choice(
        (
            c.name + ".bak",
            "other/" + c.name.rsplit("/", 1)[-1],
            "./" + c.name,
            c.name.replace("/", "\\"),
            "d/" * 60 + c.name,  # longer than ustar's 100-byte name field
        )
    )
    sample.note(f"{arc.kind} member renamed to {c.name[:60]!r}")
    sample.root.thaw(path)
    return True


# ---------------------------------------------------------------------------------------------
# tar


def tar_field(sample: Sample, rng: random.Random) -> bool:
    t = _pick(sample, rng, ("tar",))
    if t is None:
        return False
    path, tar = t
    field = rng.choice(("format", "v7", "v7", "bad_checksum", "no_end", "trailing", "base256"))
    if field == "format":
        tar.opts["format"] = rng.choice(("ustar", "gnu", "pax"))
    elif field == "trailing":
        tar.opts["trailing"] = rng.choice((_rand(rng, 1, 600), po.payload_pickle(2, 2)))
    else:
        tar.opts[field] = True
    sample.note(f"tar: {field} -> {tar.opts.get(field)!r:.40}")
    sample.root.thaw(path)
    return True


# ---------------------------------------------------------------------------------------------
# compression framing


def comp_split(sample: Sample, rng: random.Random) -> bool:
    """Concatenated streams (gzip members, bz2/xz/lzma/lz4 streams, zlib streams)."""
    t = _pick(sample, rng, COMPRESSIONS)
    if t is None:
        return False
    path, c = t
    c.opts["split"] = sorted(rng.random() for _ in range(rng.randint(1, 3)))
    if c.kind == "xz" and rng.random() < 0.5:
        c.opts["between"] = b"\x00" * 4  # xz stream padding
    sample.note(f"{c.kind}: data split into concatenated streams at {c.opts['split']}")
    sample.root.thaw(path)
    return True


def comp_trailing(sample: Sample, rng: random.Random) -> bool:
    t = _pick(sample, rng, (*COMPRESSIONS, "zf", "npy"))
    if t is None:
        return False
    path, c = t
    c.opts["trailing"] = rng.choice(
        (_rand(rng, 1, 32), b"\x00" * rng.randint(1, 8), po.payload_pickle(3, 2), b"\x80\x02N.")
    )
    sample.note(f"{c.kind}: trailing bytes {c.opts['trailing'][:24]!r}")
    sample.root.thaw(path)
    return True


def comp_header(sample: Sample, rng: random.Random) -> bool:
    t = _pick(sample, rng, COMPRESSIONS)
    if t is None:
        return False
    path, c = t
    o = c.opts
    if c.kind == "gzip":
        key = rng.choice(("fextra", "fname", "fcomment", "fhcrc", "level"))
        o[key] = {
            "fextra": _rand(rng, 0, 20),
            "fname": b"model.pkl",
            "fcomment": _rand(rng, 1, 20).replace(b"\x00", b"x"),
            "fhcrc": True,
            "level": rng.choice((0, 1, 9)),
        }[key]
    elif c.kind == "lz4":
        key = rng.choice(("block_size", "content_checksum", "block_checksum", "store_size"))
        o[key] = rng.choice((4, 5, 6, 7)) if key == "block_size" else rng.random() < 0.5
    elif c.kind == "xz":
        o["check"] = rng.choice((0, 1, 4, 10))
    else:
        o["level"] = rng.choice((0, 1, 9)) if c.kind in ("zlib", "gzip") else rng.choice((1, 9))
    sample.note(f"{c.kind} header/options: {o}")
    sample.root.thaw(path)
    return True


def comp_wrap(sample: Sample, rng: random.Random) -> bool:
    """Put a node (the file, or a member) inside a compression layer."""
    nodes = [(p, n) for p, n in sample.root.walk() if n.kind != "raw" and len(p) <= 2]
    path, node = rng.choice(nodes)
    kind = rng.choice(COMPRESSIONS)
    new = Node(kind, name=node.name, children=[node], member=node.member)
    node.member = {}
    node.name = ""
    _replace(sample, path, new)
    sample.note(f"wrapped {'the file' if not path else node.kind} in {kind}")
    if not path and rng.random() < 0.7:
        stem = sample.name.split(".", 1)[0]
        suffix = {"gzip": ".pkl.gz", "bz2": ".pkl.bz2", "xz": ".pkl.xz"}.get(kind, ".joblib")
        sample.name = stem + suffix
    return True


def comp_unwrap(sample: Sample, rng: random.Random) -> bool:
    t = _pick(sample, rng, (*COMPRESSIONS, "zf"))
    if t is None:
        return False
    path, c = t
    child = c.children[0]
    child.name, child.member = c.name, c.member
    _replace(sample, path, child)
    sample.note(f"removed the {c.kind} layer")
    return True


def zf_header(sample: Sample, rng: random.Random) -> bool:
    t = _pick(sample, rng, ("zf",))
    if t is None:
        return False
    path, z = t
    key = rng.choice(("hexfmt", "hexfmt", "width", "pad", "gap", "len_delta"))
    z.opts[key] = {
        "hexfmt": rng.choice(("{:x}", "0X{:X}", "{:X}", "0x{:016x}", " 0x{:x}", "0x{:x}L")),
        "width": rng.choice((18, 20, 24)),
        "pad": rng.choice((b"\x00", b"\t", b"\n")),
        "gap": b" ",
        "len_delta": rng.choice((-1, 1, 1000)),
    }[key]
    sample.note(f"joblib ZF header: {key} -> {z.opts[key]!r}")
    sample.root.thaw(path)
    return True


# ---------------------------------------------------------------------------------------------
# NPY headers

OBJECT_DESCRS = (
    "'|O'",
    "'O'",
    "'object'",
    "'(1,)O'",
    "'i4,O'",
    "[('a', '|O')]",
    "[('a', '<i4'), ('b', '|O')]",
    "'O8'",
    "'=O'",
)
RAW_DESCRS = ("'<f8'", "'f8'", "'float64'", "'<d'", "'>f8'", "'|u1'", "'<f4'", "'(2,)<f8'")


def npy_field(sample: Sample, rng: random.Random) -> bool:
    t = _pick(sample, rng, ("npy",))
    if t is None:
        return False
    path, n = t
    o = n.opts
    is_obj = n.children[0].kind == "pickle"
    key = rng.choice(("descr", "descr", "shape", "shape", "version", "fortran", "order", "pad"))
    if key == "descr":
        pool = OBJECT_DESCRS if is_obj != (rng.random() < 0.1) else RAW_DESCRS
        o["descr"] = rng.choice(pool)
    elif key == "shape":
        o["shape"] = rng.choice(
            (
                "(4L,)",
                "(True,)",
                "(-1,)",
                "()",
                "(4, 1)",
                "(0,)",
                "[4]",
                " ( 4 , ) ",
                "(4,)",
                "(2**70,)",
            )
        )
    elif key == "version":
        o["version"] = rng.choice(((1, 0), (2, 0), (3, 0), (1, 1), (4, 0)))
    elif key == "fortran":
        o["fortran"] = rng.choice(("True", "0", "1", "None"))
    elif key == "order":
        order = ["descr", "fortran_order", "shape"]
        rng.shuffle(order)
        o["order"] = order
    else:
        choice = rng.choice(("big", "align", "terminator", "len_delta"))
        if choice == "big":
            o["extra_pad"] = rng.choice((70_000, 1_100_000))
            if rng.random() < 0.8:
                o["version"] = (2, 0)
        elif choice == "align":
            o["align"] = rng.choice((1, 16, 4096))
        elif choice == "terminator":
            o["terminator"] = rng.choice((" ", "\r\n", ""))
        else:
            o["len_delta"] = rng.choice((-1, 1, -8))
    shown = {k: v for k, v in o.items() if k != "extra_pad"} | {"extra_pad": o.get("extra_pad", 0)}
    sample.note(f"NPY header {n.name or ''} {key}: {shown}")
    sample.root.thaw(path)
    return True


def npy_to_object(sample: Sample, rng: random.Random) -> bool:
    """An NPY of numbers turned into an object array whose body is a pickle."""
    t = _pick(sample, rng, ("npy",))
    if t is None:
        return False
    path, n = t
    n.opts["descr"] = rng.choice(OBJECT_DESCRS)
    n.children[0] = Node("pickle", _nested_pickle(rng), role="main")
    sample.note(f"NPY {n.name or ''} turned into descr {n.opts['descr']} with a pickle body")
    sample.root.thaw(path)
    return True


# ---------------------------------------------------------------------------------------------
# joblib's NumpyArrayWrapper

WRAPPER_KEYS = frozenset(
    {"subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes"}
)
_MEMO_OPS = (b"\x94", b"p", b"q", b"r")


def _wrapper_sites(seq: Node) -> list[dict[str, tuple[int, int]]]:
    """For each wrapper in a joblib stream: key -> (child index, op index) of its value op."""
    memo: dict[int, str | None] = {}
    wrappers: list[dict[str, tuple[int, int]]] = []
    pending: str | None = None
    last: str | None = None
    for ci, child in enumerate(seq.children):
        if child.kind != "ops":
            continue
        ops = po.split(child.data).ops
        for oi, op in enumerate(ops):
            code = op[:1]
            if code == b"\x94":
                memo[len(memo)] = last
                continue
            if code in po.PUTS:
                memo[po.memo_index(op)] = last
                continue
            value: str | None = None
            value = memo.get(po.memo_index(op)) if code in po.GETS else str_value(op)
            last = value
            if pending is not None:
                if pending == "subclass":
                    wrappers.append({})
                if wrappers:
                    wrappers[-1][pending] = (ci, oi)
                pending = None
                continue
            if value in WRAPPER_KEYS and code not in (b"\x93",):
                pending = value
    return wrappers


def _joblib_seq(sample: Sample) -> tuple[tuple[int, ...], Node] | None:
    for p, n in sample.root.walk():
        kinds = {c.kind for c in n.children}
        nested = any(c.role == "nested" for c in n.children)
        if n.kind == "concat" and "ops" in kinds and ("raw" in kinds or nested):
            return p, n
    return None


def _unframe_all(seq: Node) -> None:
    for c in seq.children:
        if c.kind == "ops":
            ol = po.split(c.data)
            c.data = b"".join(po.unframe(ol.ops)) + ol.tail


def _set_op(seq: Node, site: tuple[int, int], new: bytes) -> None:
    ci, oi = site
    ol = po.split(seq.children[ci].data)
    ol.ops[oi] = new
    seq.children[ci].data = ol.render()


def _next_data(seq: Node, ci: int) -> int | None:
    for j in range(ci + 1, len(seq.children)):
        if seq.children[j].kind in ("raw", "pickle"):
            return j
    return None


def joblib_wrapper(sample: Sample, rng: random.Random) -> bool:
    t = _joblib_seq(sample)
    if t is None:
        return False
    path, seq = t
    _unframe_all(seq)
    sites = [w for w in _wrapper_sites(seq) if w]
    if not sites:
        return False
    w = rng.choice(sites)
    keys = ("numpy_array_alignment_bytes", "order", "allow_mmap", "shape", "dtype")
    key = rng.choices(keys, (3, 1, 1, 1, 3))[0]
    if key not in w:
        return False
    site = w[key]
    sample.note(f"joblib wrapper #{sites.index(w)}: {key} changed")
    if key == "numpy_array_alignment_bytes":
        new = rng.choice((b"N", b"N", b"K\x00", b"K\x01", b"K\x40", b"J\xff\xff\xff\x7f"))
        _set_op(seq, site, new)
        sample.note(f"joblib numpy_array_alignment_bytes -> {new!r}")
        j = _next_data(seq, site[0])
        raw = seq.children[j] if j is not None else None
        if new == b"N" and raw is not None and raw.kind == "raw" and rng.random() < 0.6:
            pad = raw.data[0]
            if pad <= 64 and raw.data[1 : 1 + pad] == b"\xff" * pad:
                raw.data = raw.data[1 + pad :]  # as joblib writes it with alignment None
                sample.note("array padding removed (as joblib writes it with alignment None)")
    elif key == "order":
        _set_op(seq, site, po.s_unicode(rng.choice(("F", "C", "A", "K", "X"))))
    elif key == "allow_mmap":
        _set_op(seq, site, rng.choice((b"\x88", b"\x89")))
    elif key == "shape":
        _set_op(
            seq, site, rng.choice((b"K\x00", b"K\x07", b"K\x09", b"J\xff\xff\xff\x7f", b"K\x01"))
        )
    else:
        sample.note(f"joblib wrapper dtype -> {_joblib_dtype(seq, site, rng)}")
    sample.root.thaw(path)
    return True


def _joblib_dtype(seq: Node, site: tuple[int, int], rng: random.Random) -> str:
    """Change the wrapper's dtype descr; to an object type the data becomes a nested pickle."""
    ci, oi = site
    ops = po.split(seq.children[ci].data).ops
    k = oi
    while k < len(ops) and ops[k][:1] != b"\x87":  # TUPLE3 of dtype(descr, align, copy)
        k += 1
    d = k - 3
    if d < oi or d >= len(ops):
        return "dtype not found"
    descr = rng.choice(("O", "(1,)O", "i4,O", "O8", "f4", "u1", "(2,)f8", "V8"))
    ops[d] = po.s_unicode(descr)
    if "O" in descr:
        for m in range(k, min(len(ops), k + 12)):
            if ops[m] in (b"\x8c\x01<", b"\x8c\x01>"):
                ops[m] = b"\x8c\x01|"
                break
    seq.children[ci].data = b"".join(ops)
    j = _next_data(seq, ci)
    if "O" in descr and j is not None and seq.children[j].kind == "raw":
        seq.children[j] = Node("pickle", _nested_pickle(rng), role="nested")
        descr += ", array data replaced by a nested pickle"
    return descr


def joblib_padding_ops(sample: Sample, rng: random.Random) -> bool:
    """Padding whose length byte is an opcode and whose bytes are ops: joblib skips them,
    pickle.load (and every loader that falls back to it) runs them."""
    t = _joblib_seq(sample)
    if t is None:
        return False
    path, seq = t
    raws = [c for c in seq.children if c.kind == "raw"]
    if not raws:
        return False
    raw = rng.choice(raws)
    pad = raw.data[0]
    if not (pad <= 64 and raw.data[1 : 1 + pad] == b"\xff" * pad):
        return False
    data = raw.data[1 + pad :]
    v = ord("N")
    body = b"0"
    if rng.random() < 0.7:
        body += po.payload_call(rng.randrange(len(po.PAYLOADS)), rng.randrange(5))
    r = v - len(body)
    if r % 2:
        body += b"I00\n0"
        r -= 5
    body += b"N0" * (r // 2)
    raw.data = bytes([v]) + body + data
    sample.note(f"joblib padding of {v} bytes whose length byte and body are opcodes {body[:30]!r}")
    sample.root.thaw(path)
    return True


def raw_to_ops(sample: Sample, rng: random.Random) -> bool:
    """Bytes a loader reads as data overwritten (same length) with opcodes."""
    t = _pick(sample, rng, ("raw",))
    if t is None or len(t[1].data) < 8:
        return False
    path, raw = t
    call = po.payload_call(rng.randrange(len(po.PAYLOADS)), rng.randrange(5))
    if rng.random() < 0.3:
        call = b"N0" * 4
    start = rng.choice((0, 0, rng.randrange(len(raw.data))))
    data = bytearray(raw.data)
    data[start : start + len(call)] = call
    raw.data = bytes(data[: max(len(raw.data), start + len(call))])
    sample.note(f"raw data overwritten at {start} with ops {call[:30]!r}")
    sample.root.thaw(path)
    return True


# ---------------------------------------------------------------------------------------------
# names and surroundings

SUFFIXES = (
    ".pkl",
    ".pt",
    ".pth",
    ".bin",
    ".ckpt",
    ".joblib",
    ".npy",
    ".npz",
    ".pkl.gz",
    ".pkl.bz2",
    ".pkl.xz",
    ".pkl.zip",
    ".pkl.tar",
    ".tar.gz",
    ".pickle",
    ".dat",
    "",
)


def rename_file(sample: Sample, rng: random.Random) -> bool:
    stem = sample.name.split(".", 1)[0] or "model"
    sample.name = stem + rng.choice(SUFFIXES)
    sample.note(f"file renamed {sample.name!r}")
    return True


def surround(sample: Sample, rng: random.Random) -> bool:
    """Data before or after the whole file: a pickle, another copy, garbage."""
    extra_kind = rng.choice(("benign", "evil", "garbage", "copy"))
    if extra_kind == "benign":
        extra = Node("pickle", b"\x80\x02}q\x00.")
    elif extra_kind == "evil":
        extra = Node(
            "pickle", po.payload_pickle(rng.randrange(len(po.PAYLOADS)), rng.choice((0, 2, 4)))
        )
    elif extra_kind == "garbage":
        extra = Node("raw", _rand(rng, 1, 64))
    else:
        extra = sample.root.clone()
    kids = [extra, sample.root] if rng.random() < 0.5 else [sample.root, extra]
    sample.root = Node("concat", children=kids)
    where = "before" if kids[0] is extra else "after"
    sample.note(f"{extra_kind} data {where} the file")
    return True


CONTAINER_MUTATORS: dict[str, tuple[Mutator, int]] = {
    "zip.member_field": (zip_member_field, 5),
    "zip.archive_field": (zip_archive_field, 5),
    "archive.dup_member": (archive_dup_member, 3),
    "archive.rename": (archive_rename, 2),
    "tar.field": (tar_field, 4),
    "comp.split": (comp_split, 4),
    "comp.trailing": (comp_trailing, 3),
    "comp.header": (comp_header, 3),
    "comp.wrap": (comp_wrap, 2),
    "comp.unwrap": (comp_unwrap, 1),
    "zf.header": (zf_header, 3),
    "npy.field": (npy_field, 5),
    "npy.to_object": (npy_to_object, 2),
    "joblib.wrapper": (joblib_wrapper, 5),
    "joblib.padding_ops": (joblib_padding_ops, 3),
    "raw.to_ops": (raw_to_ops, 3),
    "file.rename": (rename_file, 2),
    "file.surround": (surround, 2),
}
