"""The packages a ``requirements.lock`` pins: name, version, hashes, and who needs them.

The lock is written by ``uv pip compile --generate-hashes`` (see :mod:`.lockfile`)::

    anyio==4.16.0 \\
        --hash=sha256:59bb... \\
        --hash=sha256:c66a...
        # via
        #   fastapi
        #   starlette

Each block starts at a line in column 0 and runs through the indented lines below it (the
continued requirement, its ``--hash`` options and the ``# via`` comment). ``via -r FILE`` marks
a direct requirement; ``via -c FILE`` (a constraint) names no package and is ignored. The parser
keeps each block's exact text, so a block can be swapped for another (the GPU variant replaces
``onnxruntime`` with ``onnxruntime-gpu``) without touching the rest of the lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["LockedPackage", "canonical_name", "parse_lock"]

_PIN_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*"
    r"(?:\[(?P<extras>[^\]]*)\])?\s*===?\s*(?P<version>[^\s;\\]+)\s*(?:;\s*(?P<marker>.*))?$"
)
_HASH_RE = re.compile(r"--hash[=\s]+(sha256|sha384|sha512):([0-9a-fA-F]+)")
_HASH_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True)
class LockedPackage:
    """One pinned requirement of a lock."""

    name: str
    version: str
    hashes: tuple[tuple[str, str], ...]  # (algorithm, lowercase hex), sorted
    extras: tuple[str, ...] = ()
    marker: str | None = None
    required_by: tuple[str, ...] = ()  # canonical names of the locked packages needing it
    direct: bool = False  # a requirement of the crate itself (``via -r requirements.in``)
    text: str = ""  # the block as written in the lock, ending with a newline
    pin: str = ""  # the block's requirement and hash lines, without the ``# via`` comment

    @property
    def key(self) -> str:
        """The normalised name (PEP 503): what pip compares."""
        return canonical_name(self.name)

    @property
    def purl(self) -> str:
        """The package URL, ``pkg:pypi/NAME@VERSION`` (purl's PyPI rules: lowercase, ``-``)."""
        return f"pkg:pypi/{quote(self.key, safe='')}@{quote(self.version, safe='')}"


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(data: bytes) -> tuple[LockedPackage, ...]:
    """Every package pinned in ``data``, in the lock's order.

    Raises ValueError naming the line for anything that is not a pinned requirement (a URL,
    an editable, an unpinned name): a crate's lock pins everything.
    """
    text = data.decode("utf-8")
    return tuple(_package(start, block) for start, block in _blocks(text))


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each requirement block; top-level comments and blank
    lines end a block, and lines of global options (``--index-url``) are skipped."""
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] | None = None
    continued = False
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.strip()
        indented = line[:1] in (" ", "\t")
        if current is not None and (indented or continued) and stripped:
            current.append(line)
        elif not stripped or stripped.startswith("#") or stripped.startswith("-"):
            current = None
        else:
            current = [line]
            blocks.append((number, current))
        continued = current is not None and stripped.endswith("\\")
    return blocks


def _package(number: int, lines: list[str]) -> LockedPackage:
    logical: list[str] = []
    pin_lines: list[str] = []
    comments: list[str] = []
    in_requirement = True
    for line in lines:
        stripped = line.strip()
        if in_requirement and not stripped.startswith("#"):
            pin_lines.append(line)
            logical.append(stripped.removesuffix("\\").strip())
            in_requirement = stripped.endswith("\\")
        elif stripped.startswith("#"):
            comments.append(stripped.lstrip("#").strip())
    joined = " ".join(part for part in logical if part)
    requirement = joined.split(" --", 1)[0].strip()
    match = _PIN_RE.match(requirement)
    if match is None:
        raise ValueError(f"line {number}: {requirement!r} is not a pinned requirement (NAME==VER)")
    hashes = []
    for alg, digest in _HASH_RE.findall(joined):
        if len(digest) != _HASH_LEN[alg]:
            raise ValueError(f"line {number}: a {alg} hash of the wrong length")
        hashes.append((alg, digest.lower()))
    extras = tuple(
        sorted(e.strip().lower() for e in (match["extras"] or "").split(",") if e.strip())
    )
    parents, direct = _via(comments)
    return LockedPackage(
        name=match["name"],
        version=match["version"],
        hashes=tuple(sorted(set(hashes))),
        extras=extras,
        marker=(match["marker"] or "").strip() or None,
        required_by=parents,
        direct=direct,
        text=_ended("".join(lines)),
        pin=_ended("".join(pin_lines)),
    )


def _ended(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _via(comments: list[str]) -> tuple[tuple[str, ...], bool]:
    """The parents named by ``# via`` comments, and whether ``-r`` (direct) is among them."""
    names: list[str] = []
    collecting = False
    for comment in comments:
        if comment == "via":
            collecting = True
            continue
        if comment.startswith("via "):
            collecting = True
            comment = comment.removeprefix("via ").strip()
        if collecting and comment:
            names.append(comment)
    direct = any(n.startswith("-r ") for n in names)
    parents = sorted({canonical_name(n.split("[")[0]) for n in names if not n.startswith("-")})
    return tuple(parents), direct
