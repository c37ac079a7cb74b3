"""Synthetic ELF shared objects for the library-check tests (no compiler needed).

:func:`shared_object` writes a minimal but well-formed ELF file: the header, a ``PT_LOAD``
segment mapping the whole file at ``vaddr``, a ``PT_DYNAMIC`` segment, a string table and the
dynamic entries (``DT_NEEDED`` / ``DT_SONAME`` / ``DT_RUNPATH`` / ``DT_STRTAB`` / ``DT_STRSZ``).
``readelf -d`` reads them as it reads a real library; any of the four ELF kinds can be made.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from modelcrate.image.elf import (
    DT_NEEDED,
    DT_RUNPATH,
    DT_SONAME,
    DT_STRSZ,
    DT_STRTAB,
    EM_X86_64,
    PT_DYNAMIC,
    PT_LOAD,
)

ET_DYN = 3


def shared_object(
    needed: Sequence[str] = ("libc.so.6",),
    *,
    soname: str | None = None,
    runpath: str | None = None,
    bits: int = 64,
    little: bool = True,
    machine: int = EM_X86_64,
    vaddr: int = 0x10000,
    dynamic: bool = True,
    strtab_shift: int = 0,
) -> bytes:
    """An ELF shared object linking ``needed``. ``strtab_shift`` moves DT_STRTAB's address by
    that many bytes (a hostile or broken file); ``dynamic=False`` makes a static object."""
    e = "<" if little else ">"
    ehsize, phentsize = (64, 56) if bits == 64 else (52, 32)
    phnum = 2 if dynamic else 1
    strings = bytearray(b"\0")

    def add(text: str) -> int:
        at = len(strings)
        strings.extend(text.encode() + b"\0")
        return at

    entries = [(DT_NEEDED, add(n)) for n in needed]
    if soname is not None:
        entries.append((DT_SONAME, add(soname)))
    if runpath is not None:
        entries.append((DT_RUNPATH, add(runpath)))
    str_off = ehsize + phnum * phentsize
    dyn_off = str_off + len(strings)
    dyn_off += -dyn_off % 8
    entries += [(DT_STRTAB, vaddr + str_off + strtab_shift), (DT_STRSZ, len(strings)), (0, 0)]
    dyn_fmt = e + ("qQ" if bits == 64 else "iI")
    dyn = b"".join(struct.pack(dyn_fmt, tag, value) for tag, value in entries)
    total = dyn_off + len(dyn)

    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1 if little else 2, 1]) + bytes(9)
    if bits == 64:
        header = struct.pack(
            e + "HHIQQQIHHHHHH", ET_DYN, machine, 1, 0, ehsize, 0, 0, ehsize, phentsize, phnum,
            64, 0, 0,
        )  # fmt: skip
    else:
        header = struct.pack(
            e + "HHIIIIIHHHHHH", ET_DYN, machine, 1, 0, ehsize, 0, 0, ehsize, phentsize, phnum,
            40, 0, 0,
        )  # fmt: skip

    def phdr(p_type: int, offset: int, addr: int, size: int) -> bytes:
        if bits == 64:
            return struct.pack(e + "IIQQQQQQ", p_type, 6, offset, addr, addr, size, size, 8)
        return struct.pack(e + "IIIIIIII", p_type, offset, addr, addr, size, size, 6, 8)

    phdrs = phdr(PT_LOAD, 0, vaddr, total)
    if dynamic:
        phdrs += phdr(PT_DYNAMIC, dyn_off, vaddr + dyn_off, len(dyn))
    out = bytearray(ident + header + phdrs)
    out.extend(strings)
    out.extend(bytes(dyn_off - len(out)))
    out.extend(dyn)
    return bytes(out)
