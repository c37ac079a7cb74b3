"""Fixtures for the crate tests: an isolated store home, a lock cache that needs no network."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelcrate.crate.lockfile import lock_request, resolve_lock
from modelcrate.crate.store import Store
from modelcrate.errors import InputError
from tests.crate.helpers import FAKE_LOCK


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test ever touches ~/.modelcrate."""
    monkeypatch.setenv("MODELCRATE_HOME", str(tmp_path / "default-store"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


@pytest.fixture(scope="session")
def real_locks() -> Callable[[str], bytes]:
    """Resolve each runtime's lock with the real uv once per session (offline: a stand-in)."""
    cache: dict[str, bytes] = {}

    def get(runtime: str) -> bytes:
        if runtime not in cache:
            try:
                cache[runtime] = resolve_lock(lock_request(runtime, "3.11"), cache_dir=None).data
            except InputError:
                cache[runtime] = FAKE_LOCK
        return cache[runtime]

    return get


@pytest.fixture
def seed_lock(real_locks: Callable[[str], bytes]) -> Callable[[Store, str], None]:
    """Put the lock for a runtime into a store's cache, as a first online build would."""

    def seed(store: Store, runtime: str = "onnxruntime") -> None:
        request = lock_request(runtime, "3.11")
        store.locks_dir.mkdir(parents=True, exist_ok=True)
        (store.locks_dir / f"{request.key()}.lock").write_bytes(real_locks(runtime))

    return seed


@pytest.fixture
def store(tmp_path: Path, seed_lock: Callable[[Store, str], None]) -> Store:
    """A store whose lock cache already holds the onnxruntime lock."""
    s = Store(tmp_path / "store")
    seed_lock(s, "onnxruntime")
    return s
