"""Scan policy: what a team adds to the allowlist, severity overrides, the failing severity."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelcrate.errors import InputError
from modelcrate.scan.findings import Severity

# Modules that no policy can admit (torch's weights_only blocks the same four).
NEVER_ALLOWED_MODULES = frozenset({"os", "posix", "nt", "sys", "subprocess", "builtins"})


@dataclass(frozen=True)
class Policy:
    """``allow_globals`` holds exact ``module.qualname`` entries or ``module.*`` prefixes."""

    fail_on: Severity = Severity.HIGH
    allow_globals: frozenset[str] = frozenset()
    rule_severity: dict[str, Severity] = field(default_factory=dict)

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
        """Apply a per-rule override from the policy file."""
        return self.rule_severity.get(rule_id, severity)


def load_policy(path: str | Path) -> Policy:
    """Read a policy from TOML or JSON::

    fail_on = "high"
    [allow]
    globals = ["mypkg.models.Net", "mypkg.layers.*"]
    [rules]
    "onnx.custom-domain" = "info"
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
    try:
        overrides = {str(k): Severity.parse(str(v)) for k, v in rules.items()}
    except ValueError as exc:
        raise bad(str(exc)) from exc
    return Policy(fail_on=fail_on, allow_globals=frozenset(globals_), rule_severity=overrides)
