"""The soak script (benchmarks/serving/soak.py), short: a real server under 20 s of mixed
traffic must answer every request as expected, keep its RSS flat and exit 0 on SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SOAK = REPO / "benchmarks" / "serving" / "soak.py"


def _soak(out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--out", str(out), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
        check=False,
    )
    report = out / "soak.json"
    assert report.is_file(), proc.stdout + proc.stderr
    assert (out / "soak.md").is_file()
    return proc, json.loads(report.read_text())


def test_short_soak_passes(tmp_path: Path) -> None:
    proc, result = _soak(tmp_path, "--duration", "20")
    detail = proc.stdout + proc.stderr + json.dumps(result["first_failures"], indent=1)
    assert proc.returncode == 0, detail
    assert result["verdict"] == "pass", result["fail_reasons"]
    assert result["errors"] == 0, detail
    assert result["connection_errors"] == {}
    assert result["server_exit_code"] == 0
    assert result["server_log_tracebacks"] == 0
    # at least 100 requests a second, even on two busy cores (about 2,000 when idle)
    assert result["requests"] > 2_000, result["requests"]
    kinds = result["kinds"]
    assert set(kinds) >= {"predict_one", "predict_50", "v2_infer_10", "metrics"}
    for name, kind in kinds.items():  # every kind ran, each as it must
        assert kind["count"] > 10, name
        assert kind["unexpected"] == {}
        assert kind["wrong_answers"] == 0
    refused = {n: k["expect"] for n, k in kinds.items() if n.startswith("bad_")}
    assert len(refused) >= 3  # invalid requests were sent, and must be refused with a 4xx
    assert all(set(e) <= {400, 404, 422} for e in refused.values())
    assert result["rss_growth_pct"] <= result["max_rss_growth_pct"] == 5.0
    assert result["rss_start_kib"] > 10_000  # the server's own RSS, not a missing process's 0
    assert len(result["rss_samples"]) >= 18  # one a second


def test_soak_fails_past_its_rss_limit(tmp_path: Path) -> None:
    """The verdict and exit status follow the checks: no RSS can shrink by 100 %."""
    proc, result = _soak(tmp_path, "--duration", "5", "--max-rss-growth", "-100")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert result["verdict"] == "fail"
    assert any("RSS grew" in r for r in result["fail_reasons"]), result["fail_reasons"]
    assert result["errors"] == 0  # only the impossible limit failed it
