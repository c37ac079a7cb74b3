"""``SOURCE_DATE_EPOCH``: the one clock of reproducible outputs (crates, exports, images)."""

from __future__ import annotations

import os

from modelcrate.errors import InputError


def source_date_epoch(default: int = 0) -> int:
    """``SOURCE_DATE_EPOCH`` as an int (``default`` when unset); a bad value is an input error."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise InputError(
            f"SOURCE_DATE_EPOCH={raw!r} is not a non-negative integer",
            hint="set it to seconds since 1970-01-01 (e.g. `git log -1 --format=%ct`) or unset it",
        )
    return value
