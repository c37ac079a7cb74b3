from __future__ import annotations

from pathlib import Path

import pytest

from modelcrate.errors import InputError
from modelcrate.scan import Policy, Severity, load_policy, scan


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


# --- overrides never lower CRITICAL; every change is shown (issue 9, items 5 and 6) -----------

EVIL_SYSTEM = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R."
# protocol 4, STACK_GLOBAL builtins.exec: another callable, another opcode path
EVIL_EXEC = b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93\x8c\x0bprint('hi')\x85R."


def _policy(tmp_path: Path, text: str, name: str = "policy.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("sev", ["info", "low", "medium", "high"])
def test_rule_override_cannot_lower_critical_global(tmp_path: Path, sev: str) -> None:
    pol = load_policy(_policy(tmp_path, f'[rules]\n"pickle.global" = "{sev}"\n'))
    model = tmp_path / "m.pkl"
    model.write_bytes(EVIL_SYSTEM)
    report = scan(model, policy=pol)
    hit = [f for f in report.findings if f.symbol and f.symbol.endswith(".system")]
    assert hit
    assert all(f.severity is Severity.CRITICAL for f in hit)
    assert report.failed(Severity.CRITICAL)
    assert "refused" in (hit[0].policy_note or "")
    assert str(tmp_path / "policy.toml") in hit[0].message


def test_rule_override_cannot_lower_critical_variant_json_policy(tmp_path: Path) -> None:
    """Another callable (exec via STACK_GLOBAL), both rules lowered, a JSON policy."""
    pol = load_policy(
        _policy(
            tmp_path,
            '{"rules": {"pickle.global": "info", "pickle.call": {"severity": "info",'
            ' "reason": "trust me"}}}',
            "p.json",
        )
    )
    model = tmp_path / "m.bin"
    model.write_bytes(EVIL_EXEC)
    report = scan(model, policy=pol)
    assert report.verdict is Severity.CRITICAL
    crit = [f for f in report.findings if f.severity is Severity.CRITICAL]
    assert any(f.symbol == "builtins.exec" for f in crit)
    assert all(f.original_severity in (None, Severity.CRITICAL) for f in crit)


def test_policy_may_raise_any_finding(tmp_path: Path) -> None:
    pol = load_policy(_policy(tmp_path, '[rules]\n"pickle.global" = "critical"\n'))
    model = tmp_path / "m.pkl"
    model.write_bytes(b"\x80\x02cacme.models\nNet\n)\x81.")  # an unknown class: HIGH
    report = scan(model, policy=pol)
    net = [f for f in report.findings if f.symbol == "acme.models.Net"]
    assert net[0].severity is Severity.CRITICAL
    assert net[0].original_severity is Severity.HIGH
    assert "raised from HIGH to CRITICAL" in (net[0].policy_note or "")


def _torchscript(tmp_path: Path) -> Path:
    torch = pytest.importorskip("torch")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()))
        path = tmp_path / "model.pt"
        torch.jit.save(scripted, str(path))
    return path


def test_torchscript_code_fails_the_default_gate(tmp_path: Path) -> None:
    report = scan(_torchscript(tmp_path))
    ts = [f for f in report.findings if f.rule_id == "torch.torchscript"]
    assert ts
    assert ts[0].severity is Severity.HIGH
    assert report.failed(Severity.HIGH)


def test_lowered_finding_shows_policy_and_reason_in_text_json_sarif(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from modelcrate.cli import main

    monkeypatch.chdir(tmp_path)  # short relative paths: the text output is not folded
    model = _torchscript(tmp_path).relative_to(tmp_path)
    _policy(
        tmp_path,
        '[rules]\n"torch.torchscript" = {severity = "medium", reason = "our own models"}\n',
    )
    pol = Path("policy.toml")
    note = f"lowered from HIGH to MEDIUM by policy {pol}: our own models"
    assert main(["scan", str(model), "--policy", str(pol)]) == 0  # below the gate now
    assert note in " ".join(capsys.readouterr().out.split())
    out = tmp_path / "r.json"
    assert main(["scan", str(model), "--policy", str(pol), "--format", "json", "-o", str(out)]) == 0
    found = [f for fr in json.loads(out.read_text())["files"] for f in fr["findings"]]
    ts = [f for f in found if f["rule_id"] == "torch.torchscript"]
    assert ts[0]["severity"] == "MEDIUM"
    assert ts[0]["original_severity"] == "HIGH"
    assert ts[0]["policy_note"] == note
    assert note in ts[0]["message"]
    sarif = tmp_path / "r.sarif"
    main(["scan", str(model), "--policy", str(pol), "--format", "sarif", "-o", str(sarif)])
    results = json.loads(sarif.read_text())["runs"][0]["results"]
    assert any(r["ruleId"] == "torch.torchscript" and note in r["message"]["text"] for r in results)


def test_lowered_to_info_is_still_listed_in_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Variant: a plain `rule = "sev"` override down to INFO, on a hand-built TorchScript zip."""
    from modelcrate.cli import main
    from tests.scan.archivegen import BENIGN_PICKLE, Member, build_zip

    monkeypatch.chdir(tmp_path)
    model = Path("scripted.zip")
    model.write_bytes(
        build_zip(
            [
                Member("net/data.pkl", BENIGN_PICKLE),
                Member("net/constants.pkl", BENIGN_PICKLE),
                Member("net/code/__torch__/deep/mod.py", b"def forward(self, x):\n  return x\n"),
            ]
        )
    )
    assert main(["scan", str(model)]) == 1
    capsys.readouterr()
    pol = _policy(Path(), '[rules]\n"torch.torchscript" = "info"\n')
    assert main(["scan", str(model), "--policy", str(pol)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"lowered from HIGH to INFO by policy {pol}" in text


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[rules]\n"x.y" = {severity = "loud"}\n', "unknown severity"),
        ('[rules]\n"x.y" = {reason = "no severity"}\n', "must be a severity or a table"),
        ('[rules]\n"x.y" = {severity = "low", reason = 3}\n', "reason must be a string"),
        ('[rules]\n"x.y" = 3\n', "severity must be a string"),
    ],
)
def test_bad_rule_overrides_are_input_errors(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        load_policy(_policy(tmp_path, text))
