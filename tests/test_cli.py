"""The CLI end to end, in process: exit codes, formats, output file, errors a person can act on."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from modelcrate.cli import main


def _evil(tmp_path: Path) -> Path:
    arg = b"touch /tmp/never"
    p = tmp_path / "model.pkl"
    p.write_bytes(b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(arg)) + arg + b"\x85R.")
    return p


def _benign(tmp_path: Path) -> Path:
    import pickle

    p = tmp_path / "data.pkl"
    p.write_bytes(pickle.dumps({"weights": [1.0, 2.0], "name": "x"}, protocol=4))
    return p


def test_exit_1_on_malicious_and_0_on_benign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan", str(_evil(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert "os.system" in out
    assert "CRITICAL" in out
    assert main(["scan", str(_benign(tmp_path))]) == 0
    assert "no known-unsafe constructs found" in capsys.readouterr().out


def test_fail_on_threshold(tmp_path: Path) -> None:
    evil = _evil(tmp_path)
    # a CRITICAL finding is below no threshold, so --fail-on critical still fails
    assert main(["scan", str(evil), "--fail-on", "critical"]) == 1


def test_json_output_to_file(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    rc = main(["scan", str(_evil(tmp_path)), "--format", "json", "--output", str(out), "--hash"])
    assert rc == 1
    doc = json.loads(out.read_text())
    assert doc["verdict"] == "CRITICAL"
    assert doc["fail_on"] == "HIGH"
    (f,) = doc["files"]
    assert len(f["sha256"]) == 64
    rules = {x["rule_id"] for x in f["findings"]}
    assert "pickle.global" in rules
    assert not list(tmp_path.glob(".report.json.*"))  # no temp file left behind


def test_missing_file_is_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["scan", str(tmp_path / "nope.pkl")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no such file or directory" in err
    assert "nope.pkl" in err
    assert "hint:" in err


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(_benign(tmp_path)), "--fail-on", "bogus"]) == 2
    assert "unknown severity" in capsys.readouterr().err
    assert main(["scan"]) == 2
    assert main(["scan", str(tmp_path), "--format", "xml"]) == 2


def test_bad_policy_file_is_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pol = tmp_path / "policy.toml"
    pol.write_text("fail_on = [\n")
    assert main(["scan", str(_benign(tmp_path)), "--policy", str(pol)]) == 2
    err = capsys.readouterr().err
    assert "policy.toml" in err
    assert "TOML" in err


def test_policy_allowlist_admits_team_class(tmp_path: Path) -> None:
    p = tmp_path / "team.pkl"
    p.write_bytes(b"\x80\x02cacme.models\nNet\n)\x81.")
    assert main(["scan", str(p)]) == 1  # unknown class: HIGH by default
    pol = tmp_path / "policy.toml"
    pol.write_text('[allow]\nglobals = ["acme.models.*"]\n')
    assert main(["scan", str(p), "--policy", str(pol)]) == 0


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert "modelcrate" in capsys.readouterr().out
