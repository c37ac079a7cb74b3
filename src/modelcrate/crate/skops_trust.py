"""What a skops archive needs, judged by the project's allowlist (never by the artifact).

skops rebuilds objects from ``schema.json``: every node names the type, function or bound
method it imports (``__module__`` + ``__class__``, a method name, a NumPy bit generator name).
:func:`skops_needs` reads that JSON, without importing or constructing anything, and lists every
name the file would make skops import; :func:`refused_types` keeps those the scanner's allowlist
(:func:`modelcrate.scan.pickle_globals.classify_global`) does not admit. A trust list written
inside the crate (``signature.extra["skops.trusted"]``, from the build) is informational only:
it is checked against the allowlist too, and never widens what is loaded.

skops' own :func:`skops.io.get_untrusted_types` only reports what skops does not trust by
default; skops trusts ``builtins.map`` and every ``scipy.special`` ufunc by default, for
instance, which the allowlist does not admit. Hence the walk over the schema.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelcrate.errors import InputError

if TYPE_CHECKING:
    from modelcrate.scan.findings import Severity

__all__ = [
    "MAX_SCHEMA_BYTES",
    "TRUSTED_KEY",
    "RefusedType",
    "UntrustedSkopsTypes",
    "check_skops_trust",
    "claimed_needs",
    "is_skops",
    "refused_types",
    "skops_needs",
]

TRUSTED_KEY = "skops.trusted"  # signature.extra: the build's list (informational, never trusted)
SCHEMA = "schema.json"
MAX_SCHEMA_BYTES = 64 * 1024 * 1024  # a 500-tree forest has 7 MiB of schema
# skops' RandomGeneratorNode imports ``numpy.random.<name>``; these are the bit generators NumPy
# has, under the names their pickles (and the allowlist) use. Any other name is refused.
_BIT_GENERATORS = {
    "MT19937": "numpy.random._mt19937",
    "PCG64": "numpy.random._pcg64",
    "PCG64DXSM": "numpy.random._pcg64",
    "Philox": "numpy.random._philox",
    "SFC64": "numpy.random._sfc64",
}
_MALFORMED = "?"


@dataclass(frozen=True)
class RefusedType:
    """A name a skops archive needs that the allowlist does not admit, and why."""

    name: str
    severity: Severity  # HIGH for unknown names, CRITICAL for dangerous ones
    reason: str


class UntrustedSkopsTypes(InputError):
    """A skops archive needs (or its crate claims trust for) names outside the allowlist."""

    code = "untrusted-types"

    def __init__(
        self,
        message: str,
        *,
        refused: tuple[RefusedType, ...],
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, path=path, hint=hint)
        self.refused = refused


def is_skops(data: bytes) -> bool:
    """A zip archive with a ``schema.json`` member (what skops writes)."""
    if not data.startswith(b"PK"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return SCHEMA in zf.namelist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return False


def skops_needs(data: bytes, *, path: str) -> list[tuple[str, str]]:
    """Every ``(module, name)`` the archive makes skops import, sorted; a malformed node gives
    ``("?", <what is wrong>)``. Reads JSON only: nothing is imported or constructed."""
    schema = _schema(data, path)
    found: set[tuple[str, str]] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        if not ({"__class__", "__module__", "__loader__"} & node.keys()):
            continue
        module, cls = node.get("__module__"), node.get("__class__")
        if not isinstance(module, str) or not isinstance(cls, str) or not module or not cls:
            found.add((_MALFORMED, f"a node without a plain __module__/__class__: {_short(node)}"))
            continue
        found.add((module, cls))
        loader = node.get("__loader__")
        if loader == "MethodNode":
            content = node.get("content")
            func = content.get("func") if isinstance(content, dict) else None
            if isinstance(func, str) and func:
                found.add((module, f"{cls}.{func}"))
            else:
                found.add((_MALFORMED, f"a bound method without a name: {_short(node)}"))
        elif loader == "RandomGeneratorNode":
            found.add(_bit_generator(node))
    return sorted(found)


def refused_types(needs: Iterable[tuple[str, str]]) -> list[RefusedType]:
    """Those of ``needs`` that the allowlist does not admit (INFO and allowlisted, as build)."""
    from modelcrate.scan.findings import Severity
    from modelcrate.scan.pickle_globals import classify_global

    out: list[RefusedType] = []
    for module, name in needs:
        if module == _MALFORMED:
            out.append(RefusedType(f"malformed schema: {name}", Severity.HIGH, "malformed"))
            continue
        verdict = classify_global(module, name)
        if verdict.severity != Severity.INFO or verdict.category != "allowlisted":
            out.append(RefusedType(f"{module}.{name}", verdict.severity, verdict.reason))
    return out


def check_skops_trust(data: bytes, *, path: str, claimed: str | None = None) -> list[str]:
    """The names to pass skops as trusted: everything the archive needs, each admitted by the
    allowlist. Raises :class:`UntrustedSkopsTypes` when the archive needs anything else, or when
    ``claimed`` (the crate's own trust list, a JSON list) names anything else."""
    from modelcrate.scan.findings import Severity

    needs = skops_needs(data, path=path)
    refused = refused_types(needs)
    what = "needs"
    if not refused and claimed is not None:
        refused = refused_types(claimed_needs(claimed, path=path))
        what = "claims trust for"
    if refused:
        worst = max(r.severity for r in refused)
        names = ", ".join(r.name for r in refused[:10])
        more = f" (and {len(refused) - 10} more)" if len(refused) > 10 else ""
        raise UntrustedSkopsTypes(
            f"the skops model {what} types outside modelcrate's allowlist: {names}{more}",
            refused=tuple(sorted(refused, key=lambda r: (-r.severity, r.name))),
            path=path,
            hint="modelcrate trusts only what its allowlist admits, never a list shipped in the "
            "crate; rebuild the crate from the original model with 'modelcrate build'"
            + (" (this one looks forged)" if worst == max(Severity) else ""),
        )
    return sorted({f"{m}.{n}" for m, n in needs})


def _schema(data: bytes, path: str) -> Any:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            info = zf.getinfo(SCHEMA)
            if info.file_size > MAX_SCHEMA_BYTES:
                raise ValueError(f"schema.json declares {info.file_size} bytes")
            with zf.open(info) as fh:
                raw = fh.read(MAX_SCHEMA_BYTES + 1)
        if len(raw) > MAX_SCHEMA_BYTES:
            raise ValueError(f"schema.json is larger than {MAX_SCHEMA_BYTES} bytes")
        return json.loads(raw)
    except KeyError as exc:
        raise _unreadable(path, "it has no schema.json") from exc
    except RecursionError as exc:
        raise _unreadable(path, "schema.json is nested too deeply") from exc
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise _unreadable(path, str(exc)) from exc


def _unreadable(path: str, detail: str) -> InputError:
    return InputError(
        f"not a readable skops archive: {detail}",
        path=path,
        hint="rebuild the crate from the original model with 'modelcrate build'",
    )


def _bit_generator(node: dict[str, Any]) -> tuple[str, str]:
    """The ``numpy.random`` attribute skops' RandomGeneratorNode imports for this node."""
    try:
        state = node["content"]["bit_generator"]["content"]["bit_generator"]
        name = json.loads(state["content"])
    except (KeyError, TypeError, ValueError, RecursionError):
        return (_MALFORMED, f"a random generator without a bit generator name: {_short(node)}")
    if not isinstance(name, str):
        return (_MALFORMED, f"a random generator whose bit generator is {name!r}")
    return (_BIT_GENERATORS.get(name, "numpy.random"), name)


def claimed_needs(claimed: str, *, path: str) -> list[tuple[str, str]]:
    """The ``(module, name)`` pairs of a crate's own trust list (a JSON list of dotted names)."""
    return sorted({_split(n) for n in _claimed(claimed, path)})


def _claimed(claimed: str, path: str) -> list[str]:
    try:
        names = json.loads(claimed)
    except (ValueError, RecursionError):
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(
            "the crate's skops trust list is not a JSON list of names",
            path=path,
            hint="rebuild the crate from the original model with 'modelcrate build'",
        )
    return names


def _split(name: str) -> tuple[str, str]:
    module, _, attr = name.rpartition(".")
    return (module, attr) if module else (_MALFORMED, f"the bare name {name!r}")


def _short(node: dict[str, Any]) -> str:
    text = json.dumps({k: node[k] for k in sorted(node) if k != "content"}, default=str)
    return text if len(text) <= 120 else text[:117] + "..."
