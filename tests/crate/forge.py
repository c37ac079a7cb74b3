"""Forged crate archives: what an attacker who can write a tar (but not this code) makes.

Every forgery is *self-consistent*: crate.yaml lists the forged files with their real sizes and
sha256, its version is the digest of its content, signature.json and the SBOM agree with it.
Only checks that do not take the crate's word for anything can refuse them.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from modelcrate.crate.canonical import MANIFEST_NAME
from modelcrate.crate.layout import LOCK_FILE, SBOM_FILE, SIGNATURE_FILE, crate_files
from modelcrate.crate.manifest import Manifest, load_manifest
from modelcrate.crate.sbom import sbom_json
from modelcrate.runtime.skops_runtime import TRUSTED_KEY

Extra = tuple[tarfile.TarInfo, bytes | None]


def crate_contents(crate_dir: Path) -> tuple[Manifest, dict[str, bytes]]:
    manifest = load_manifest(crate_dir)
    return manifest, {
        rel: (crate_dir / rel).read_bytes() for rel in crate_files(manifest, crate_dir)
    }


def forge(
    crate_dir: Path,
    out: Path,
    *,
    model: dict[str, bytes] | None = None,
    trust: list[str] | None = None,
    declared: dict[str, int] | None = None,
    extra: Iterable[Extra] = (),
) -> Path:
    """A tar of the crate at ``crate_dir`` with ``model`` files replaced (crate.yaml updated to
    match), the skops trust list set to ``trust``, artifact sizes declared as ``declared`` (the
    sha256 still of the real bytes), and ``extra`` members appended."""
    manifest, files = crate_contents(crate_dir)
    files.update(model or {})
    artifacts = [
        a.model_copy(
            update={
                "sha256": hashlib.sha256(files[a.path]).hexdigest(),
                "size": (declared or {}).get(a.path, len(files[a.path])),
            }
        )
        for a in manifest.artifacts
    ]
    signature: dict[str, Any] = json.loads(json.dumps(manifest.signature))
    if trust is not None:
        signature["extra"][TRUSTED_KEY] = json.dumps(sorted(trust))
    forged = manifest.model_copy(update={"artifacts": artifacts, "signature": signature})
    forged = forged.with_version()
    files[MANIFEST_NAME] = forged.dump_yaml()
    files[SIGNATURE_FILE] = (
        json.dumps(forged.signature, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"
    )
    files[SBOM_FILE] = sbom_json(forged, files[LOCK_FILE])
    return write_tar(out, files, extra=extra)


def write_tar(out: Path, files: dict[str, bytes], *, extra: Iterable[Extra] = ()) -> Path:
    dirs = {"/".join(f.split("/")[:i]) for f in files for i in range(1, f.count("/") + 1)}
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(dirs):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            if data is None:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out


def member(name: str, data: bytes | None = b"payload", kind: bytes = tarfile.REGTYPE) -> Extra:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, data


def edit_skops(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The skops archive ``data`` with its schema.json edited in place by ``edit``."""
    src = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(src.read("schema.json"))
    edit(schema)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            payload = json.dumps(schema).encode() if name == "schema.json" else src.read(name)
            dst.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), payload)
    return buffer.getvalue()


def estimator_attrs(schema: dict[str, Any]) -> dict[str, Any]:
    """The attribute nodes of the top-level estimator (its ``__dict__``)."""
    attrs: dict[str, Any] = schema["content"]["content"]
    return attrs


def node(module: str, name: str, loader: str = "FunctionNode", **more: Any) -> dict[str, Any]:
    return {"__class__": name, "__module__": module, "__loader__": loader, **more}


RAN: list[object] = []


class Gadget:
    """A class outside the allowlist whose loading runs code (skops calls ``__setstate__``)."""

    def __setstate__(self, state: object) -> None:
        RAN.append(state)


def object_node(module: str, name: str) -> dict[str, Any]:
    """A skops ObjectNode of ``module.name`` with an empty ``__dict__``."""
    empty_dict = {
        "__class__": "dict",
        "__module__": "builtins",
        "__loader__": "DictNode",
        "content": {"hit": {"__class__": "str", "__module__": "builtins",
                            "__loader__": "JsonNode", "content": "true", "is_json": True}},
        "key_types": {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
                      "content": [{"__class__": "str", "__module__": "builtins",
                                   "__loader__": "TypeNode"}]},
    }  # fmt: skip
    return node(module, name, "ObjectNode", content=empty_dict)
