"""Scan policy: what a team adds to the allowlist, severity overrides, the failing severity."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelcrate.errors import InputError
from modelcrate.scan.findings import Severity

# Modules that no policy can admit (torch's weights_only blocks the same four).
NEVER_ALLOWED_MODULES = frozenset({"os", "posix", "nt", "sys", "subprocess", "builtins"})


@dataclass(frozen=True)
class Override:
    """What a policy did to one finding's severity: the new severity and the note to show."""

    severity: Severity
    note: str | None = None  # None when the severity is unchanged


@dataclass(frozen=True)
class Policy:
    """``allow_globals`` holds exact ``module.qualname`` entries or ``module.*`` prefixes.

    ``rule_severity`` overrides the severity of a rule's findings; it may raise any finding
    and lower any but a CRITICAL one. ``rule_reasons`` says why (shown with every finding the
    override changed), ``source`` names the policy file.
    """

    fail_on: Severity = Severity.HIGH
    allow_globals: frozenset[str] = frozenset()
    rule_severity: dict[str, Severity] = field(default_factory=dict)
    rule_reasons: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def allows_global(self, module: str, qualname: str) -> bool:
        """True when the user's policy admits ``module.qualname`` (never for os/sys/...)."""
        root = module.split(".", 1)[0]
        if root in NEVER_ALLOWED_MODULES or not self.allow_globals:
            return False
        full = f"{module}.{qualname}"
        if full in self.allow_globals:
            return True
        parts = module.split(".")
        return any(
            ".".join(parts[:i]) + ".*" in self.allow_globals for i in range(1, len(parts) + 1)
        )

    def severity_for(self, rule_id: str, severity: Severity) -> Severity:
        """Apply a per-rule override from the policy file (never below CRITICAL for CRITICAL)."""
        return self.override(rule_id, severity).severity

    def override(self, rule_id: str, severity: Severity) -> Override:
        """The severity a finding of ``rule_id`` gets under this policy, and what to say about it.

        A CRITICAL finding is never lowered: the override is refused and the refusal shown.
        """
        wanted = self.rule_severity.get(rule_id)
        if wanted is None or wanted == severity:
            return Override(severity)
        who = f"policy {self.source}" if self.source else "the scan policy"
        reason = self.rule_reasons.get(rule_id, "")
        because = f": {reason}" if reason else ""
        if severity is Severity.CRITICAL and wanted < severity:
            return Override(
                severity,
                f"{who} asks for {wanted.name} for {rule_id}; refused: "
                "CRITICAL findings are never lowered",
            )
        verb = "lowered" if wanted < severity else "raised"
        return Override(wanted, f"{verb} from {severity.name} to {wanted.name} by {who}{because}")


def load_policy(path: str | Path) -> Policy:
    """Read a policy from TOML or JSON::

    fail_on = "high"
    [allow]
    globals = ["mypkg.models.Net", "mypkg.layers.*"]
    [rules]
    "onnx.custom-domain" = "info"
    "torch.torchscript" = {severity = "medium", reason = "our own TorchScript models"}
    """
    import json
    import tomllib

    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read policy file: {exc.strerror}", path=str(p), hint="check the path"
        ) from exc
    try:
        data = json.loads(raw) if p.suffix == ".json" else tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(
            f"policy file is not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {exc}",
            path=str(p),
            hint="fix the syntax; see the README's policy section",
        ) from exc
    return _policy_from_dict(data, str(p))


def _policy_from_dict(data: dict[str, object], where: str) -> Policy:
    def bad(msg: str) -> InputError:
        return InputError(msg, path=where, hint="see the README's policy section")

    unknown = set(data) - {"fail_on", "allow", "rules"}
    if unknown:
        raise bad(f"unknown policy keys: {', '.join(sorted(unknown))}")
    try:
        fail_on = Severity.parse(str(data.get("fail_on", "high")))
    except ValueError as exc:
        raise bad(str(exc)) from exc
    allow = data.get("allow", {})
    if not isinstance(allow, dict):
        raise bad("[allow] must be a table")
    globals_ = allow.get("globals", [])
    if not isinstance(globals_, list) or not all(isinstance(g, str) for g in globals_):
        raise bad("allow.globals must be a list of strings like 'mypkg.models.Net'")
    for g in globals_:
        root = g.split(".", 1)[0]
        if root in NEVER_ALLOWED_MODULES or g in ("*", ""):
            raise bad(f"allow.globals entry {g!r} can never be allowed")
    rules = data.get("rules", {})
    if not isinstance(rules, dict):
        raise bad("[rules] must be a table of rule_id = severity")
    overrides: dict[str, Severity] = {}
    reasons: dict[str, str] = {}
    for key, value in rules.items():
        rule = str(key)
        if isinstance(value, dict):
            extra = set(value) - {"severity", "reason"}
            if extra or "severity" not in value:
                raise bad(
                    f"[rules] {rule!r} must be a severity or a table "
                    '{severity = "...", reason = "..."}'
                )
            reason = value.get("reason", "")
            if not isinstance(reason, str):
                raise bad(f"[rules] {rule!r}: reason must be a string")
            if reason.strip():
                reasons[rule] = " ".join(reason.split())
            value = value["severity"]
        if not isinstance(value, str):
            raise bad(f'[rules] {rule!r}: severity must be a string such as "medium"')
        try:
            overrides[rule] = Severity.parse(value)
        except ValueError as exc:
            raise bad(f"[rules] {rule!r}: {exc}") from exc
    return Policy(
        fail_on=fail_on,
        allow_globals=frozenset(globals_),
        rule_severity=overrides,
        rule_reasons=reasons,
        source=where,
    )
