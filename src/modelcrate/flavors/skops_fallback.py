"""skops: the fallback artifact for scikit-learn estimators that no ONNX converter handles.

Only estimators whose every type the scanner's allowlist admits are stored (skops itself trusts
scikit-learn; custom classes are refused with an error naming them). skops archives name their
members after ``id()`` of the saved objects and stamp them with the current time; both are
normalised so the same estimator gives the same bytes, and members are stored uncompressed with
fixed metadata so that those bytes do not depend on the zlib build or the operating system.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace
from typing import Any

from modelcrate.crate.signature import Signature
from modelcrate.crate.skops_trust import refused_types, skops_needs
from modelcrate.flavors.base import UnsupportedModelError
from modelcrate.runtime.skops_runtime import FRAME_KEY, TRUSTED_KEY
from modelcrate.scan.findings import Severity
from modelcrate.scan.pickle_globals import classify_global

__all__ = ["skops_artifact"]

_EPOCH = (1980, 1, 1, 0, 0, 0)


def skops_artifact(
    model: Any, signature: Signature, *, path: str, reason: str
) -> tuple[bytes, Signature]:
    """skops bytes of ``model`` and its signature, which names the types skops does not trust by
    default (informational: serving recomputes trust from the allowlist)."""
    name = type(model).__name__
    from modelcrate.flavors.sklearn import walk

    classes = sorted({f"{type(e).__module__}.{type(e).__qualname__}" for e in walk(model)})
    _refuse([c for c in classes if not _admitted(c)], name, reason, path)
    import skops.io as sio  # type: ignore[import-untyped, unused-ignore]

    try:
        data = normalize(sio.dumps(model))
        untrusted = sorted(sio.get_untrusted_types(data=data))
        needs = skops_needs(data, path=path)
    except Exception as exc:  # skops raises TypeError/ValueError/... for what it cannot store
        raise UnsupportedModelError(
            f"{name} is not supported: no ONNX converter handles it ({reason}) and skops "
            f"cannot store it ({type(exc).__name__}: {exc})",
            path=path,
            hint="use an estimator skl2onnx supports, or export the model to ONNX yourself",
        ) from exc
    # what serving will check (skops_runtime): every name the schema makes skops import
    _refuse([r.name for r in refused_types(needs)], name, reason, path)
    _refuse([t for t in untrusted if not _admitted(t)], name, reason, path)
    extra = dict(signature.extra)
    extra[TRUSTED_KEY] = json.dumps(untrusted)
    extra[FRAME_KEY] = "1" if hasattr(model, "feature_names_in_") else "0"
    extra["conversion"] = f"skops fallback: {reason}"
    return data, replace(signature, extra=extra)


def _refuse(refused: list[str], name: str, reason: str, path: str) -> None:
    if refused:
        raise UnsupportedModelError(
            f"{name} is not supported: no ONNX converter handles it ({reason}), and the skops "
            f"fallback would have to trust code outside the allowlist: {', '.join(refused)}",
            path=path,
            hint="use scikit-learn estimators only, or export the model to ONNX yourself",
        )


def _admitted(type_name: str) -> bool:
    module, _, name = type_name.rpartition(".")
    verdict = classify_global(module, name)
    return verdict.severity == Severity.INFO and verdict.category == "allowlisted"


def normalize(data: bytes) -> bytes:
    """Renumber ``__id__``s and array files in schema order; fixed timestamps and order."""
    src = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(src.read("schema.json"))
    ids: dict[int, int] = {}
    files: dict[str, str] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                if key == "__id__" and isinstance(value, int):
                    out[key] = ids.setdefault(value, len(ids) + 1)
                elif key == "file" and isinstance(value, str) and value in src.namelist():
                    suffix = value.rsplit(".", 1)[-1]
                    out[key] = files.setdefault(value, f"{len(files):06d}.{suffix}")
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    new_schema = walk(schema)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as dst:
        members = [("schema.json", json.dumps(new_schema, indent=2).encode())]
        members += sorted((new, src.read(old)) for old, new in files.items())
        unreferenced = set(src.namelist()) - set(files) - {"schema.json"}
        members += sorted((old, src.read(old)) for old in unreferenced)
        for member, payload in members:
            info = zipfile.ZipInfo(member, date_time=_EPOCH)
            # stored, not deflated: deflate's bytes depend on the zlib build (zlib, zlib-ng),
            # and the crate's version must not (exports and image layers compress anyway)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # the default is the OS that writes the file
            info.external_attr = 0o644 << 16
            dst.writestr(info, payload)
    return buffer.getvalue()
