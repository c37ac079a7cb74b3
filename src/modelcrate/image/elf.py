"""A small ELF reader: the dynamic section of a shared object, on the standard library only.

What the dynamic loader reads to load a library: ``DT_NEEDED`` (the libraries it links),
``DT_SONAME`` (the name others link it by) and ``DT_RPATH``/``DT_RUNPATH`` (extra folders,
``$ORIGIN`` relative). All four ELF kinds are read (32/64-bit, little/big-endian); the machine
and class are reported so a caller can tell files for another platform apart.

Nothing here loads or runs the file: it is bytes in, names out. Every offset is checked against
the file's length, so a truncated or hostile file raises :class:`ElfError`, never anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

MAGIC: Final = b"\x7fELF"
EM_386: Final = 3
EM_ARM: Final = 40
EM_X86_64: Final = 62
EM_AARCH64: Final = 183
MACHINES: Final = {
    EM_386: "i386",
    EM_ARM: "arm",
    EM_X86_64: "x86-64",
    EM_AARCH64: "aarch64",
    8: "mips",
    20: "ppc",
    21: "ppc64",
    22: "s390",
    243: "riscv",
}
PT_LOAD: Final = 1
PT_DYNAMIC: Final = 2
DT_NULL: Final = 0
DT_NEEDED: Final = 1
DT_STRTAB: Final = 5
DT_STRSZ: Final = 10
DT_SONAME: Final = 14
DT_RPATH: Final = 15
DT_RUNPATH: Final = 29
PN_XNUM: Final = 0xFFFF
MAX_NAME: Final = 4096


class ElfError(ValueError):
    """The bytes start like ELF but cannot be read as one (truncated, inconsistent)."""


@dataclass(frozen=True)
class ElfInfo:
    """The dynamic-linking facts of one ELF file."""

    bits: int  # 32 or 64
    little_endian: bool
    machine: int  # e_machine (EM_X86_64, EM_AARCH64, ...)
    needed: tuple[str, ...]  # DT_NEEDED, in order
    soname: str | None
    rpath: tuple[str, ...]  # DT_RUNPATH entries, else DT_RPATH's, as written ($ORIGIN kept)
    dynamic: bool  # has a PT_DYNAMIC segment (False: statically linked, needs nothing)

    @property
    def kind(self) -> str:
        """E.g. ``ELF 64-bit LSB x86-64``."""
        machine = MACHINES.get(self.machine, f"machine {self.machine}")
        return f"ELF {self.bits}-bit {'LSB' if self.little_endian else 'MSB'} {machine}"


def is_elf(data: bytes) -> bool:
    return data[:4] == MAGIC


def read_elf(data: bytes) -> ElfInfo:
    """The dynamic section of the ELF file ``data``; :class:`ElfError` if it is not readable."""
    if len(data) < 16 or data[:4] != MAGIC:
        raise ElfError("not an ELF file")
    ei_class, ei_data = data[4], data[5]
    if ei_class not in (1, 2) or ei_data not in (1, 2):
        raise ElfError(f"unknown ELF class {ei_class} or data encoding {ei_data}")
    r = _Reader(data, bits=32 * ei_class, little=ei_data == 1)
    fields = r.unpack("HHIQQQIHHHHHH" if r.bits == 64 else "HHIIIIIHHHHHH", 16)
    _type, machine, _version, _entry, phoff, shoff = fields[:6]
    phentsize, phnum, shentsize = fields[8], fields[9], fields[10]
    if phnum == PN_XNUM:  # the real count is in section header 0's sh_info
        if shoff == 0:
            raise ElfError("e_phnum is PN_XNUM but there is no section header")
        phnum = r.unpack("I", shoff + (44 if r.bits == 64 else 28))[0]
        if shentsize < (64 if r.bits == 64 else 40):
            raise ElfError(f"section header entries of {shentsize} bytes are too small")
    want = 56 if r.bits == 64 else 32
    if phnum and phentsize < want:
        raise ElfError(f"program header entries of {phentsize} bytes are too small")
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None  # (offset, filesz)
    for i in range(phnum):
        at = phoff + i * phentsize
        if r.bits == 64:
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = r.unpack("IIQQQQ", at)
        else:
            p_type, p_offset, p_vaddr, _paddr, p_filesz = r.unpack("IIIII", at)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC and dynamic is None:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return ElfInfo(r.bits, r.little, machine, (), None, (), False)
    entries = _dynamic_entries(r, *dynamic)
    strtab = next((v for tag, v in entries if tag == DT_STRTAB), None)
    strsz = next((v for tag, v in entries if tag == DT_STRSZ), None)
    names = [(tag, v) for tag, v in entries if tag in (DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH)]
    if not names:
        return ElfInfo(r.bits, r.little, machine, (), None, (), True)
    if strtab is None:
        raise ElfError("the dynamic section names libraries but has no DT_STRTAB")
    start = _file_offset(loads, strtab)
    end = len(data) if strsz is None else min(len(data), start + strsz)

    def string(offset: int) -> str:
        at = start + offset
        if offset < 0 or at >= end:
            raise ElfError(f"a dynamic string at {offset} is outside the string table")
        stop = data.find(b"\0", at, min(end, at + MAX_NAME))
        if stop < 0:
            raise ElfError(f"a dynamic string at {offset} is not terminated")
        return data[at:stop].decode("utf-8", "replace")

    needed = tuple(string(v) for tag, v in names if tag == DT_NEEDED)
    soname = next((string(v) for tag, v in names if tag == DT_SONAME), None)
    runpath = [string(v) for tag, v in names if tag == DT_RUNPATH]
    rpath = runpath or [string(v) for tag, v in names if tag == DT_RPATH]
    dirs = tuple(d for one in rpath for d in one.split(":") if d)
    return ElfInfo(r.bits, r.little, machine, needed, soname, dirs, True)


class _Reader:
    def __init__(self, data: bytes, *, bits: int, little: bool) -> None:
        self.data = data
        self.bits = bits
        self.little = little
        self._prefix = "<" if little else ">"

    def unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        s = struct.Struct(self._prefix + fmt)
        if offset < 0 or offset + s.size > len(self.data):
            raise ElfError(f"truncated: {s.size} bytes wanted at offset {offset}")
        values: tuple[int, ...] = s.unpack_from(self.data, offset)
        return values


def _dynamic_entries(r: _Reader, offset: int, size: int) -> list[tuple[int, int]]:
    fmt, step = ("qQ", 16) if r.bits == 64 else ("iI", 8)
    out: list[tuple[int, int]] = []
    for at in range(offset, offset + size - step + 1, step):
        tag, value = r.unpack(fmt, at)
        if tag == DT_NULL:
            return out
        out.append((tag, value))
    return out  # no DT_NULL: the segment's end bounds it


def _file_offset(loads: list[tuple[int, int, int]], vaddr: int) -> int:
    """The file offset of the virtual address ``vaddr`` (through the PT_LOAD segments)."""
    for seg_vaddr, seg_offset, filesz in loads:
        if seg_vaddr <= vaddr < seg_vaddr + filesz:
            return seg_offset + (vaddr - seg_vaddr)
    if not loads:  # some tools leave unmapped objects: addresses are then offsets
        return vaddr
    raise ElfError(f"DT_STRTAB address {vaddr:#x} is in no loaded segment")
