"""Which crate a command means: ``NAME[:VERSION]`` in the store, or a crate folder."""

from __future__ import annotations

import os
from pathlib import Path

from modelcrate.errors import InputError


def resolve_crate(ref: str, store: Path | None = None) -> Path:
    """The crate folder meant by ``ref``: a folder holding ``crate.yaml``, a path (which must
    be a crate folder), or ``NAME[:VERSION]`` looked up in the store."""
    candidate = Path(ref).expanduser()
    if (candidate / "crate.yaml").is_file():
        return candidate
    if "/" in ref or os.sep in ref or ref.startswith(".") or candidate.is_absolute():
        if not candidate.exists():
            raise InputError(
                "no such crate folder",
                path=ref,
                hint="pass a folder made by 'modelcrate build', or NAME[:VERSION] from the store",
            )
        raise InputError(
            "not a crate: crate.yaml is missing",
            path=str(candidate / "crate.yaml"),
            hint="pass a folder made by 'modelcrate build', or NAME[:VERSION] from the store",
        )
    from modelcrate.crate.store import Store

    return Store.default(store).resolve(ref)
