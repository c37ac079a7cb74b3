from __future__ import annotations

from pathlib import Path

import pytest

from modelcrate.errors import InputError
from modelcrate.scan import Policy, Severity, load_policy


def test_load_toml_policy(tmp_path: Path) -> None:
    p = tmp_path / "policy.toml"
    p.write_text(
        'fail_on = "medium"\n[allow]\nglobals = ["acme.models.Net", "acme.layers.*"]\n'
        '[rules]\n"onnx.custom-domain" = "info"\n'
    )
    pol = load_policy(p)
    assert pol.fail_on is Severity.MEDIUM
    assert pol.allows_global("acme.models", "Net")
    assert not pol.allows_global("acme.models", "Other")
    assert pol.allows_global("acme.layers.conv", "Block")
    assert not pol.allows_global("acmex.layers", "Block")
    assert pol.severity_for("onnx.custom-domain", Severity.MEDIUM) is Severity.INFO
    assert pol.severity_for("pickle.global", Severity.HIGH) is Severity.HIGH


def test_json_policy(tmp_path: Path) -> None:
    p = tmp_path / "policy.json"
    p.write_text('{"allow": {"globals": ["acme.Net"]}}')
    assert load_policy(p).allows_global("acme", "Net")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[allow]\nglobals = ["os.system"]\n', "can never be allowed"),
        ('[allow]\nglobals = ["builtins.eval"]\n', "can never be allowed"),
        ('fail_on = "severe"\n', "unknown severity"),
        ("bogus = 1\n", "unknown policy keys"),
        ("[allow]\nglobals = 3\n", "list of strings"),
    ],
)
def test_bad_policies_are_input_errors(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "policy.toml"
    p.write_text(text)
    with pytest.raises(InputError, match=needle) as info:
        load_policy(p)
    assert info.value.path == str(p)


def test_never_allowed_even_if_constructed_directly() -> None:
    pol = Policy(allow_globals=frozenset({"os.*", "sys.*", "subprocess.*"}))
    assert not pol.allows_global("os", "system")
    assert not pol.allows_global("os.path", "join")
    assert not pol.allows_global("subprocess", "run")
