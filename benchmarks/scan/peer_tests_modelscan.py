#!/usr/bin/env python3
"""Write modelscan's own test samples to a folder by running its test fixtures' code.

modelscan (protectai/modelscan) builds most of its test files at test time, in the pytest
fixtures of ``tests/test_modelscan.py`` (helpers in ``tests/test_utils.py``), plus two files it
commits under ``tests/data``. This script imports that test module from a checkout given on the
command line and calls each sample-building fixture with a folder of ours instead of pytest's
temporary one, so the benchmark scans exactly the files modelscan's own tests scan. Nothing is
reimplemented, and nothing of modelscan's is copied into this repository.

    python peer_tests_modelscan.py --repo CHECKOUT --out DIR

It runs in ``benchmarks/.work/venvs/modelscan-tests`` (``requirements-peer-tests.txt``), which
has what the test module imports: torch, tensorflow, tf_keras, dill, requests, aiohttp and
modelscan's own dependencies. ``run.py --peer-tests modelscan=CHECKOUT`` calls it.

The fixtures are called as plain functions: ``pytest`` is replaced by a stub whose ``fixture``
and ``mark.parametrize`` decorators return the function unchanged (the module uses nothing else
of pytest at import time), and ``tmp_path_factory.mktemp(name)`` returns ``DIR/name``. Where
tensorflow or tf_keras cannot be imported, both are replaced by stubs so the module still
imports, and the two fixtures that need them (``tensorflow_file_path``, ``keras_file_path``)
are skipped and recorded as skipped with the import error.

Writes ``DIR/generated.json``: per fixture ``ok``, ``skipped: ...`` or ``failed: ...``; the
files written (path relative to DIR, sha256); the sha256 of the test sources used; and the
versions of the libraries that wrote the files. Samples are only *built* here (pickled,
saved); no sample is loaded or executed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The fixtures that write sample files, in the order they run, and what each needs.
FIXTURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("zip_file_path", ()),
    ("pytorch_file_path", ()),
    ("file_path", ()),
    ("numpy_file_path", ()),
    ("tensorflow_file_path", ("tensorflow",)),
    ("keras_file_path", ("tensorflow",)),
)
# The test sources the samples come from (their sha256 goes into generated.json).
SOURCES = ("tests/test_modelscan.py", "tests/test_utils.py")
LIBRARIES = ("modelscan", "torch", "tensorflow", "tf-keras", "numpy", "dill", "h5py")
MARKER = "generated.json"


class _Stub:
    """Stands in for anything of tensorflow/tf_keras the test module touches at import time:
    a class (``keras.Model`` is subclassed), an attribute (``tf.float32``), and a decorator
    factory (``@tf.function(input_signature=[tf.TensorSpec(...)])``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]  # used as a decorator: leave the function as it is
        return _Stub(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub


def _stub_module(name: str) -> types.ModuleType:
    def attr(key: str) -> Any:
        if key.startswith("__"):  # __file__, __path__...: what other code probes for
            raise AttributeError(key)
        return _Stub

    mod = types.ModuleType(name)
    mod.__getattr__ = attr  # type: ignore[method-assign]
    return mod


def _stub_pytest() -> types.ModuleType:
    def fixture(*args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda fn: fn

    mark = types.SimpleNamespace(parametrize=lambda *a, **k: lambda fn: fn)
    mod = types.ModuleType("pytest")
    mod.fixture = fixture  # type: ignore[attr-defined]
    mod.mark = mark  # type: ignore[attr-defined]
    return mod


class TmpPathFactory:
    """What the fixtures use of pytest's ``tmp_path_factory``: ``mktemp(name)``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=False)
        return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _tensorflow_available() -> str | None:
    """None when tensorflow and tf_keras import, else the error."""
    try:
        import tensorflow  # noqa: F401
        import tf_keras  # noqa: F401
    except Exception as exc:  # any import failure means: skip what needs them
        return f"{type(exc).__name__}: {exc}"
    return None


def _prepare_out(out: Path) -> None:
    """A fresh output folder; only a folder this script wrote (or an empty one) is replaced."""
    if out.exists():
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise SystemExit(f"error: {out} is not empty and has no {MARKER}; not replacing it")
        shutil.rmtree(out)
    out.mkdir(parents=True)


def generate(repo: Path, out: Path, *, no_tensorflow: bool = False) -> dict[str, Any]:
    tests = repo / "tests"
    if not (tests / "test_modelscan.py").is_file():
        raise SystemExit(f"error: {tests / 'test_modelscan.py'} not found (want a checkout)")
    _prepare_out(out)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    tf_error = "disabled with --no-tensorflow" if no_tensorflow else _tensorflow_available()
    if tf_error is not None:
        for name in ("tensorflow", "tf_keras"):
            sys.modules[name] = _stub_module(name)
    sys.modules["pytest"] = _stub_pytest()
    # Their package and their tests folder first, so their code is what runs.
    sys.path[:0] = [str(tests), str(repo)]
    cwd = Path.cwd()
    os.chdir(out)  # anything a fixture writes relative to the working folder lands here
    try:
        import test_modelscan as tm  # type: ignore[import-not-found]

        factory = TmpPathFactory(out)
        status: dict[str, str] = {}
        for name, needs in FIXTURES:
            if "tensorflow" in needs and tf_error is not None:
                status[name] = f"skipped: needs tensorflow and tf_keras ({tf_error})"
                continue
            try:
                fn: Callable[..., Any] = getattr(tm, name)
                if name == "keras_file_path":
                    fn(factory, tm.keras_file_extensions())
                else:
                    fn(factory)
                status[name] = "ok"
            except Exception as exc:  # record and go on: the other fixtures still count
                last = traceback.format_exception_only(type(exc), exc)[-1].strip()
                status[name] = f"failed: {last}"
    finally:
        os.chdir(cwd)
    files: dict[str, str] = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name != MARKER:
            files[path.relative_to(out).as_posix()] = _sha256(path)
    result: dict[str, Any] = {
        "repo": str(repo),
        "sources_sha256": {s: _sha256(repo / s) for s in SOURCES if (repo / s).is_file()},
        "fixtures": status,
        "versions": {n: _version(n) for n in LIBRARIES} | {"python": sys.version.split()[0]},
        "files": files,
    }
    (out / MARKER).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=True, help="a checkout of modelscan")
    ap.add_argument("--out", type=Path, required=True, help="folder to write the samples to")
    ap.add_argument("--no-tensorflow", action="store_true", help="skip the TF/Keras fixtures")
    args = ap.parse_args(argv)
    result = generate(args.repo.resolve(), args.out.resolve(), no_tensorflow=args.no_tensorflow)
    for name, state in result["fixtures"].items():
        print(f"{name}: {state}", file=sys.stderr)
    print(f"{len(result['files'])} files in {args.out}", file=sys.stderr)
    failed = [n for n, s in result["fixtures"].items() if s.startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
