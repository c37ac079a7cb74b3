"""What a crate folder holds, how its side files are written, and how it is verified.

::

    crate.yaml          the manifest (its version is the digest of its content)
    model/...           the safe-format artifacts listed in the manifest, with their sha256
    requirements.lock   runtime dependencies (its sha256 is the manifest's lock_sha256)
    scan.json           the full scan report (its verdict and counts are in the manifest)
    signature.json      the signature (equal to the manifest's)
    sbom.cdx.json       CycloneDX SBOM of the artifacts and locked packages (derived from the
                        manifest and the lock; crates made before SBOMs existed lack it)
"""

from __future__ import annotations

import hashlib
import json
import stat
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, cast, overload

from modelcrate.crate.canonical import MANIFEST_NAME
from modelcrate.crate.errors import IntegrityError

if TYPE_CHECKING:
    from modelcrate.crate.manifest import Manifest
    from modelcrate.crate.manifest_view import ManifestView
    from modelcrate.scan import FileReport

LOCK_FILE = "requirements.lock"
SCAN_FILE = "scan.json"
SIGNATURE_FILE = "signature.json"
SBOM_FILE = "sbom.cdx.json"
SIDE_FILES = (MANIFEST_NAME, LOCK_FILE, SBOM_FILE, SCAN_FILE, SIGNATURE_FILE)
MODEL_DIR = "model"


def crate_files(manifest: Manifest, crate_dir: Path | None = None) -> list[str]:
    """Every file of the crate, relative, sorted: exactly what an export carries. With
    ``crate_dir``, an SBOM the crate lacks (made before SBOMs existed) is left out."""
    files = sorted([*SIDE_FILES, *(a.path for a in manifest.artifacts)])
    if crate_dir is not None and not (Path(crate_dir) / SBOM_FILE).is_file():
        files.remove(SBOM_FILE)
    return files


def signature_json(manifest: Manifest) -> bytes:
    return (
        json.dumps(manifest.signature, indent=2, sort_keys=True, ensure_ascii=False).encode()
        + b"\n"
    )


def relocated(report: FileReport, path: str, *, seconds: float | None = None) -> FileReport:
    """``report`` with every path replaced by ``path`` (the scan ran on a private copy)."""
    return replace(
        report,
        path=path,
        seconds=report.seconds if seconds is None else seconds,
        findings=[replace(f, location=replace(f.location, path=path)) for f in report.findings],
    )


def scan_json(report: FileReport, *, source_name: str, fail_on: str) -> bytes:
    """The ``modelcrate scan --format json`` document for the source file, made reproducible:
    paths are the bare file name (no build-machine paths) and timings are zero."""
    from modelcrate import __version__
    from modelcrate.scan import ScanReport

    doc: dict[str, object] = {
        "tool": "modelcrate",
        "version": __version__,
        **ScanReport(files=[relocated(report, source_name, seconds=0.0)]).to_dict(),
        "fail_on": fail_on,
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@overload
def verify_crate(crate_dir: Path, manifest: None = None) -> Manifest: ...
@overload
def verify_crate(crate_dir: Path, manifest: Manifest) -> Manifest: ...
@overload
def verify_crate(crate_dir: Path, manifest: ManifestView) -> ManifestView: ...
def verify_crate(
    crate_dir: Path, manifest: Manifest | ManifestView | None = None
) -> Manifest | ManifestView:
    """Check a crate folder against its manifest: version digest, every artifact's size and
    sha256, the lock, the signature and scan summaries. Raises IntegrityError naming the file.
    ``manifest``: the folder's ``crate.yaml`` already read by the caller (not re-read): the
    model, or a server's Pydantic-free view of it (``manifest_view``)."""
    crate_dir = Path(crate_dir)
    if manifest is None:
        from modelcrate.crate.manifest import load_manifest

        manifest = load_manifest(crate_dir)
    yaml_path = str(crate_dir / MANIFEST_NAME)
    if manifest.compute_version() != manifest.version:
        raise IntegrityError(
            "crate.yaml does not match its version digest: it was modified after the build",
            path=yaml_path,
            hint="do not edit crates; rebuild it or import it again from a trusted export",
        )
    for art in manifest.artifacts:
        _check_file(crate_dir / art.path, art.sha256, art.size)
    _check_file(crate_dir / LOCK_FILE, manifest.lock_sha256, None)
    sig_path = crate_dir / SIGNATURE_FILE
    if _load_json(sig_path) != manifest.signature:
        raise IntegrityError(
            "signature.json differs from the signature in crate.yaml",
            path=str(sig_path),
            hint="rebuild the crate, or import it again from a trusted export",
        )
    scan_path = crate_dir / SCAN_FILE
    doc = _load_json(scan_path)
    if (
        not isinstance(doc, dict)
        or doc.get("verdict") != manifest.scan.verdict
        or doc.get("counts") != manifest.scan.counts
    ):
        raise IntegrityError(
            "scan.json does not agree with the scan summary in crate.yaml",
            path=str(scan_path),
            hint="rebuild the crate, or import it again from a trusted export",
        )
    _check_sbom(crate_dir, manifest)
    return manifest


def _check_sbom(crate_dir: Path, manifest: Manifest | ManifestView) -> None:
    """The SBOM, when present, must describe this crate (absent: a crate made before SBOMs)."""
    from modelcrate.crate.sbom import sbom_problem

    path = crate_dir / SBOM_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise IntegrityError(
            f"a crate file is unreadable: {exc.strerror or exc}",
            path=str(path),
            hint="check the file's permissions, or rebuild the crate",
        ) from exc
    # a server's ManifestView has the model's fields and JSON values: read alike
    problem = sbom_problem(data, cast("Manifest", manifest), (crate_dir / LOCK_FILE).read_bytes())
    if problem is not None:
        raise IntegrityError(
            f"sbom.cdx.json does not agree with the crate: {problem}",
            path=str(path),
            hint="rebuild the crate, or import it again from a trusted export",
        )


def _check_file(path: Path, sha256: str, size: int | None) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError as exc:
        raise IntegrityError(
            "a file listed in crate.yaml is missing",
            path=str(path),
            hint="the crate is incomplete; rebuild it or import it again",
        ) from exc
    if not stat.S_ISREG(st.st_mode):
        raise IntegrityError(
            "a crate file is not a regular file (links are not allowed in crates)",
            path=str(path),
            hint="rebuild the crate, or import it again from a trusted export",
        )
    if (size is not None and st.st_size != size) or file_sha256(path) != sha256:
        raise IntegrityError(
            "file content does not match the sha256 recorded in crate.yaml (tampered or corrupt)",
            path=str(path),
            hint="do not use this crate; rebuild it or import it again from a trusted export",
        )


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise IntegrityError(
            "a crate file is missing", path=str(path), hint="rebuild the crate or import it again"
        ) from exc
    except (OSError, ValueError) as exc:
        raise IntegrityError(
            f"a crate file is unreadable or not JSON: {exc}",
            path=str(path),
            hint="rebuild the crate or import it again",
        ) from exc
