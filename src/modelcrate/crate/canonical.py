"""What a crate's identity rests on, without Pydantic: the manifest's file name, the name rule,
the canonical JSON its version digest is taken over, and which fields stay out of it."""

from __future__ import annotations

import json
import re

MANIFEST_NAME = "crate.yaml"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
NOT_IN_DIGEST = frozenset({"version", "created"})


def canonical_json(data: object) -> bytes:
    """Compact JSON, sorted keys, UTF-8, no NaN: the exact bytes a version digest hashes."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
