"""Imported crates vouch for nothing: trust comes from the allowlist, sizes from crate.yaml are
checked before anything is written, the model files are scanned again.

Every forged archive here is self-consistent (crate.yaml's digests and version match the forged
files: see :mod:`tests.crate.forge`); the checks that refuse them never take the crate's word.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelcrate.crate import archive
from modelcrate.crate.archive import export_crate, import_crate
from modelcrate.crate.build import build
from modelcrate.crate.errors import IntegrityError, ScanFailed, StoreError
from modelcrate.crate.layout import verify_crate
from modelcrate.crate.lockfile import lock_request
from modelcrate.crate.manifest import load_manifest
from modelcrate.crate.store import Store
from modelcrate.errors import InputError
from modelcrate.runtime import load_predictor
from tests.crate import forge
from tests.crate.forge import edit_skops, estimator_attrs, member, node, object_node
from tests.crate.helpers import hand_crate, iris_onnx_bytes, snapshot

SKOPS = "model/model.skops"


@pytest.fixture(scope="module")
def skops_crate(
    tmp_path_factory: pytest.TempPathFactory, real_locks: Callable[[str], bytes]
) -> Path:
    """A real crate built from a pickled KernelRidge (no ONNX converter: the skops fallback)."""
    import numpy as np
    from sklearn.kernel_ridge import KernelRidge

    root = tmp_path_factory.mktemp("skops")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    model = KernelRidge(alpha=1.0).fit(x, x @ [1.0, -2.0, 0.5])
    src = root / "ridge.pkl"
    src.write_bytes(pickle.dumps(model, protocol=5))
    store = Store(root / "store")
    request = lock_request("skops", "3.11")
    store.locks_dir.mkdir(parents=True)
    (store.locks_dir / f"{request.key()}.lock").write_bytes(real_locks("skops"))
    built = build(src, name="ridge", store=store)
    assert built.manifest.runtime.kind == "skops"
    return built.path


@pytest.fixture(scope="module")
def onnx_crate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = Store(tmp_path_factory.mktemp("onnx") / "store")
    return hand_crate(store, "iris", iris_onnx_bytes()).record.path


@pytest.fixture
def dest(tmp_path: Path, onnx_crate: Path) -> Store:
    """The store imports go to, holding one crate already."""
    store = Store(tmp_path / "dest")
    hand_crate(store, "kept", (onnx_crate / "model/model.onnx").read_bytes())
    return store


def _skops(crate: Path, edit: Callable[[dict[str, Any]], None]) -> dict[str, bytes]:
    return {SKOPS: edit_skops((crate / SKOPS).read_bytes(), edit)}


def _set_kernel(value: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def edit(schema: dict[str, Any]) -> None:
        estimator_attrs(schema)["kernel"] = value

    return edit


def _refused_at_import(dest: Store, tar: Path) -> ScanFailed:
    before = snapshot(dest.root)
    with pytest.raises(ScanFailed) as exc:
        import_crate(dest, tar)
    assert exc.value.exit_code == 1
    assert exc.value.path == str(tar)
    assert exc.value.hint
    assert snapshot(dest.root) == before  # nothing committed, no staging left behind
    return exc.value


def _symbols(err: ScanFailed) -> dict[str, str]:
    return {f.symbol or f.rule_id: f.severity.name for f in err.report.findings}


def _unpack(tar: Path, into: Path) -> Path:
    """The forged crate as a folder, as if someone had put it in a store by hand."""
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return into


# -- skops trust: from the allowlist, never from the crate ------------------------------------


def test_trust_widened_to_eval_is_refused_at_import_and_at_load(
    skops_crate: Path, dest: Store, tmp_path: Path
) -> None:
    """signature.json trusts builtins.eval and the model's kernel is eval: refused."""
    tar = forge.forge(
        skops_crate,
        tmp_path / "eval.tar",
        model=_skops(skops_crate, _set_kernel(node("builtins", "eval"))),
        trust=["builtins.eval"],
    )
    err = _refused_at_import(dest, tar)
    assert _symbols(err)["builtins.eval"] == "CRITICAL"
    assert "builtins.eval" in err.message
    assert any(f.rule_id == "skops.type" for f in err.report.findings)
    # and before serving: the runtime recomputes trust whatever the crate claims
    crate = _unpack(tar, tmp_path / "by-hand")
    manifest = verify_crate(crate)  # self-consistent: the digests all agree
    with pytest.raises(InputError, match=r"outside modelcrate's allowlist: builtins\.eval"):
        load_predictor(crate, "skops", [SKOPS], manifest.signature_obj())


def test_unknown_class_is_refused_before_it_runs(
    skops_crate: Path, dest: Store, tmp_path: Path
) -> None:
    """A class outside the allowlist whose __setstate__ runs code, trusted by the crate."""
    gadget = f"{forge.Gadget.__module__}.Gadget"
    tar = forge.forge(
        skops_crate,
        tmp_path / "gadget.tar",
        model=_skops(skops_crate, _set_kernel(object_node(forge.Gadget.__module__, "Gadget"))),
        trust=[gadget],
    )
    err = _refused_at_import(dest, tar)
    assert _symbols(err)[gadget] == "HIGH"
    crate = _unpack(tar, tmp_path / "by-hand")
    manifest = verify_crate(crate)
    forge.RAN.clear()
    with pytest.raises(InputError, match="Gadget"):
        load_predictor(crate, "skops", [SKOPS], manifest.signature_obj())
    assert forge.RAN == []  # its code never ran


def test_a_type_skops_trusts_by_default_is_judged_by_the_allowlist(
    skops_crate: Path, dest: Store, tmp_path: Path
) -> None:
    """builtins.map: skops trusts it without being told (get_untrusted_types omits it), the
    allowlist does not; the crate's trust list is left as built."""
    tar = forge.forge(
        skops_crate,
        tmp_path / "map.tar",
        model=_skops(skops_crate, _set_kernel(node("builtins", "map", "TypeNode"))),
    )
    err = _refused_at_import(dest, tar)
    assert "builtins.map" in _symbols(err)
    crate = _unpack(tar, tmp_path / "by-hand")
    manifest = verify_crate(crate)
    with pytest.raises(InputError, match=r"builtins\.map"):
        load_predictor(crate, "skops", [SKOPS], manifest.signature_obj())


def test_a_bound_method_and_an_unknown_bit_generator_are_refused(
    skops_crate: Path, dest: Store, tmp_path: Path
) -> None:
    """Names skops imports that are not __module__/__class__ pairs: a method, a bit generator."""
    method = node(
        "sklearn.kernel_ridge",
        "KernelRidge",
        "MethodNode",
        content={"func": "fit", "obj": object_node("sklearn.kernel_ridge", "KernelRidge")},
    )
    tar = forge.forge(
        skops_crate, tmp_path / "method.tar", model=_skops(skops_crate, _set_kernel(method))
    )
    assert "sklearn.kernel_ridge.KernelRidge.fit" in _symbols(_refused_at_import(dest, tar))

    name = json.dumps("seed")  # skops would call numpy.random.seed(...)
    generator = node(
        "numpy.random._generator",
        "Generator",
        "RandomGeneratorNode",
        content={
            "bit_generator": {"content": {"bit_generator": {"content": name}}},
            "seed_seq": {},
        },
    )
    tar = forge.forge(
        skops_crate, tmp_path / "rng.tar", model=_skops(skops_crate, _set_kernel(generator))
    )
    assert "numpy.random.seed" in _symbols(_refused_at_import(dest, tar))


def test_a_widened_trust_list_alone_is_refused(
    skops_crate: Path, dest: Store, tmp_path: Path
) -> None:
    """The model is the built one; only the crate's own list claims more."""
    tar = forge.forge(skops_crate, tmp_path / "claim.tar", trust=["builtins.eval", "posix.system"])
    err = _refused_at_import(dest, tar)
    claims = {f.symbol for f in err.report.findings if f.rule_id == "skops.trust-claim"}
    assert claims == {"builtins.eval", "posix.system"}
    crate = _unpack(tar, tmp_path / "by-hand")
    manifest = verify_crate(crate)
    with pytest.raises(InputError, match="claims trust for"):
        load_predictor(crate, "skops", [SKOPS], manifest.signature_obj())


def test_trust_is_recomputed_not_read(skops_crate: Path, dest: Store, tmp_path: Path) -> None:
    """An empty or absent trust list does not stop a model the allowlist admits from loading:
    the list is never the source of trust, either way."""
    import numpy as np

    tar = forge.forge(skops_crate, tmp_path / "empty.tar", trust=[])
    committed = import_crate(dest, tar)
    manifest = load_manifest(committed.record.path)
    predictor = load_predictor(committed.record.path, "skops", [SKOPS], manifest.signature_obj())
    out = predictor.predict({"input": np.ones((2, 3), dtype=np.float32)})
    assert out["prediction"].shape == (2,)


def test_the_built_skops_crate_round_trips(skops_crate: Path, dest: Store, tmp_path: Path) -> None:
    """No false alarm: a crate build made exports, imports and loads."""
    store = Store(skops_crate.parent.parent)
    tar = export_crate(store, "ridge", tmp_path / "ridge.tar").path
    committed = import_crate(dest, tar)
    manifest = load_manifest(committed.record.path)
    load_predictor(committed.record.path, "skops", [SKOPS], manifest.signature_obj())


# -- the model files are scanned again ---------------------------------------------------------


class _Shell:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


class _Popen:
    def __reduce__(self) -> tuple[Any, ...]:
        return (subprocess.Popen, (["true"],))


def test_a_pickle_in_place_of_the_skops_model_is_refused(
    skops_crate: Path, dest: Store, tmp_path: Path
) -> None:
    tar = forge.forge(
        skops_crate, tmp_path / "pickle.tar", model={SKOPS: pickle.dumps(_Shell(), protocol=4)}
    )
    err = _refused_at_import(dest, tar)
    assert any(f.rule_id == "pickle.global" and f.severity.name == "CRITICAL"
               for f in err.report.findings)  # fmt: skip
    assert "system" in err.message


def test_a_joblib_pickle_in_place_of_the_onnx_model_is_refused(
    onnx_crate: Path, dest: Store, tmp_path: Path
) -> None:
    """Variant: another format's slot, another writer (joblib, compressed), another callable."""
    import joblib

    buf = io.BytesIO()
    joblib.dump({"weights": [1.0, 2.0], "hook": _Popen()}, buf, compress=3)
    tar = forge.forge(
        onnx_crate, tmp_path / "joblib.tar", model={"model/model.onnx": buf.getvalue()}
    )
    err = _refused_at_import(dest, tar)
    assert any("Popen" in (f.symbol or "") for f in err.report.findings)


# -- sizes: checked against crate.yaml before anything is written ------------------------------


@pytest.fixture
def no_staging(dest: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any write into ``dest`` (made first) fails the test: the refusal must come first."""

    def staging(self: Store) -> Iterator[Path]:
        raise AssertionError("the import started writing before refusing")

    monkeypatch.setattr(Store, "staging", staging)


def test_a_member_bigger_than_declared_is_refused_before_writing(
    onnx_crate: Path, dest: Store, tmp_path: Path, no_staging: None
) -> None:
    model = (onnx_crate / "model/model.onnx").read_bytes()
    tar = forge.forge(
        onnx_crate,
        tmp_path / "big.tar",
        model={"model/model.onnx": model + b"\0" * 4096},
        declared={"model/model.onnx": len(model)},
    )
    with pytest.raises(IntegrityError, match=r"bytes but crate\.yaml declares"):
        import_crate(dest, tar)


def test_a_member_smaller_than_declared_is_refused_before_writing(
    onnx_crate: Path, dest: Store, tmp_path: Path, no_staging: None
) -> None:
    model = (onnx_crate / "model/model.onnx").read_bytes()
    tar = forge.forge(
        onnx_crate,
        tmp_path / "small.tar",
        model={"model/model.onnx": model[:100]},
        declared={"model/model.onnx": 16 * 1024**3},  # 16 GiB promised
    )
    with pytest.raises(IntegrityError, match="declares 17179869184"):
        import_crate(dest, tar)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([member("model/extra.bin")], "files the manifest does not list"),
        ([member("model/a.onnx"), member("model/b.onnx")], "files the manifest does not list"),
        ([member("model/sub", None, tarfile.DIRTYPE)], "holds no file the manifest lists"),
    ],
    ids=["one-more-file", "two-more-files", "empty-folder"],
)
@pytest.mark.usefixtures("no_staging")
def test_more_members_than_the_manifest_lists_are_refused_before_writing(
    onnx_crate: Path, dest: Store, tmp_path: Path, extra: list[forge.Extra], message: str
) -> None:
    tar = forge.forge(onnx_crate, tmp_path / "more.tar", extra=extra)
    with pytest.raises(IntegrityError, match=message):
        import_crate(dest, tar)


def test_the_total_is_capped_before_writing(
    onnx_crate: Path, dest: Store, tmp_path: Path, no_staging: None
) -> None:
    tar = forge.forge(onnx_crate, tmp_path / "ok.tar")
    with pytest.raises(IntegrityError, match="import limit of 1000 bytes") as exc:
        import_crate(dest, tar, max_bytes=1000)
    assert "--max-size" in (exc.value.hint or "")


def test_the_default_cap_applies(
    onnx_crate: Path, dest: Store, tmp_path: Path, no_staging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Variant: each member is small, their sum is over the (lowered) default."""
    tar = forge.forge(onnx_crate, tmp_path / "ok.tar")
    with tarfile.open(tar) as t:
        biggest = max(m.size for m in t.getmembers())
        total = sum(m.size for m in t.getmembers())
    monkeypatch.setattr(archive, "DEFAULT_MAX_IMPORT_BYTES", (biggest + total) // 2)
    with pytest.raises(IntegrityError, match="import limit"):
        import_crate(dest, tar)


def test_a_full_disk_is_refused_before_writing(
    onnx_crate: Path, dest: Store, tmp_path: Path, no_staging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    tar = forge.forge(onnx_crate, tmp_path / "ok.tar")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10, 10, 10))  # type: ignore[attr-defined]
    with pytest.raises(StoreError, match="bytes free"):
        import_crate(dest, tar)


def test_a_failure_while_writing_leaves_no_staging(
    onnx_crate: Path, dest: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted half way (Ctrl-C while a member streams): the store is as it was."""
    tar = forge.forge(onnx_crate, tmp_path / "ok.tar")
    before = snapshot(dest.root)
    calls = []

    def interrupted(*args: object) -> None:
        calls.append(args)
        raise KeyboardInterrupt

    monkeypatch.setattr(archive, "_extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_crate(dest, tar)
    assert calls
    assert snapshot(dest.root) == before
    assert not list(dest.root.glob(".stage-*"))


def test_the_expected_version_is_an_anchor_outside_the_archive(
    onnx_crate: Path, dest: Store, tmp_path: Path
) -> None:
    """A self-consistent forgery passes every digest; only a version from elsewhere stops it."""
    genuine = load_manifest(onnx_crate).version
    other = iris_onnx_bytes(c=0.3)
    tar = forge.forge(onnx_crate, tmp_path / "swap.tar", model={"model/model.onnx": other})
    with pytest.raises(IntegrityError, match="not the expected version"):
        import_crate(dest, tar, expect=genuine[:19])
    good = forge.forge(onnx_crate, tmp_path / "good.tar")
    assert import_crate(dest, good, expect=genuine).record.version == genuine
    with pytest.raises(InputError, match="not a version digest"):
        import_crate(dest, good, expect="latest")


def _with_pax_bomb(genuine: Path, out: Path, *, size: int, kind: bytes = tarfile.XHDTYPE) -> Path:
    """``genuine`` (a plain tar) behind a ``kind`` header (pax, GNU long name) declaring
    ``size`` bytes of zeros, gzip-compressed: a few hundred kB on disk."""
    import gzip

    record_head = b" comment="
    digits = len(str(size))
    body = size - digits - len(record_head) - 1
    info = tarfile.TarInfo("././@PaxHeader" if kind == tarfile.XHDTYPE else "././@LongLink")
    info.type, info.size = kind, size
    with gzip.open(out, "wb", compresslevel=1) as gz:
        gz.write(info.tobuf(format=tarfile.USTAR_FORMAT))
        gz.write(str(size).encode() + record_head if kind == tarfile.XHDTYPE else b"")
        left = body if kind == tarfile.XHDTYPE else size
        chunk = b"0" * (1 << 20)
        while left > 0:
            gz.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
        gz.write(b"\n" if kind == tarfile.XHDTYPE else b"")
        gz.write(b"\0" * (-size % 512))
        gz.write(genuine.read_bytes())
    return out


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME], ids=["pax", "gnu"])
def test_a_huge_header_is_refused_not_read(
    onnx_crate: Path, dest: Store, tmp_path: Path, kind: bytes
) -> None:
    """tarfile reads a pax or GNU long-name header whole, whatever size it declares."""
    import tracemalloc

    genuine = forge.forge(onnx_crate, tmp_path / "genuine.tar")
    bomb = _with_pax_bomb(genuine, tmp_path / "bomb.tar.gz", size=96 * 1024**2, kind=kind)
    assert bomb.stat().st_size < 2 * 1024**2
    before = snapshot(dest.root)
    tracemalloc.start()
    try:
        with pytest.raises(IntegrityError, match="bytes of metadata"):
            import_crate(dest, bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024**2
    assert snapshot(dest.root) == before


def test_a_harmless_pickle_is_still_not_a_crate_artifact(
    onnx_crate: Path, skops_crate: Path, dest: Store, tmp_path: Path
) -> None:
    """Nothing dangerous in it (the scan alone would pass it): a pickle never enters a crate,
    whatever crate.yaml calls it."""
    import numpy as np

    weights = pickle.dumps({"coef": np.arange(4.0), "classes": ["a", "b"]}, protocol=5)
    tar = forge.forge(onnx_crate, tmp_path / "benign.tar", model={"model/model.onnx": weights})
    err = _refused_at_import(dest, tar)
    high = [f.rule_id for f in err.report.findings if f.severity.name == "HIGH"]
    assert "format.mismatch" in high  # the scan itself finds nothing dangerous in it
    assert not [f for f in err.report.findings if f.severity.name == "CRITICAL"]
    assert "its content is pickle" in err.message or "format.mismatch" in err.message
    # variant: an ONNX graph where crate.yaml promises a skops archive
    onnx = (onnx_crate / "model/model.onnx").read_bytes()
    tar = forge.forge(skops_crate, tmp_path / "swapped.tar", model={SKOPS: onnx})
    rules = {f.rule_id for f in _refused_at_import(dest, tar).report.findings}
    assert "format.mismatch" in rules


@pytest.mark.parametrize(
    ("kind", "native", "artifact"),
    [
        ("xgboost.json", False, "onnx"),
        ("xgboost.ubj", True, "xgboost-json"),
        ("lightgbm.txt", True, "lightgbm-text"),
        ("sklearn.pkl", False, "onnx"),
    ],
)
def test_every_kind_of_built_crate_imports(  # noqa: PLR0917 (parameters and fixtures)
    kind: str,
    native: bool,
    artifact: str,
    tmp_path: Path,
    real_locks: Callable[[str], bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No false alarm: what build writes (ONNX, XGBoost JSON, LightGBM text; skops above)
    passes the import gate."""
    import lightgbm
    import numpy as np
    import xgboost
    from sklearn.ensemble import RandomForestRegressor

    from modelcrate.flavors import boosters

    rng = np.random.default_rng(4)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    src = tmp_path / f"model.{kind.split('.')[1]}"
    if kind.startswith("xgboost"):
        xgboost.XGBClassifier(n_estimators=4, max_depth=3).fit(x, y).save_model(src)
    elif kind.startswith("lightgbm"):
        booster = lightgbm.LGBMClassifier(n_estimators=4, verbose=-1).fit(x, y).booster_
        booster.save_model(src)
    else:
        model = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0).fit(x, x[:, 1])
        src.write_bytes(pickle.dumps(model, protocol=5))
    if native:  # as when onnxmltools cannot convert the booster: its own format is kept

        def no_onnx(*args: object, **kwargs: object) -> bytes:
            raise RuntimeError("no ONNX for this one")

        monkeypatch.setattr(boosters, "finalize", no_onnx)
    store = Store(tmp_path / "store")
    store.locks_dir.mkdir(parents=True)
    for runtime in ("onnxruntime", "xgboost", "lightgbm", "skops"):
        key = lock_request(runtime, "3.11").key()
        (store.locks_dir / f"{key}.lock").write_bytes(real_locks(runtime))
    built = build(src, name="m", store=store)
    assert [a.format for a in built.manifest.artifacts] == [artifact]
    tar = export_crate(store, "m", tmp_path / "m.tar").path
    committed = import_crate(Store(tmp_path / "dest"), tar)
    assert committed.record.version == built.version
