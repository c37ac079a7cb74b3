"""requirements.lock: pinned to this environment, hashed, cached, clear errors offline."""

from __future__ import annotations

import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from modelcrate.crate import lockfile
from modelcrate.crate.lockfile import LockRequest, lock_request, resolve_lock
from modelcrate.errors import InputError


def test_request_pins_the_installed_runtime() -> None:
    req = lock_request("onnxruntime", "3.11")
    assert req.requirements == tuple(sorted(req.requirements))
    pins = dict(r.split("==") for r in req.requirements)
    assert pins["onnxruntime"] == metadata.version("onnxruntime")
    assert pins["numpy"] == metadata.version("numpy")
    assert pins["uvicorn[standard]"] == metadata.version("uvicorn")
    assert {"fastapi", "pydantic", "orjson", "pyyaml", "typer", "click", "rich"} <= set(pins)
    # never the training stack
    assert not {"scikit-learn", "skl2onnx", "onnx", "pandas", "torch"} & set(pins)
    constrained = {c.split("==")[0] for c in req.constraints}
    assert {"starlette", "pydantic-core", "h11"} <= constrained
    assert "scikit-learn" not in constrained
    assert lock_request("onnxruntime", "3.11").key() == req.key()
    assert lock_request("onnxruntime", "3.12").key() != req.key()
    assert "xgboost" in dict(r.split("==") for r in lock_request("xgboost", "3.11").requirements)


def test_bad_python_and_runtime() -> None:
    with pytest.raises(InputError, match="unsupported Python version"):
        lock_request("onnxruntime", "3")
    with pytest.raises(InputError, match="no runtime dependency set"):
        lock_request("tensorflow", "3.11")


def test_cache_hit_never_runs_uv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    req = LockRequest(("numpy==2.0.0",), (), "3.11")
    (tmp_path / f"{req.key()}.lock").write_bytes(b"cached lock\n")

    def no_uv(*args: object, **kwargs: object) -> None:
        raise AssertionError("uv must not run on a cache hit")

    monkeypatch.setattr(subprocess, "run", no_uv)
    lock = resolve_lock(req, cache_dir=tmp_path)
    assert lock.cached
    assert lock.data == b"cached lock\n"
    assert lock.key == req.key()


def test_unreachable_index_without_cache_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "empty-uv-cache"))
    req = lock_request("onnxruntime", "3.11")
    with pytest.raises(InputError, match="package index is unreachable") as exc:
        resolve_lock(req, cache_dir=tmp_path / "store-locks")
    assert exc.value.path == "requirements.lock"
    assert exc.value.hint is not None
    assert "cached in the store" in exc.value.hint
    assert not (tmp_path / "store-locks").exists()


def test_real_lock_is_pinned_and_hashed() -> None:
    req = lock_request("onnxruntime", "3.11")
    try:
        lock = resolve_lock(req, cache_dir=None)
    except InputError as exc:  # pragma: no cover (needs the package index)
        pytest.skip(f"package index unreachable: {exc.message}")
    text = lock.data.decode()
    assert not lock.cached
    assert text.startswith("# requirements.lock: the runtime dependencies")
    pins = dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+) \\$", text, re.M))
    assert pins["onnxruntime"] == metadata.version("onnxruntime")
    assert pins["starlette"] == metadata.version("starlette")  # transitive, as installed
    assert "scikit-learn" not in pins
    assert all(re.search(rf"^{re.escape(n)}==\S+ \\\n    --hash=sha256:", text, re.M) for n in pins)
    assert "tmp" not in text  # no build-machine paths


def test_uv_binary_is_found() -> None:
    cmd = lockfile._uv_command()
    assert subprocess.run([*cmd, "--version"], capture_output=True, check=True).stdout


def test_golden_request_key() -> None:
    req = LockRequest(("numpy==2.0.0",), ("h11==0.16.0",), "3.11")
    assert req.key() == "a73b5c53fb0e8a1578ec060051a124c231476583af95d3eb1b14aae35b5394cb"
    assert lockfile._header(req).startswith(b"# requirements.lock: the runtime dependencies")
