"""Every crate carries ``sbom.cdx.json``: written by build, verified, exported and imported.

The SBOM is derived from the manifest and the lock; ``verify_crate`` compares its facts (crate
name and digest, artifact and package hashes) with theirs. Crates made before SBOMs existed
have none and stay valid; a present SBOM that disagrees is refused like any tampered file.
"""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import pytest

from modelcrate.crate.archive import export_crate, import_crate
from modelcrate.crate.build import build
from modelcrate.crate.errors import IntegrityError
from modelcrate.crate.layout import SBOM_FILE, crate_files, verify_crate
from modelcrate.crate.manifest import load_manifest
from modelcrate.crate.sbom import sbom_json
from modelcrate.crate.store import Store
from tests.crate.helpers import FEATURES, hand_crate, iris_onnx_bytes


@pytest.fixture(scope="module")
def iris_pickle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = list(FEATURES)
    model = LogisticRegression(max_iter=300).fit(x, y)
    path = tmp_path_factory.mktemp("models") / "iris.pkl"
    path.write_bytes(pickle.dumps(model, protocol=4))
    return path


def test_build_writes_the_sbom(iris_pickle: Path, store: Store) -> None:
    built = build(iris_pickle, name="iris", store=store)
    path = built.path / SBOM_FILE
    lock = (built.path / "requirements.lock").read_bytes()
    assert path.read_bytes() == sbom_json(built.manifest, lock)
    assert oct(path.stat().st_mode & 0o777) == oct(
        (built.path / "scan.json").stat().st_mode & 0o777
    )
    doc = json.loads(path.read_bytes())
    assert doc["metadata"]["component"]["version"] == built.version
    assert doc["metadata"]["timestamp"] == built.manifest.created
    (model,) = [c for c in doc["components"] if c["type"] == "machine-learning-model"]
    assert model["hashes"][0]["content"] == built.manifest.artifacts[0].sha256
    assert SBOM_FILE in crate_files(built.manifest)
    assert verify_crate(built.path) == built.manifest


def test_same_inputs_same_sbom(
    iris_pickle: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = build(iris_pickle, name="iris", store=store)
    other = Store(store.root.parent / "other")
    other.locks_dir.mkdir(parents=True)
    for cached in store.locks_dir.iterdir():
        (other.locks_dir / cached.name).write_bytes(cached.read_bytes())
    second = build(iris_pickle, name="iris", store=other)
    assert (second.path / SBOM_FILE).read_bytes() == (first.path / SBOM_FILE).read_bytes()


def test_a_tampered_sbom_is_refused(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    crate = hand_crate(s, "iris", iris_onnx_bytes()).record.path
    path = crate / SBOM_FILE
    doc = json.loads(path.read_bytes())
    lib = next(c for c in doc["components"] if c["type"] == "library")
    lib["hashes"][0]["content"] = "f" * 64  # point the SBOM at another wheel
    path.chmod(0o644)
    path.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match=r"sbom\.cdx\.json does not agree") as info:
        verify_crate(crate)
    assert info.value.path == str(path)
    path.write_bytes(b"not json")
    with pytest.raises(IntegrityError, match="not JSON"):
        verify_crate(crate)


def test_a_crate_without_sbom_still_verifies(tmp_path: Path) -> None:
    """Crates made before SBOMs existed: no file, nothing to check."""
    s = Store(tmp_path / "s")
    crate = hand_crate(s, "iris", iris_onnx_bytes()).record.path
    (crate / SBOM_FILE).unlink()
    assert verify_crate(crate) == load_manifest(crate)


def test_export_and_import_carry_the_sbom(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    crate = hand_crate(s, "iris", iris_onnx_bytes()).record.path
    out = tmp_path / "iris.tar"
    export_crate(s, "iris", out)
    with tarfile.open(out) as tar:
        assert SBOM_FILE in tar.getnames()
    dest = Store(tmp_path / "dest")
    imported = import_crate(dest, out).record.path
    assert (imported / SBOM_FILE).read_bytes() == (crate / SBOM_FILE).read_bytes()


def test_import_refuses_an_archive_with_a_tampered_sbom(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    hand_crate(s, "iris", iris_onnx_bytes())
    good = tmp_path / "good.tar"
    export_crate(s, "iris", good)
    bad = tmp_path / "bad.tar"
    with tarfile.open(good) as src, tarfile.open(bad, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            fh = src.extractfile(member)
            data = fh.read() if fh else None
            if member.name == SBOM_FILE and data is not None:
                doc = json.loads(data)
                doc["metadata"]["component"]["version"] = "sha256:" + "1" * 64
                data = json.dumps(doc).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    dest = Store(tmp_path / "dest")
    with pytest.raises(IntegrityError, match=r"refusing the archive: sbom\.cdx\.json"):
        import_crate(dest, bad)
    assert not dest.crates_dir.exists() or not any(dest.crates_dir.iterdir())


def test_crate_files_of_a_crate_without_sbom(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    crate = hand_crate(s, "iris", iris_onnx_bytes()).record.path
    manifest = load_manifest(crate)
    assert SBOM_FILE in crate_files(manifest, crate)
    (crate / SBOM_FILE).unlink()
    assert SBOM_FILE not in crate_files(manifest, crate)
    assert SBOM_FILE in crate_files(manifest)  # without the folder: the full list
