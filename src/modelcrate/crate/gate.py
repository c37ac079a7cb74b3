"""The scan gate for a crate this build did not make (an import): it vouches for nothing.

Every model file is scanned as ``modelcrate build`` scans its input; its content must be the
format crate.yaml declares (a pickle is never a crate artifact, however harmless); and a skops
model may make skops import only what modelcrate's allowlist admits, whatever the crate's own
trust list claims (:mod:`modelcrate.crate.skops_trust`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from modelcrate.crate.errors import ScanFailed
from modelcrate.crate.layout import relocated
from modelcrate.errors import InputError

if TYPE_CHECKING:
    from modelcrate.crate.manifest import ArtifactEntry, Manifest
    from modelcrate.scan import Finding, Policy, ScanReport

__all__ = ["gate"]

# what the scanner calls each artifact format a build writes (it has no detector for UBJSON)
_SCANNED_AS = {"xgboost-ubj": {"unknown"}}


def gate(
    crate_dir: Path, manifest: Manifest, *, source: str, policy: Policy | None = None
) -> ScanReport:
    """The build's gate, run again on a crate this build did not make: every model file is
    scanned, and a skops model may need nothing outside the allowlist (whatever the crate's own
    trust list says). Raises ScanFailed (exit 1) at or above HIGH (or the policy's lower
    ``fail_on``); returns the report otherwise. Findings are located as ``SOURCE!model/...``."""
    from modelcrate.scan import Finding, Location, ScanReport, Severity, scan_file

    threshold = min(policy.fail_on, Severity.HIGH) if policy is not None else Severity.HIGH
    files = []
    for art in manifest.artifacts:
        where = f"{source}!{art.path}"
        scanned = relocated(scan_file(crate_dir / art.path, policy=policy), where)
        if scanned.format not in _SCANNED_AS.get(art.format, {art.format}):
            scanned.findings.append(
                Finding(
                    Severity.HIGH,
                    "format.mismatch",
                    f"crate.yaml says this is {art.format}, its content is {scanned.format}",
                    Location(where),
                    why="a crate holds safe formats only, as crate.yaml declares them; anything "
                    "else in their place (a pickle above all) was put there by hand",
                )
            )
        scanned.findings.extend(_skops_findings(crate_dir / art.path, art, manifest, where))
        files.append(scanned)
    report = ScanReport(files=files)
    if report.failed(threshold):
        failing = sorted(
            (f for f in report.findings if f.severity >= threshold), key=lambda f: -f.severity
        )
        shown = "; ".join(
            f"{f.location.path.rpartition('!')[2]}: {f.severity.name} {f.rule_id} "
            f"{f.symbol or f.message}"
            for f in failing[:3]
        )
        more = f" (and {len(failing) - 3} more)" if len(failing) > 3 else ""
        raise ScanFailed(
            f"refusing the crate: its model files fail the scan gate: {shown}{more}",
            report=report,
            path=source,
            hint="do not use this crate. 'modelcrate build' never stores such a file: the crate "
            "was forged or altered; get it from a source you trust, or build it yourself",
        )
    return report


def _skops_findings(
    path: Path, art: ArtifactEntry, manifest: Manifest, where: str
) -> list[Finding]:
    """For a skops model: a finding per name it needs, or its crate claims trust for, outside
    the allowlist. Other artifacts (not zips with a schema.json) give none."""
    from modelcrate.crate.skops_trust import (
        TRUSTED_KEY,
        claimed_needs,
        is_skops,
        refused_types,
        skops_needs,
    )
    from modelcrate.scan import Finding, Location, Severity

    skops_crate = manifest.runtime.kind == "skops" or art.format == "skops"
    with open(path, "rb") as fh:
        if not skops_crate and fh.read(2) != b"PK":
            return []
    data = path.read_bytes()
    if not skops_crate and not is_skops(data):
        return []
    loc = Location(where)
    try:
        needs = skops_needs(data, path=where)
    except InputError as exc:
        why = "a skops model that cannot be audited cannot be trusted"
        return [Finding(Severity.HIGH, "skops.malformed", exc.message, loc, why=why)]
    out = [
        Finding(
            r.severity,
            "skops.type",
            f"the skops model makes skops import {r.name}: {r.reason}",
            loc,
            why="skops imports every type, function and method its schema names when the "
            "model is loaded; only what modelcrate's allowlist admits is trusted",
            symbol=r.name,
        )
        for r in refused_types(needs)
    ]
    extra = manifest.signature.get("extra")
    claimed = extra.get(TRUSTED_KEY) if isinstance(extra, dict) else None
    if isinstance(claimed, str):
        why = (
            "a trust list shipped inside a crate is never used; a crate that claims trust the "
            "allowlist does not give was not made by 'modelcrate build'"
        )
        try:
            claims = claimed_needs(claimed, path=where)
        except InputError as exc:
            return [*out, Finding(Severity.HIGH, "skops.trust-claim", exc.message, loc, why=why)]
        out.extend(
            Finding(
                max(r.severity, Severity.HIGH),
                "skops.trust-claim",
                f"the crate's own skops trust list names {r.name}, outside the allowlist",
                loc,
                why=why,
                symbol=r.name,
            )
            for r in refused_types(claims)
        )
    return out
