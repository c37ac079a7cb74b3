"""The Pydantic-free manifest reader of a server's start-up (``crate.manifest_view``): it reads
exactly what the full model reads, takes nothing the model would refuse, and the integrity
check works on it as on the model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelcrate.crate.errors import IntegrityError
from modelcrate.crate.layout import verify_crate
from modelcrate.crate.manifest import load_manifest
from modelcrate.crate.manifest_view import ManifestView, read_manifest_view
from modelcrate.errors import InputError
from modelcrate.serve.model import open_predictor, read_model_info
from tests.serve import crates


@pytest.fixture(scope="module")
def crate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return crates.iris(tmp_path_factory.mktemp("view")).crate_dir


def _copy(crate: Path, tmp_path: Path) -> Path:
    target = tmp_path / "crate"
    shutil.copytree(crate, target)
    return target


def test_a_built_manifest_reads_as_the_model_reads_it(crate: Path) -> None:
    view = read_manifest_view(crate)
    model = load_manifest(crate, verify=True)
    assert isinstance(view, ManifestView)
    assert dict(view) == model.model_dump(mode="json")
    assert view.compute_version() == model.compute_version() == view.version
    assert view.runtime.kind == model.runtime.kind
    assert [(a.path, a.sha256, a.size) for a in view.artifacts] == [
        (a.path, a.sha256, a.size) for a in model.artifacts
    ]
    assert view.signature_obj() == model.signature_obj()
    assert view.short_version == model.short_version
    from_view = read_model_info(crate)
    assert isinstance(from_view.manifest, ManifestView)
    assert from_view.signature == model.signature_obj()
    assert (from_view.name, from_view.version, from_view.runtime) == (
        model.name,
        model.version,
        model.runtime.kind,
    )
    assert verify_crate(crate, view) is view


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("name: iris", "name: iris2"),  # content changed, digest not: refused
        ("name: iris", "name: Iris"),  # an invalid name
        ("flavor: sklearn", "flavor: [sklearn]"),  # a wrong type
        ("lock_sha256:", "lock_sha256_x:"),  # a field missing
    ],
)
def test_anything_not_as_built_goes_to_the_model(
    crate: Path, tmp_path: Path, old: str, new: str
) -> None:
    copy = _copy(crate, tmp_path)
    yaml_path = copy / "crate.yaml"
    text = yaml_path.read_text()
    assert old in text
    yaml_path.write_text(text.replace(old, new, 1))
    assert read_manifest_view(copy) is None
    with pytest.raises(InputError):  # and the full model says what is wrong
        read_model_info(copy)


def test_the_integrity_check_reads_the_view(crate: Path, tmp_path: Path) -> None:
    copy = _copy(crate, tmp_path)
    info = read_model_info(copy)
    assert isinstance(info.manifest, ManifestView)
    model_file = copy / "model" / "model.onnx"
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match="does not match the sha256") as raised:
        open_predictor(info)
    assert raised.value.path == str(model_file)


def test_starting_a_server_of_an_all_float_model_imports_no_pydantic(crate: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from modelcrate.serve.app import build_app\n"
        "from modelcrate.serve.model import open_predictor, read_model_info\n"
        f"info = read_model_info(Path({str(crate)!r}))\n"
        "predictor = open_predictor(info)\n"
        "app = build_app(info, lambda: predictor)\n"
        "app.serving.load()\n"
        "assert app.serving.ready\n"
        "print([m for m in ('pydantic', 'fastapi', 'starlette') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
