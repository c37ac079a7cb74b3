"""Checks of the --peer-tests machinery, on files made here (no peer data needed).

Not in the project's test suite (pyproject's testpaths is tests/); run it with
``python -m pytest benchmarks/scan/test_peer_tests.py`` (about 5 s).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_tests  # the sibling module, importable because of the line above

HERE = Path(__file__).resolve().parent


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_committed_labels_are_well_formed() -> None:
    labels = peer_tests.load_labels()
    for peer in peer_tests.PEERS:
        files = labels[peer]["files"]
        paths = [f["path"] for f in files]
        assert len(paths) == len(set(paths)), f"{peer}: duplicate label paths"
        for f in files:
            assert f["expected"] in ("malicious", "benign"), f
            assert f["test"], f
            assert f["reason"], f
            if peer == "picklescan":
                assert len(f["sha256"]) == 64, f
    # picklescan: the two sample folders, every entry under one of them
    folders = labels["picklescan"]["folders"]
    assert all(
        any(f["path"].startswith(d + "/") for d in folders) for f in labels["picklescan"]["files"]
    )
    # modelscan: each entry names a fixture the generator runs
    fixtures = {"zip_file_path", "pytorch_file_path", "file_path", "numpy_file_path",
                "tensorflow_file_path", "keras_file_path"}  # fmt: skip
    assert {f["fixture"] for f in labels["modelscan"]["files"]} <= fixtures


def test_picklescan_set_reports_stale_missing_and_unlabelled(tmp_path: Path) -> None:
    data = tmp_path / "tests" / "data"
    data.mkdir(parents=True)
    (data / "a.pkl").write_bytes(b"same")
    (data / "b.pkl").write_bytes(b"changed upstream")
    (data / "new.pkl").write_bytes(b"nobody labelled me")

    def label(path: str, content: bytes, expected: str) -> dict[str, str]:
        return {"path": path, "sha256": _sha(content), "expected": expected, "format": "pickle",
                "test": "t", "reason": "r"}  # fmt: skip

    labels = {
        "picklescan": {
            "commit": "x",
            "folders": ["tests/data"],
            "files": [
                label("tests/data/a.pkl", b"same", "benign"),
                label("tests/data/b.pkl", b"as labelled", "malicious"),
                label("tests/data/gone.pkl", b"", "malicious"),
            ],
        }
    }
    ps = peer_tests.picklescan_set(tmp_path, labels)
    checks = {s["file"]: s["label_check"] for s in ps.samples}
    assert checks == {"tests/data/a.pkl": "ok", "tests/data/b.pkl": "stale"}
    assert [s["path"] for s in ps.checks["stale"]] == ["tests/data/b.pkl"]
    assert ps.checks["missing"] == ["tests/data/gone.pkl"]
    assert ps.checks["unlabelled"] == ["tests/data/new.pkl"]
    assert {s["id"] for s in ps.samples} == {"picklescan:tests/data/a.pkl",
                                             "picklescan:tests/data/b.pkl"}  # fmt: skip


def test_parse_peer_args(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    assert peer_tests.parse_peer_args([f"picklescan={tmp_path}"]) == {"picklescan": tmp_path}
    for bad in (f"fickling={tmp_path}", "picklescan", f"modelscan={tmp_path / 'nope'}"):
        with pytest.raises(SystemExit):
            peer_tests.parse_peer_args([bad])


FAKE_TESTS = """
import pytest
import tensorflow as tf
import tf_keras as keras

class Model(keras.Model):  # what test_utils does with the real tf_keras
    @tf.function(input_signature=[tf.TensorSpec(shape=(1,), dtype=tf.float32)])
    def call(self, x):
        return x

@pytest.fixture(scope="session")
def zip_file_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zip")
    (tmp / "test.zip").write_bytes(b"zip")
    return tmp

@pytest.fixture(scope="session")
def file_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("test_files")
    raise RuntimeError("fixture broke")

@pytest.fixture(scope="session")
def keras_file_extensions():
    return ["h5"]

@pytest.mark.parametrize("x", [1])
def test_something(x):
    pass
"""


def _run_generator(repo: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(HERE / "peer_tests_modelscan.py"), "--repo", str(repo),
            "--out", str(out), *extra]  # fmt: skip
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)


def test_generator_runs_fixtures_with_stubs(tmp_path: Path) -> None:
    repo = tmp_path / "modelscan"
    (repo / "tests").mkdir(parents=True)
    (repo / "tests" / "test_modelscan.py").write_text(FAKE_TESTS, encoding="utf-8")
    (repo / "tests" / "test_utils.py").write_text("", encoding="utf-8")
    out = tmp_path / "out"
    proc = _run_generator(repo, out, "--no-tensorflow")
    assert proc.returncode == 1, proc.stderr  # one fixture failed
    gen = json.loads((out / "generated.json").read_text(encoding="utf-8"))
    fixtures = gen["fixtures"]
    assert fixtures["zip_file_path"] == "ok"
    assert fixtures["file_path"] == "failed: RuntimeError: fixture broke"
    assert fixtures["pytorch_file_path"].startswith("failed: AttributeError")  # not defined
    assert fixtures["keras_file_path"].startswith("skipped: needs tensorflow")
    assert gen["files"] == {"zip/test.zip": _sha(b"zip")}
    assert set(gen["sources_sha256"]) == {"tests/test_modelscan.py", "tests/test_utils.py"}
    # A second run replaces its own output...
    assert _run_generator(repo, out, "--no-tensorflow").returncode == 1
    # ...but never a folder it did not write.
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine", encoding="utf-8")
    proc = _run_generator(repo, other, "--no-tensorflow")
    assert proc.returncode != 0
    assert "not replacing" in proc.stderr
    assert (other / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_wrong_outcome() -> None:
    assert peer_tests._wrong("malicious", "error")
    assert peer_tests._wrong("malicious", "unsupported")
    assert not peer_tests._wrong("malicious", "flagged")
    assert peer_tests._wrong("benign", "flagged")
    assert peer_tests._wrong("benign", "error")
    assert not peer_tests._wrong("benign", "unsupported")
