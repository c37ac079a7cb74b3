"""Crates: the manifest, the build pipeline, the local store and crate archives.

Modules: :mod:`.signature` (the API contract), :mod:`.manifest` (``crate.yaml``), :mod:`.build`,
:mod:`.store`, :mod:`.lockfile`, :mod:`.layout` (crate files and their verification),
:mod:`.archive` (export/import), :mod:`.gate` (the scan gate of imports), :mod:`.skops_trust`
(what a skops model may import, by the allowlist), :mod:`.errors`. Nothing is imported here, so
reading a signature never pulls in Pydantic or the build stack; the names below load on first
use.
The build function is ``modelcrate.crate.build.build`` (the submodule shares its name).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "BuiltCrate": "modelcrate.crate.build",
    "Manifest": "modelcrate.crate.manifest",
    "Signature": "modelcrate.crate.signature",
    "Store": "modelcrate.crate.store",
    "load_manifest": "modelcrate.crate.manifest",
    "verify_crate": "modelcrate.crate.layout",
}

__all__ = ["BuiltCrate", "Manifest", "Signature", "Store", "load_manifest", "verify_crate"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelcrate.crate' has no attribute {name!r}")
    return getattr(import_module(module), name)
