"""The crate commands end to end, in process: output, exit codes, errors a person can act on."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import typer

from modelcrate import cli
from modelcrate.cli import main
from modelcrate.cli.crate_cmd import register
from modelcrate.crate.store import Store
from tests.crate.conftest import real_locks, seed_lock
from tests.crate.helpers import FEATURES, hand_crate, iris_onnx_bytes, snapshot

__all__ = ["real_locks", "seed_lock"]  # fixtures shared with tests/crate


@pytest.fixture(autouse=True)
def crate_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``main`` with the crate commands registered on a fresh app (whatever cli wires)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """modelcrate"""

    register(app)
    monkeypatch.setattr(cli, "app", app)
    monkeypatch.setenv("MODELCRATE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


@pytest.fixture(scope="module")
def onnx_models() -> tuple[bytes, bytes, bytes]:
    """Three real ONNX models (import re-scans the model files: they must be real)."""
    return iris_onnx_bytes(c=1.0), iris_onnx_bytes(c=0.5), iris_onnx_bytes(c=0.25)


@pytest.fixture
def store(tmp_path: Path, onnx_models: tuple[bytes, bytes, bytes]) -> Store:
    s = Store(tmp_path / "home")
    one, two, three = onnx_models
    hand_crate(s, "iris", one, created="2024-01-01T00:00:00Z")
    hand_crate(s, "iris", two, created="2024-02-01T00:00:00Z")
    hand_crate(s, "wine", three)
    return s


def test_list(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "NAME" in out
    assert "VERSION" in out
    assert out.count("iris") == 2
    assert "wine" in out
    assert store.get("iris").short_version in out
    assert main(["list", "wine", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["name"] == "wine"
    assert row["version"].startswith("sha256:")


def test_list_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--store", str(tmp_path / "empty")]) == 0
    assert "no crates" in capsys.readouterr().out
    assert not (tmp_path / "empty").exists()


def test_show(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    latest = store.get("iris")
    assert main(["show", "iris"]) == 0
    out = capsys.readouterr().out
    assert latest.version in out
    assert "sepal_length: float32" in out
    assert "classification [0, 1, 2]" in out
    assert main(["show", "iris", "--format", "yaml"]) == 0
    assert capsys.readouterr().out.encode() == (latest.path / "crate.yaml").read_bytes()
    older = store.list("iris")[1]
    assert main(["show", f"iris:{older.short_version[:5]}", "-f", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == older.version
    assert doc["path"] == str(older.path)


def test_unknown_crate_is_exit_2(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "nope"]) == 2
    err = capsys.readouterr().err
    assert "error[crate-not-found]: no crate named 'nope'" in err
    assert "hint: run 'modelcrate list'" in err


def test_rm(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rm", "iris"]) == 2
    assert "has 2 versions" in capsys.readouterr().err
    assert main(["rm", "wine"]) == 0
    assert "removed wine:" in capsys.readouterr().out
    assert main(["rm", "iris", "--all"]) == 0
    assert capsys.readouterr().out.count("removed iris:") == 2
    assert store.list() == []


def test_export_import(store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    assert main(["export", "iris", str(a)]) == 0
    assert main(["export", "iris", str(b)]) == 0
    out = capsys.readouterr().out
    assert f"exported {store.get('iris').ref} to {a}" in out
    assert a.read_bytes() == b.read_bytes()
    other = tmp_path / "other"
    assert main(["import", str(a), "--store", str(other)]) == 0
    assert f"imported {store.get('iris').ref}" in capsys.readouterr().out
    assert main(["import", str(a), "--store", str(other)]) == 0
    assert "already in the store" in capsys.readouterr().out
    assert Store(other).get("iris").version == store.get("iris").version


def test_import_tampered_is_exit_2_and_changes_nothing(
    store: Store,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    onnx_models: tuple[bytes, bytes, bytes],
) -> None:
    a = tmp_path / "a.tar"
    assert main(["export", "wine", str(a)]) == 0
    data = bytearray(a.read_bytes())
    at = data.index(onnx_models[2][-64:]) + 10
    data[at] ^= 0x20
    a.write_bytes(bytes(data))
    before = snapshot(store.root)
    assert main(["import", str(a)]) == 2
    err = capsys.readouterr().err
    assert "error[integrity]: refusing the archive" in err
    assert str(a) in err
    assert snapshot(store.root) == before


@pytest.fixture(scope="module")
def iris_pickle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pickle

    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = list(FEATURES)
    path = tmp_path_factory.mktemp("models") / "iris.pkl"
    path.write_bytes(pickle.dumps(DecisionTreeClassifier(max_depth=3).fit(x, y), protocol=4))
    return path


def test_build(
    iris_pickle: Path,
    tmp_path: Path,
    seed_lock: Callable[[Store, str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = Store(tmp_path / "home")
    seed_lock(s, "onnxruntime")
    assert main(["build", str(iris_pickle), "--name", "iris"]) == 0
    captured = capsys.readouterr()
    ref = s.get("iris").ref
    assert f"built: {ref}" in captured.out
    assert "parity" in captured.out
    for label in ("Scan", "Safe load", "Convert", "Parity check", "Signature", "Lock", "Write"):
        assert label in captured.err
    assert main(["build", str(iris_pickle), "--name", "iris"]) == 0
    assert f"already in the store: {ref}" in capsys.readouterr().out
    assert len(s.list()) == 1


def test_build_malicious_is_exit_1_with_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import struct

    evil = tmp_path / "evil.pkl"
    arg = b"echo pwned"
    evil.write_bytes(b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(arg)) + arg + b"\x85R.")
    assert main(["build", str(evil)]) == 1
    err = capsys.readouterr().err
    assert "os.system" in err
    assert "CRITICAL" in err
    assert "error[scan-failed]" in err
    assert f"file: {evil}" in err
    assert not (tmp_path / "home").exists()


def test_build_bad_input_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", str(tmp_path / "missing.pkl")]) == 2
    err = capsys.readouterr().err
    assert "error[input]: model file not found" in err
    assert "hint:" in err
    assert main(["build", str(tmp_path), "--flavor", "torch"]) == 2
    assert "error[usage]" in capsys.readouterr().err


def test_import_of_a_forged_crate_is_exit_1_with_the_findings(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A self-consistent archive whose model is a pickle calling os.system."""
    import os
    import pickle

    from tests.crate.forge import forge

    class Shell:
        def __reduce__(self) -> tuple[object, ...]:
            return (os.system, ("id",))

    tar = forge(
        store.resolve("wine"),
        tmp_path / "forged.tar",
        model={"model/model.onnx": pickle.dumps(Shell(), protocol=2)},
    )
    other = tmp_path / "other"
    assert main(["import", str(tar), "--store", str(other)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "forged.tar!model/model.onnx" in "".join(err.split())  # the report, then the error
    assert "CRITICAL" in err
    assert "error[scan-failed]: refusing the crate" in err
    assert "system" in err
    assert not other.exists()


def test_import_limits_and_expected_version(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = tmp_path / "a.tar"
    assert main(["export", "wine", str(a)]) == 0
    other = ["--store", str(tmp_path / "other")]
    capsys.readouterr()

    def err() -> str:
        return " ".join(capsys.readouterr().err.split())

    assert main(["import", str(a), "--max-size", "1KiB", *other]) == 2
    assert "import limit of 1024 bytes" in err()
    assert main(["import", str(a), "--max-size", "lots", *other]) == 2
    assert "'lots' is not a size" in err()
    wine = store.get("wine")
    assert main(["import", str(a), "--expect", "sha256:" + "0" * 12, *other]) == 2
    assert "not the expected version" in err()
    assert main(["import", str(a), "--expect", wine.version, "--max-size", "1MiB", *other]) == 0
    assert f"imported {wine.ref}" in capsys.readouterr().out


def test_list_and_show_say_when_a_crate_was_stored(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """The crate's own ``created`` is not the store's clock; ``stored`` is."""
    import time

    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert all(r["stored"].startswith(today) for r in rows)
    assert {r["created"] for r in rows} == {"2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z",
                                            "2024-01-02T03:04:05Z"}  # fmt: skip
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "STORED" in out
    assert today in out
    assert main(["show", "wine"]) == 0
    out = capsys.readouterr().out
    assert "stored" in out
    assert today in out
    assert main(["show", "wine", "-f", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["stored"].startswith(today)
