"""The same inputs give the same bytes: crates, exports and images, whatever the clock, the store,
the folder, the hash seed or the checkout.

(a) builds in two stores under different clocks (time frozen differently, then a real second
apart, no ``SOURCE_DATE_EPOCH``) export byte-identical tars, for an ONNX and a skops crate;
(b) builds in fresh ``git clone``s of this repository's HEAD, in subprocesses with other hash
seeds, other folders and other clocks, give the same export bytes and the same image digest
(image: an OCI layout on a synthetic base, wheels from a local wheelhouse, no network).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelcrate.crate.archive import export_crate
from modelcrate.crate.build import build
from modelcrate.crate.store import Store
from tests.crate.helpers import FEATURES, snapshot

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Model files as people save them: a pickled classifier (-> ONNX), a joblib KernelRidge
    (-> skops)."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("models")
    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = list(FEATURES)
    (root / "iris.pkl").write_bytes(
        pickle.dumps(LogisticRegression(max_iter=300).fit(x, y), protocol=4)
    )
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(50, 3))
    joblib.dump(KernelRidge(alpha=0.3).fit(xs, xs @ [1.0, 0.5, -1.0]), root / "ridge.joblib")
    return {"onnxruntime": root / "iris.pkl", "skops": root / "ridge.joblib"}


def _store(path: Path, seed_lock: Callable[[Store, str], None], runtime: str) -> Store:
    store = Store(path)
    seed_lock(store, runtime)
    return store


@pytest.fixture
def clocks(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Set the wall clock (``time.time``/``time.time_ns``) to a given Unix time."""

    def set_clock(at: float) -> None:
        monkeypatch.setattr(time, "time", lambda: at)
        monkeypatch.setattr(time, "time_ns", lambda: int(at * 1e9))

    return set_clock


@pytest.mark.parametrize("runtime", ["onnxruntime", "skops"])
def test_two_stores_two_clocks_same_export_bytes(  # noqa: PLR0917 (pytest fixtures)
    runtime: str,
    models: dict[str, Path],
    tmp_path: Path,
    seed_lock: Callable[[Store, str], None],
    clocks: Callable[[float], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "SOURCE_DATE_EPOCH" not in os.environ
    sources = []
    for where in ("here", "there/and/deeper"):  # the same file in two folders
        (tmp_path / where).mkdir(parents=True)
        sources.append(Path(shutil.copy2(models[runtime], tmp_path / where)))
    clocks(1_000_000_000.0)  # 2001
    a = build(sources[0], name="m", store=_store(tmp_path / "a", seed_lock, runtime))
    monkeypatch.undo()
    time.sleep(1.1)  # the real clock moved on, too
    clocks(1_900_000_000.0)  # 2030
    b = build(sources[1], name="m", store=_store(tmp_path / "b", seed_lock, runtime))
    monkeypatch.undo()
    assert a.manifest.runtime.kind == runtime
    assert a.version == b.version
    assert snapshot(a.path) == snapshot(b.path)  # every file, crate.yaml and the SBOM included
    for suffix in ("tar", "tar.gz"):
        first = export_crate(Store(tmp_path / "a"), "m", tmp_path / f"a.{suffix}")
        second = export_crate(Store(tmp_path / "b"), "m", tmp_path / f"b.{suffix}")
        assert first.sha256 == second.sha256, suffix
    assert a.manifest.created == "1970-01-01T00:00:00Z"
    for path in a.path.rglob("*"):  # no folder of the build machine in any file
        assert not path.is_file() or str(tmp_path).encode() not in path.read_bytes(), path
    sbom = json.loads((a.path / "sbom.cdx.json").read_bytes())
    assert sbom["metadata"]["timestamp"] == "1970-01-01T00:00:00Z"


def test_when_a_crate_was_stored_is_in_the_index_not_the_crate(
    models: dict[str, Path],
    tmp_path: Path,
    seed_lock: Callable[[Store, str], None],
    clocks: Callable[[float], None],
) -> None:
    clocks(1_000_000_000.0)
    store = _store(tmp_path / "s", seed_lock, "onnxruntime")
    built = build(models["onnxruntime"], name="m", store=store)
    record = store.get("m")
    assert record.stored == "2001-09-09T01:46:40Z"
    assert record.created == built.manifest.created == "1970-01-01T00:00:00Z"
    clocks(1_900_000_000.0)
    again = build(models["onnxruntime"], name="m", store=store)
    assert again.existed
    assert store.get("m").stored == "2001-09-09T01:46:40Z"  # the first time it was stored


def test_source_date_epoch_is_the_only_date(
    models: dict[str, Path],
    tmp_path: Path,
    seed_lock: Callable[[Store, str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Variant: with SOURCE_DATE_EPOCH the dates follow it, and still not the clock."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a = build(models["skops"], name="m", store=_store(tmp_path / "a", seed_lock, "skops"))
    time.sleep(1.1)
    b = build(models["skops"], name="m", store=_store(tmp_path / "b", seed_lock, "skops"))
    assert a.manifest.created == "2023-11-14T22:13:20Z"
    assert snapshot(a.path) == snapshot(b.path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000001")
    c = build(models["skops"], name="m", store=_store(tmp_path / "c", seed_lock, "skops"))
    assert c.version == a.version  # the date is not part of what the crate is
    assert c.manifest.created == "2023-11-14T22:13:21Z"


# -- other processes, other CPUs ----------------------------------------------------------------

_BUILD = r"""
import json, sys
from pathlib import Path
from modelcrate.crate.archive import export_crate
from modelcrate.crate.build import build
from modelcrate.crate.lockfile import lock_request
from modelcrate.crate.store import Store

args = json.loads(sys.argv[1])
out = Path(args["out"])
store = Store(out / "store")
store.locks_dir.mkdir(parents=True)
key = lock_request(args["runtime"], "3.11").key()
(store.locks_dir / f"{key}.lock").write_bytes(Path(args["lock"]).read_bytes())
built = build(Path(args["model"]), name="m", store=store)
print(json.dumps({"export": export_crate(store, "m", out / "m.tar").sha256,
                  "runtime": built.manifest.runtime.kind}))
"""


def _build_elsewhere(
    model: Path, lock: bytes, out: Path, env: dict[str, str], runtime: str = "onnxruntime"
) -> dict[str, str]:
    """Build and export ``model`` in a fresh interpreter with ``env`` added."""
    out.mkdir(parents=True)
    (out / "lock").write_bytes(lock)
    args = {"model": str(model), "out": str(out), "lock": str(out / "lock"), "runtime": runtime}
    base = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "PYTHONHASHSEED")}
    proc = subprocess.run(
        [sys.executable, "-c", _BUILD, json.dumps(args)],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["runtime"] == runtime
    return result


@pytest.fixture(scope="module")
def more_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Estimators whose conversion or parity check used to depend on the process or the CPU."""
    from sklearn.datasets import load_iris
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    root = tmp_path_factory.mktemp("more-models")
    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = list(FEATURES)
    fitted = {
        "mlp": make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=300, random_state=0),
        ),
        "mlp-regressor": make_pipeline(
            StandardScaler(),
            MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=300, random_state=0),
        ),
        "knn": KNeighborsClassifier(),
        "svc": SVC(probability=True, random_state=0),
    }
    out = {}
    for name, model in fitted.items():
        target = x["sepal_length"] * 137.0 if name == "mlp-regressor" else y
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the MLPs do not converge in 300 steps
            model.fit(x, target)
        out[name] = root / f"{name}.pkl"
        out[name].write_bytes(pickle.dumps(model, protocol=5))
    return out


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 BLAS kernels")
@pytest.mark.parametrize("name", ["mlp", "mlp-regressor"])
def test_another_cpu_builds_the_same_bytes(
    name: str, more_models: dict[str, Path], real_locks: Callable[[str], bytes], tmp_path: Path
) -> None:
    """OpenBLAS's generic SSE3 kernels and one thread stand in for another machine: the
    original model's float64 outputs move in the last bits, so the measured parity difference
    does; the crate records what does not move."""
    lock = real_locks("onnxruntime")
    native = _build_elsewhere(more_models[name], lock, tmp_path / "a", {"SOURCE_DATE_EPOCH": "9"})
    generic = {
        "OPENBLAS_CORETYPE": "Prescott",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "SOURCE_DATE_EPOCH": "9",  # the same date: only the machine differs
    }
    other = _build_elsewhere(more_models[name], lock, tmp_path / "b", generic)
    assert native["export"] == other["export"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["knn", "svc"])
def test_the_hash_seed_does_not_change_the_onnx(
    name: str, more_models: dict[str, Path], real_locks: Callable[[str], bytes], tmp_path: Path
) -> None:
    """skl2onnx lists the graph's opsets from a set: their order followed PYTHONHASHSEED."""
    lock = real_locks("onnxruntime")
    results = {
        seed: _build_elsewhere(more_models[name], lock, tmp_path / seed, {"PYTHONHASHSEED": seed})[
            "export"
        ]
        for seed in ("1", "2", "3", "4")
    }
    assert len(set(results.values())) == 1, results


# -- (b) fresh clones ---------------------------------------------------------------------------

_SCRIPT = r"""
import json, sys
from pathlib import Path
import modelcrate
from modelcrate.crate.archive import export_crate
from modelcrate.crate.build import build
from modelcrate.crate.lockfile import lock_request
from modelcrate.crate.store import Store
from modelcrate.image.containerize import containerize

args = json.loads(sys.argv[1])
out = Path(args["out"])
store = Store(out / "store")
key = lock_request(args["runtime"], "3.11").key()
store.locks_dir.mkdir(parents=True)
(store.locks_dir / f"{key}.lock").write_bytes(Path(args["lock"]).read_bytes())
built = build(Path(args["model"]), name="repro", store=store)
exported = export_crate(store, built.ref, out / "crate.tar")
image = containerize(
    built.ref, base=args["base"], store=store, output=f"oci:{out / 'layout'}",
    pip_args=tuple(args["pip_args"]),
)
print(json.dumps({"module": modelcrate.__file__, "version": built.version,
                  "export": exported.sha256, "image": image.digest}))
"""


@pytest.fixture(scope="module")
def image_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A wheelhouse and the lock pinning it (the crates' requirements.lock), a base layout."""
    from tests.image.assembly_helpers import debian_like_base, offline_pip, wheelhouse

    root = tmp_path_factory.mktemp("image-inputs")
    folder, lock = wheelhouse(root / "wheels")
    (root / "requirements.lock").write_bytes(lock)
    return {
        "lock": str(root / "requirements.lock"),
        "base": debian_like_base(root / "base"),
        "pip_args": list(offline_pip(folder)),
    }


def _git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"git {' '.join(args)} failed here: {proc.stderr.strip()[:200]}")
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def head() -> str:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    return _git("rev-parse", "HEAD", cwd=REPO)


def _clone(head: str, into: Path) -> Path:
    _git("clone", "--quiet", "--no-hardlinks", "--no-checkout", str(REPO), str(into), cwd=REPO)
    _git("checkout", "--quiet", head, cwd=into)
    return into


def _run(
    checkout: Path, runtime: str, model: Path, inputs: dict[str, Any], out: Path, *, seed: str
) -> dict[str, str]:
    out.mkdir(parents=True)
    args = {"runtime": runtime, "model": str(model), "out": str(out), **inputs}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SOURCE_DATE_EPOCH", "PYTHONPATH", "PYTHONHASHSEED")
    }
    env |= {"PYTHONPATH": str(checkout / "src"), "PYTHONHASHSEED": seed, "TZ": "Pacific/Kiritimati"}
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(args)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(result["module"]).is_relative_to(checkout / "src")  # the checkout's code ran
    return result


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnxruntime", "skops"])
def test_fresh_clones_give_the_same_export_and_image(
    runtime: str,
    head: str,
    models: dict[str, Path],
    image_inputs: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Two clones of HEAD at two paths, two hash seeds, two clocks a second apart."""
    results = []
    for i, seed in enumerate(("1", "2")):
        clone = _clone(head, tmp_path / f"clone-{i}" / "modelcrate")
        if i:
            time.sleep(1.1)
        results.append(
            _run(clone, runtime, models[runtime], image_inputs, tmp_path / f"o{i}", seed=seed)
        )
    first, second = results
    assert first["version"] == second["version"]
    assert first["export"] == second["export"]
    assert first["image"] == second["image"]
    a = (tmp_path / "o0" / "crate.tar").read_bytes()
    assert hashlib.sha256(a).hexdigest() == first["export"]
    assert a == (tmp_path / "o1" / "crate.tar").read_bytes()


@pytest.mark.slow
def test_the_working_tree_builds_what_a_fresh_clone_builds(
    head: str, models: dict[str, Path], image_inputs: dict[str, Any], tmp_path: Path
) -> None:
    """The checkout in use against a fresh clone of its HEAD (skipped while src/ has changes
    not committed: the image ships the source, so it differs by design)."""
    if _git("status", "--porcelain", "--", "src", cwd=REPO):
        pytest.skip("src/ has uncommitted changes; commit them to compare with a fresh clone")
    clone = _clone(head, tmp_path / "clone" / "modelcrate")
    model = models["onnxruntime"]
    fresh = _run(clone, "onnxruntime", model, image_inputs, tmp_path / "o0", seed="0")
    here = _run(REPO, "onnxruntime", model, image_inputs, tmp_path / "o1", seed="7")
    assert (here["version"], here["export"], here["image"]) == (
        fresh["version"],
        fresh["export"],
        fresh["image"],
    )


def test_skops_bytes_do_not_depend_on_the_zlib_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another deflate implementation (zlib-ng, another level) stands in for another machine."""
    import io
    import zipfile
    import zlib

    import numpy as np
    import skops.io as sio
    from sklearn.kernel_ridge import KernelRidge

    from modelcrate.flavors.skops_fallback import normalize

    xs = np.random.default_rng(3).normal(size=(40, 3))
    raw = sio.dumps(KernelRidge().fit(xs, xs[:, 0]))
    here = normalize(raw)
    real = zlib.compressobj
    monkeypatch.setattr(zlib, "compressobj", lambda *a, **k: real(1, zlib.DEFLATED, -15))
    assert normalize(raw) == here
    infos = zipfile.ZipFile(io.BytesIO(here)).infolist()
    assert {(i.compress_type, i.create_system, i.date_time) for i in infos} == {
        (zipfile.ZIP_STORED, 3, (1980, 1, 1, 0, 0, 0))
    }
