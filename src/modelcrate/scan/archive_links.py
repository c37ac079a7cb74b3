"""Where archive members land when extracted: links resolved against the archive's own tree.

A lexical check of each link alone misses links that escape only together (``d -> .`` then
``d/e -> ..``), files written through a linked directory (``d -> /etc`` then ``d/cron.d/x``)
and hard links to an escaping symbolic link. :class:`LinkTree` replays the members in archive
order the way :mod:`tarfile` extracts them -- parent folders are created through links that
already exist, a regular file is opened through a link already at its path, a new link
replaces what was there -- and checks each member as ``tarfile.data_filter`` does: the
``realpath`` of its destination and of its link target (the target as stored and as
``data_filter`` normalises it) must stay inside the extraction folder. Unzip tools and py7zr
create links the same way, so the zip and 7z scanners use the same model.

Nothing is extracted: the tree is a dict of the paths the archive itself creates. Paths that
the archive does not create are taken as plain folders, as ``realpath`` does for missing ones.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Location, Severity

_DRIVE = re.compile(r"^[A-Za-z]:")
MAX_HOPS = 40  # links followed while resolving one path (Linux's SYMLOOP_MAX)


class _Budget(Exception):
    """The archive's resolution budget (``Limits.max_link_steps``) is spent."""


@dataclass(frozen=True)
class Resolved:
    """The end of a path walk: inside the root (``path``) or not, and the links it went through."""

    outside: bool
    path: str
    via: tuple[str, ...] = ()
    loop: bool = False


def _parts(path: str) -> list[str]:
    return path.replace("\\", "/").split("/")


def _absolute(path: str) -> bool:
    norm = path.replace("\\", "/")
    return norm.startswith("/") or bool(_DRIVE.match(norm))


@dataclass
class LinkTree:
    """The folders, files and links an archive creates, in extraction order."""

    max_steps: int
    links: dict[tuple[str, ...], str] = field(default_factory=dict)  # path -> link target
    steps: int = 0

    def resolve(self, start: tuple[str, ...], rel: str, *, follow_last: bool = True) -> Resolved:
        """Walk ``rel`` from the folder ``start`` as ``os.path.realpath`` would (non-strict)."""
        cur = list(start)
        todo = list(reversed(_parts(rel)))
        via: list[str] = []
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not cur:
                    rest = "/".join(reversed(todo))
                    return Resolved(True, posixpath.join("..", rest) if rest else "..", tuple(via))
                cur.pop()
                continue
            here = (*cur, part)
            target = self.links.get(here)
            last = all(p in ("", ".") for p in todo)
            if target is None or (last and not follow_last):
                cur.append(part)
                continue
            via.append(f"{'/'.join(here)} -> {target}")
            if len(via) > MAX_HOPS:
                return Resolved(False, "/".join(here), tuple(via), loop=True)
            if not target or _absolute(target):
                return Resolved(True, target or "(empty target)", tuple(via))
            added = _parts(target)
            self.steps += len(added)  # only link hops count: plain names cost their own length
            if self.steps > self.max_steps:
                raise _Budget
            todo.extend(reversed(added))
        return Resolved(False, "/".join(cur), tuple(via))

    def place(self, name: str) -> tuple[str, ...] | None:
        """Where a member called ``name`` is created: its folder resolved, its own name kept."""
        parts = [p for p in _parts(name) if p not in ("", ".")]
        if not parts or parts[-1] == "..":
            return None
        parent = self.resolve((), "/".join(parts[:-1]))
        if parent.outside or parent.loop:
            return None
        base = tuple(p for p in parent.path.split("/") if p)
        return (*base, parts[-1])


@dataclass
class LinkChecker:
    """Feeds an archive's members, in order, to a :class:`LinkTree` and reports escapes."""

    ctx: ScanContext
    loc: Location
    tree: LinkTree = field(init=False)
    exhausted: bool = False
    # symbolic links not reported as escaping yet: where they are -> (member, location)
    _inside: dict[tuple[str, ...], tuple[str, Location]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tree = LinkTree(self.ctx.limits.max_link_steps)

    def member(self, name: str, kind: str, mloc: Location, target: str = "") -> None:
        """One member: ``kind`` is ``file``, ``dir``, ``symlink`` or ``hardlink``."""
        from modelcrate.scan.zipscan import link_escapes, name_problem, report_link

        if self.exhausted:
            if kind in ("symlink", "hardlink"):
                lexical = (
                    link_escapes(name, target)
                    if kind == "symlink"
                    else name_problem(target) is not None
                )
                kind_name = "symbolic" if kind == "symlink" else "hard"
                report_link(self.ctx, mloc, target, escapes=lexical, kind=kind_name)
            return
        try:
            self._member(name, kind, mloc, target)
        except _Budget:
            self.exhausted = True
            self.ctx.limit(
                "links",
                f"resolving the archive's links took more than {self.tree.max_steps} steps; "
                "the links after this member were checked one by one only",
                mloc,
            )
            self.member(name, kind, mloc, target)

    def finish(self) -> None:
        """After the last member: report links that were inside when created but lead out of
        the finished tree (a later member turned a folder on their path into a link)."""
        if self.exhausted:
            return
        tree = self.tree
        try:
            for place, (_name, mloc) in self._inside.items():
                target = tree.links.get(place)
                if target is None:
                    continue
                res = tree.resolve(place[:-1], target)
                if res.outside:
                    self.ctx.add(
                        Severity.HIGH,
                        "archive.symlink",
                        f"member is a symbolic link to {target!r}, outside the extraction folder "
                        f"once the whole archive is extracted: it leads to {res.path!r}"
                        + (f", through {_chain(res.via)}" if res.via else ""),
                        mloc,
                        why="a member extracted after this link changed where it points; "
                        "reading or writing through it reaches files outside the target folder",
                        symbol=target,
                    )
        except _Budget:
            self.ctx.limit(
                "links",
                f"resolving the archive's links took more than {tree.max_steps} steps; the final "
                "check of its links was not completed",
                self.loc,
            )

    def _member(self, name: str, kind: str, mloc: Location, target: str) -> None:
        from modelcrate.scan.zipscan import link_escapes, name_problem, report_link

        tree = self.tree
        if kind in ("file", "dir") and not tree.links:
            return  # no link yet: nothing can redirect it (its name is checked by the scanner)
        if name_problem(name) is None:
            dest = tree.resolve((), name)
            if dest.outside:
                self.ctx.add(
                    Severity.HIGH,
                    "archive.path-traversal",
                    f"member {name!r} is extracted outside the extraction folder, to "
                    f"{dest.path!r}, through {_chain(dest.via)}",
                    mloc,
                    why="an earlier link in the archive redirects this member: extracting it "
                    "writes outside the target folder",
                    symbol=name,
                )
        place = tree.place(name)
        if kind in ("symlink", "hardlink"):
            if kind == "symlink":
                lexical = link_escapes(name, target)
                start = place[:-1] if place is not None else ()
                stored = tree.resolve(start, target)
                normed = tree.resolve(start, posixpath.normpath(target.replace("\\", "/")))
            else:
                lexical = name_problem(target) is not None
                stored = normed = tree.resolve((), target)
            escape = next((r for r in (stored, normed) if r.outside), None)
            detail = ""
            if escape is not None and not lexical:
                detail = f": it leads to {escape.path!r}"
                if kind == "symlink" and place is not None and place[:-1] != _lexical_parent(name):
                    detail += f" from the folder {'/'.join(place[:-1]) or '.'!r} it is created in"
                if escape.via:
                    detail += f", through {_chain(escape.via)}"
            elif escape is None and stored.loop:
                detail = " (a link loop: it resolves nowhere)"
            report_link(
                self.ctx,
                mloc,
                target,
                escapes=lexical or escape is not None,
                kind="symbolic" if kind == "symlink" else "hard",
                detail=detail,
            )
            if place is not None:
                self._inside.pop(place, None)
                if kind == "symlink":
                    tree.links[place] = target
                    if not lexical and escape is None:
                        self._inside[place] = (name, mloc)
                else:
                    tree.links.pop(place, None)  # a hard link is a file of its own
        # A file opened at a link's path writes through it, and mkdir on a link keeps the link:
        # either way the tree is unchanged, and later members still go through the link.


def _lexical_parent(name: str) -> tuple[str, ...]:
    return tuple(p for p in _parts(name)[:-1] if p not in ("", "."))


def _chain(via: tuple[str, ...]) -> str:
    shown = list(via[:4]) + (["..."] if len(via) > 4 else [])
    return ", ".join(repr(v) for v in shown)
