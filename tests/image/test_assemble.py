"""The modelcrate layers and the image config, on a synthetic base and a real crate folder."""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
from pathlib import Path

import pytest

from modelcrate.crate.errors import IntegrityError
from modelcrate.crate.store import Store
from modelcrate.errors import InputError
from modelcrate.image.assemble import (
    APP_ROOT,
    CRATE_ROOT,
    USER,
    app_files,
    app_layer,
    assemble,
    default_app_source,
    image_config,
    model_layer,
    read_crate,
    source_digest,
)
from modelcrate.image.base import BaseImage, resolve_base
from modelcrate.image.tarlayer import LayerFile
from tests.image.assembly_helpers import (
    crate_with_lock,
    debian_like_base,
    python_files,
    write_base,
)

LOCK = b"# requirements.lock (test)\ntinypkg==1.0 \\\n    --hash=sha256:" + b"1" * 64 + b"\n"
MODEL = b"fake onnx model bytes\n"
MODEL_DIFF_ID = "sha256:32ec10f6288b790460a89d574a20cd467203812705fa9bedf93341eac31629bb"


def _members(blob: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.fixture
def crate_dir(tmp_path: Path) -> Path:
    return crate_with_lock(Store(tmp_path / "store"), "iris", LOCK, model=MODEL)


@pytest.fixture
def base(tmp_path: Path) -> BaseImage:
    return resolve_base(debian_like_base(tmp_path / "base"))


def test_read_crate_keeps_the_verified_bytes(crate_dir: Path) -> None:
    crate = read_crate(crate_dir)
    assert crate.model == (("model/model.onnx", MODEL),)
    assert [name for name, _ in crate.side] == [
        "crate.yaml",
        "requirements.lock",
        "scan.json",
        "signature.json",
    ]
    assert dict(crate.side)["requirements.lock"] == LOCK


def test_a_tampered_crate_is_refused(crate_dir: Path) -> None:
    (crate_dir / "model" / "model.onnx").chmod(0o644)
    (crate_dir / "model" / "model.onnx").write_bytes(b"swapped")
    with pytest.raises(IntegrityError):
        read_crate(crate_dir)


def test_model_layer(crate_dir: Path) -> None:
    layer = model_layer(read_crate(crate_dir))
    members = _members(layer.blob)
    assert sorted(members) == ["opt", "opt/modelcrate", "opt/modelcrate/crate", *_model_paths()]
    info = members["opt/modelcrate/crate/model/model.onnx"]
    assert (info.mode, info.uid, info.gid, info.mtime, info.size) == (0o644, 0, 0, 0, len(MODEL))
    # golden: the uncompressed tar of these bytes never changes (the gzip may, with zlib)
    assert layer.diff_id == MODEL_DIFF_ID


def _model_paths() -> list[str]:
    return ["opt/modelcrate/crate/model", "opt/modelcrate/crate/model/model.onnx"]


def test_app_files_are_the_package_without_bytecode(tmp_path: Path) -> None:
    source = tmp_path / "modelcrate"
    shutil.copytree(default_app_source(), source)
    (source / "__pycache__").mkdir(exist_ok=True)
    (source / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"pyc")
    (source / ".swp").write_bytes(b"editor")
    files = app_files(source)
    paths = {f.path for f in files}
    assert f"{APP_ROOT}/modelcrate/__main__.py" in paths
    assert f"{APP_ROOT}/modelcrate/serve/app.py" in paths
    assert f"{APP_ROOT}/modelcrate/py.typed" in paths
    assert not [p for p in paths if "__pycache__" in p or p.endswith((".pyc", ".swp"))]
    assert all(f.mode in (0o644, 0o755) for f in files)


def test_app_source_must_be_the_package(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not the modelcrate package"):
        app_files(tmp_path)


def test_source_digest_follows_the_code(tmp_path: Path) -> None:
    source = tmp_path / "modelcrate"
    shutil.copytree(default_app_source(), source, ignore=shutil.ignore_patterns("__pycache__"))
    before = source_digest(app_files(source))
    assert before == source_digest(app_files(source))
    (source / "serve" / "app.py").write_text((source / "serve" / "app.py").read_text() + "# x\n")
    assert source_digest(app_files(source)) != before


def test_app_layer_holds_the_crate_files_and_the_runtime(crate_dir: Path) -> None:
    layer = app_layer(read_crate(crate_dir), app_files(default_app_source()))
    members = _members(layer.blob)
    for name in ("crate.yaml", "requirements.lock", "scan.json", "signature.json"):
        assert f"{CRATE_ROOT.lstrip('/')}/{name}" in members
    assert f"{APP_ROOT.lstrip('/')}/modelcrate/cli/serve_click.py" in members
    assert not [n for n in members if n.startswith("opt/modelcrate/crate/model")]


def test_image_config(crate_dir: Path, base: BaseImage) -> None:
    crate = read_crate(crate_dir)
    m = crate.manifest
    config = image_config(
        base, m, revision="sha256:" + "a" * 64, has_sbom=True, lock_sha256="b" * 64
    )
    doc = config.to_json(["sha256:" + "0" * 64] * 5)
    run = doc["config"]
    assert run["User"] == USER == "10001:10001"
    assert run["Entrypoint"] == [
        "/usr/bin/python3.11",
        "-m",
        "modelcrate",
        "serve",
        "/opt/modelcrate/crate",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    assert run["ExposedPorts"] == {"8080/tcp": {}}
    assert run["WorkingDir"] == "/opt/modelcrate"
    assert run["Env"][0].startswith("PATH=")  # the base's PATH is kept
    assert "PYTHONPATH=/opt/modelcrate/app:/opt/modelcrate/site-packages" in run["Env"]
    assert "PYTHONDONTWRITEBYTECODE=1" in run["Env"]
    health = run["Healthcheck"]
    assert health["Test"][:3] == ["CMD", "/usr/bin/python3.11", "-c"]
    assert "/readyz" in health["Test"][3]
    labels = run["Labels"]
    assert labels["org.opencontainers.image.title"] == "iris"
    assert labels["org.opencontainers.image.version"] == m.version
    assert labels["org.opencontainers.image.created"] == m.created == doc["created"]
    assert labels["org.opencontainers.image.revision"] == "sha256:" + "a" * 64
    assert labels["org.opencontainers.image.base.digest"] == base.digest
    # a local base is named by its tag, never by this machine's path: the image is the same
    # wherever the layout lies
    assert labels["org.opencontainers.image.base.name"] == "base"
    assert labels["io.modelcrate.crate.version"] == m.version
    assert labels["io.modelcrate.lock.sha256"] == "b" * 64
    assert labels["io.modelcrate.sbom"] == "/opt/modelcrate/crate/sbom.cdx.json"
    assert [h["created_by"] for h in doc["history"]][:2] == [
        "synthetic layer 0",
        "synthetic layer 1",
    ]
    assert len(doc["history"]) == 5


def test_our_env_overrides_the_base_and_history_is_filled_in(
    tmp_path: Path, crate_dir: Path
) -> None:
    from modelcrate.image.layout import read_oci_layout, write_oci_layout
    from modelcrate.image.oci import ImageConfig, build_image
    from modelcrate.image.tarlayer import build_layer

    layers = [build_layer(python_files()), build_layer([LayerFile("/etc/hostname", b"x\n")])]
    config = ImageConfig(env=("PATH=/usr/bin", "PYTHONPATH=/elsewhere", "LANG=C.UTF-8"))
    write_oci_layout(build_image(config, layers), tmp_path / "nohist", "t")
    assert "history" not in read_oci_layout(tmp_path / "nohist", "t").config
    base = resolve_base(f"oci:{tmp_path / 'nohist'}:t")
    cfg = image_config(
        base, read_crate(crate_dir).manifest, revision="r", has_sbom=False, lock_sha256="c" * 64
    )
    doc = cfg.to_json([])
    env = doc["config"]["Env"]
    assert env[:2] == ["PATH=/usr/bin", "LANG=C.UTF-8"]
    assert [e for e in env if e.startswith("PYTHONPATH=")] == [
        "PYTHONPATH=/opt/modelcrate/app:/opt/modelcrate/site-packages"
    ]
    assert len(doc["history"]) == 2 + 3  # one plain entry per base layer, then ours
    assert "io.modelcrate.sbom" not in doc["config"]["Labels"]


def test_assemble_puts_our_layers_on_top(tmp_path: Path, crate_dir: Path, base: BaseImage) -> None:
    from modelcrate.image.tarlayer import build_layer

    crate = read_crate(crate_dir)
    wheels = build_layer([LayerFile("/opt/modelcrate/site-packages/tinypkg/__init__.py", b"")])
    model = model_layer(crate)
    app = app_layer(crate, app_files(default_app_source()))
    config = image_config(base, crate.manifest, revision="r", has_sbom=False, lock_sha256="d" * 64)
    image = assemble(base, (wheels, model, app), config)
    assert [layer.digest for layer in image.layers] == [
        *(layer.digest for layer in base.image.layers),
        wheels.digest,
        model.digest,
        app.digest,
    ]
    assert image.config["rootfs"]["diff_ids"][-3:] == [wheels.diff_id, model.diff_id, app.diff_id]
    assert image.manifest.media_type == "application/vnd.oci.image.manifest.v1+json"
    docker = assemble(base, (wheels, model, app), config, docker=True)
    assert docker.manifest.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert docker.config_blob == image.config_blob  # the same config and blobs, other types


def test_base_history_with_wrong_layer_count_is_replaced(tmp_path: Path, crate_dir: Path) -> None:
    ref = write_base(tmp_path / "b", [python_files()])
    base = resolve_base(ref)
    cfg = image_config(
        base, read_crate(crate_dir).manifest, revision="r", has_sbom=False, lock_sha256="e" * 64
    )
    assert len(cfg.history) == 4
