"""Differential fuzzing: the scanner against the real loaders, on mutated real samples.

The harness (``tests/scan/differential/``) builds benign and malicious seeds with torch.save,
joblib.dump, np.save/savez, pandas.to_pickle and pickle.dumps; mutates them at opcode and
container level; loads each mutant with pickle (C and Python), torch.load(weights_only=False),
joblib.load, numpy.load(allow_pickle=True) and pandas.read_pickle, each in a fresh forked child
under an audit hook; and scans it. A mutant on which a loader reaches a non-allowlisted callable
while the scan passes the default gate is a miss. This file runs a bounded, deterministic
campaign (CI=true runs a longer one), checks that the oracle can fail, and replays every saved
regression; ``benchmarks/scan/differential.py`` runs long campaigns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcrate.scan import Severity
from tests.scan.differential import regressions
from tests.scan.differential.campaign import Campaign, Recipe, generate, replay
from tests.scan.differential.oracle import ScanResult, reached, scan_path
from tests.scan.differential.runner import LoaderPool
from tests.scan.differential.seeds import build_seeds

CI_CAMPAIGN_SEED = 20260510
# a prefix of one fixed campaign: the same mutants on every run, more of them under CI
CI_MUTANTS = int(
    os.environ.get("MODELCRATE_DIFF_MUTANTS", "300" if os.environ.get("CI") else "120")
)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoaderPool]:
    with LoaderPool(tmp_path_factory.mktemp("loaders")) as p:
        yield p


def _lax_scanner(path: Path) -> ScanResult:
    """A deliberately broken scanner: never finds anything."""
    return ScanResult(None, "stub", (), 0.0)


def _alarmist_scanner(path: Path) -> ScanResult:
    """A deliberately broken scanner: stops everything."""
    return ScanResult(Severity.CRITICAL, "stub", ("CRITICAL stub",), 0.0)


def test_sandbox_refuses_processes_and_records_the_call(pool: LoaderPool, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    data = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    res = pool.run(path, ("pickle", "pickle_py", "pandas"))
    assert not marker.exists()
    for r in res.values():
        assert ("os", "system") in r.globals
        assert any(t.startswith("os.system") for t in r.telling), r
        assert r.status == "error"
        assert "sandbox refused" in r.error
        assert reached(r)[0] == "os.system"


def test_benign_seeds_load_cleanly_and_malicious_twins_reach_their_payload(
    pool: LoaderPool, tmp_path: Path
) -> None:
    camp = Campaign(pool, tmp_path, CI_CAMPAIGN_SEED, scanner=_lax_scanner)
    camp.run_seeds()
    seeds = build_seeds()
    native = {  # the loader each format is written for
        "pickle-": "pickle",
        "torch-": "torch",
        "joblib-": "joblib",
        "npy-": "numpy",
        "npz": "numpy",
        "pandas-": "pandas",
    }
    for sid, sample in seeds.items():
        if sample.malicious:
            # the lax scanner passes everything: every twin must be a miss for some loader
            assert any(o.recipe.seed_id == sid for o in camp.stats.seed_misses), sid
            continue
        loader = next(v for k, v in native.items() if sid.startswith(k))
        assert loader in camp.seed_ok[sid], (sid, camp.seed_ok[sid])
    benign_reach = {
        o.recipe.seed_id: o.reached
        for o in camp.stats.seed_misses
        if "+evil" not in o.recipe.seed_id
    }
    # only pickles of pandas frames and torch tensors import globals outside the allowlist
    assert set(benign_reach) <= {s for s in seeds if s.startswith(("pandas-", "pickle-torch"))}


def test_the_oracle_catches_a_planted_miss_and_a_planted_false_alarm(
    pool: LoaderPool, tmp_path: Path
) -> None:
    ids = ["pickle-p2", "pickle-p2+evil", "joblib-zlib", "joblib-zlib+evil", "npy-float"]
    lax = Campaign(pool, tmp_path / "lax", 7, scanner=_lax_scanner, seed_ids=ids)
    stats = lax.run(max_mutants=10)
    assert stats.mutants == 10
    assert {o.recipe.seed_id for o in stats.seed_misses} == {"pickle-p2+evil", "joblib-zlib+evil"}
    assert stats.misses, "a scanner that finds nothing must miss some malicious mutant"
    alarmist = Campaign(pool, tmp_path / "alarm", 7, scanner=_alarmist_scanner, seed_ids=ids)
    stats = alarmist.run(max_mutants=10)
    assert stats.misses == []
    assert {o.recipe.seed_id for o in stats.seed_false_alarms} == {
        "pickle-p2",
        "joblib-zlib",
        "npy-float",
    }
    # the real scanner on the same seeds: no miss, no false alarm
    real = Campaign(pool, tmp_path / "real", 7, seed_ids=ids)
    real.run_seeds()
    assert real.stats.seed_misses == []
    assert real.stats.seed_false_alarms == []


def test_mutants_are_reproducible_from_their_recipe() -> None:
    for sid in ("torch-zip+evil", "joblib-gzip", "npz", "pandas-tar", "torch-legacy"):
        for index in range(6):
            a, rec = generate(sid, 99, index)
            b, _ = generate(sid, 99, index)
            assert a.render() == b.render()
            again = replay(Recipe.from_json(json.loads(json.dumps(rec.to_json()))))
            assert again.render() == a.render()
            assert again.name == a.name


def test_bounded_campaign_finds_no_new_miss(pool: LoaderPool, tmp_path: Path) -> None:
    camp = Campaign(pool, tmp_path, CI_CAMPAIGN_SEED)
    stats = camp.run(max_mutants=CI_MUTANTS)
    assert stats.mutants == CI_MUTANTS
    assert stats.executions >= CI_MUTANTS * 6
    known = regressions.known_keys()
    # a saved open regression excuses exactly the bytes it was saved with, nothing else
    new = [o for o in [*stats.seed_misses, *stats.misses] if known.get(o.recipe.key) != o.sha256]
    report = "\n".join(json.dumps(o.summary()) for o in new)
    assert new == [], (
        f"{len(new)} new scanner miss(es); record them with benchmarks/scan/differential.py "
        f"--seed {CI_CAMPAIGN_SEED} --max-mutants {CI_MUTANTS} --save-all, then fix the "
        f"scanner:\n{report}"
    )
    assert [o.scan.error for o in stats.scan_errors] == []


def _regression_params() -> list[object]:
    out: list[object] = []
    for reg in regressions.load():
        marks = (
            [pytest.mark.xfail(reason=f"open scanner miss: {reg.klass}", strict=False)]
            if reg.open
            else []
        )
        out.append(pytest.param(reg, id=reg.path.stem, marks=marks))
    return out


@pytest.mark.parametrize("reg", _regression_params())
def test_saved_regression_is_caught(
    reg: regressions.Regression, pool: LoaderPool, tmp_path: Path
) -> None:
    sample = replay(reg.recipe)
    data = sample.render()
    path = tmp_path / sample.name
    path.write_bytes(data)
    loads = pool.run(path)
    hits = {k: reached(v) for k, v in loads.items() if reached(v)}
    # still a real attack: some loader reaches a non-allowlisted callable on these bytes
    assert hits, f"{reg.path.name}: no loader reaches a payload any more (bytes changed?)"
    scan = scan_path(path)
    assert not scan.passes, (
        f"{reg.path.name} ({reg.klass}): the scan passes ({scan.worst}, {scan.fmt}) while "
        f"{hits} — {reg.note}"
    )
