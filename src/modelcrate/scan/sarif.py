"""SARIF 2.1.0 for code-scanning UIs (validated against the OASIS schema in the tests)."""

from __future__ import annotations

from pathlib import Path

from modelcrate.scan.findings import Finding, Severity
from modelcrate.scan.report import ScanReport
from modelcrate.scan.rules import RULES

SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)

_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
# GitHub code scanning reads a CVSS-like number from the rule's "security-severity" property.
_SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.8",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.0",
    Severity.LOW: "3.0",
    Severity.INFO: "0.0",
}


def _artifact_location(path: str) -> dict[str, object]:
    p = Path(path)
    if p.is_absolute():
        return {"uri": p.as_uri()}
    return {"uri": p.as_posix(), "uriBaseId": "%SRCROOT%"}


def _result(f: Finding, rule_index: int, artifact_index: int) -> dict[str, object]:
    physical: dict[str, object] = {
        "artifactLocation": {**_artifact_location(f.location.path), "index": artifact_index}
    }
    if f.location.offset is not None and not f.location.members:
        physical["region"] = {"byteOffset": f.location.offset}
    location: dict[str, object] = {"physicalLocation": physical}
    if f.location.members:
        location["logicalLocations"] = [
            {"fullyQualifiedName": "!".join(f.location.members), "kind": "member"}
        ]
    props: dict[str, object] = {"severity": f.severity.name, "why": f.why}
    if f.symbol:
        props["symbol"] = f.symbol
    if f.location.members:
        props["members"] = list(f.location.members)
        if f.location.offset is not None:
            props["memberByteOffset"] = f.location.offset
    return {
        "ruleId": f.rule_id,
        "ruleIndex": rule_index,
        "level": _LEVEL[f.severity],
        "message": {"text": f.message},
        "locations": [location],
        "properties": props,
    }


def to_sarif(report: ScanReport, *, tool_version: str) -> dict[str, object]:
    """Render a report as one SARIF run: rules that fired, artifacts, results."""
    rule_ids: list[str] = []
    worst: dict[str, Severity] = {}
    for f in report.findings:
        if f.rule_id not in worst:
            rule_ids.append(f.rule_id)
            worst[f.rule_id] = f.severity
        worst[f.rule_id] = max(worst[f.rule_id], f.severity)
    rule_index = {rid: i for i, rid in enumerate(rule_ids)}
    rules = [
        {
            "id": rid,
            "name": rid.replace(".", "-"),
            "shortDescription": {"text": RULES.get(rid, rid)},
            "defaultConfiguration": {"level": _LEVEL[worst[rid]]},
            "properties": {
                "security-severity": _SECURITY_SEVERITY[worst[rid]],
                "tags": ["security"],
            },
        }
        for rid in rule_ids
    ]
    artifacts: list[dict[str, object]] = []
    results: list[dict[str, object]] = []
    for i, fr in enumerate(report.files):
        art: dict[str, object] = {"location": _artifact_location(fr.path), "length": fr.size}
        if fr.sha256:
            art["hashes"] = {"sha-256": fr.sha256}
        artifacts.append(art)
        results.extend(_result(f, rule_index[f.rule_id], i) for f in fr.findings)
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "modelcrate",
                        "version": tool_version,
                        "rules": rules,
                    }
                },
                "invocations": [{"executionSuccessful": True}],
                "artifacts": artifacts,
                "results": results,
            }
        ],
    }
