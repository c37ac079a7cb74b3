"""Session fixtures for the image tests: real tools, built once, cleaned up always.

* ``container_tools`` -- podman, runc, skopeo, umoci, docker-registry and mmdebstrap must be on
  PATH. Missing ones fail the session under CI (``CI=true``; ``scripts/system-deps.sh`` installs
  them) and skip the container tests elsewhere.
* ``base_layout`` -- the mmdebstrap Debian base with Python as an OCI layout, cached on disk by
  its package list (:func:`tests.image.e2e_env.ensure_base_layout`): ~20-60 s the first time,
  nothing afterwards.
* ``bare_base_layout`` -- the same base without ``libstdc++6`` (cached the same way).
* ``registry`` -- a real ``docker-registry`` on a free loopback port (engineer A's
  :func:`tests.image.registry_fixture.running_registry`), for the whole session.
* ``pushed_base`` -- the base pushed there with skopeo: ``127.0.0.1:PORT/pybase:bookworm``.
* ``iris_crate`` -- a real crate (scan, convert, parity, lock) built once into a session store.
* ``podman`` -- podman with this machine's flags; every container and image it made is removed
  when the session ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.e2e_env import (
    BARE_BASE_PACKAGES,
    BASE_TAG,
    BaseLayout,
    IrisCrate,
    Podman,
    build_iris_crate,
    ensure_base_layout,
    in_ci,
    missing_tools,
    skopeo_copy,
)
from tests.image.registry_fixture import RunningRegistry, running_registry

REGISTRY_ENV = (
    "MODELCRATE_REGISTRY_USER",
    "MODELCRATE_REGISTRY_PASSWORD",
    "MODELCRATE_REGISTRY_TOKEN",
    "MODELCRATE_REGISTRY_HOST",
    "REGISTRY_AUTH_FILE",
)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No image test reads ~/.modelcrate, the caller's registry credentials (variables or the
    podman/docker auth files) or their epoch."""
    monkeypatch.setenv("MODELCRATE_HOME", str(tmp_path / "default-store"))
    for name in ("SOURCE_DATE_EPOCH", *REGISTRY_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, folder in (
        ("DOCKER_CONFIG", "docker-config"),
        ("XDG_CONFIG_HOME", "xdg-config"),
        ("XDG_RUNTIME_DIR", "xdg-runtime"),
    ):
        monkeypatch.setenv(name, str(tmp_path / folder))


@pytest.fixture(scope="session")
def container_tools() -> None:
    missing = missing_tools()
    if not missing:
        return
    message = f"missing {', '.join(missing)}: run scripts/system-deps.sh"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def base_layout(container_tools: None) -> BaseLayout:
    return ensure_base_layout()


@pytest.fixture(scope="session")
def bare_base_layout(container_tools: None) -> BaseLayout:
    """The Debian base without libstdc++6 (python3-minimal and its standard library only)."""
    return ensure_base_layout(BARE_BASE_PACKAGES)


@pytest.fixture(scope="session")
def registry(
    container_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningRegistry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def pushed_base(registry: RunningRegistry, base_layout: BaseLayout) -> str:
    """``127.0.0.1:PORT/pybase:bookworm``, in the session registry."""
    ref = f"{registry.host}/pybase:{BASE_TAG}"
    skopeo_copy(base_layout.ref, f"docker://{ref}")
    return ref


@pytest.fixture(scope="session")
def iris_crate(tmp_path_factory: pytest.TempPathFactory) -> IrisCrate:
    return build_iris_crate(tmp_path_factory.mktemp("iris-crate"))


@pytest.fixture(scope="session")
def podman(container_tools: None) -> Iterator[Podman]:
    pod = Podman()
    try:
        yield pod
    finally:
        problems = pod.cleanup()
    assert not problems, "podman cleanup failed:\n" + "\n".join(problems)
