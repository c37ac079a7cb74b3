"""The issue's "verify for real", end to end, with real tools only.

A real registry (``docker-registry`` on loopback) holds an offline Debian base with Python
(mmdebstrap). ``modelcrate containerize`` builds a real crate's image from that base and pushes
it; ``podman`` pulls and runs it; ``/predict`` and the V2 API (tritonclient) answer exactly what
the original scikit-learn model answers. Inside, the server runs as a non-root user, and SIGTERM
stops it cleanly. Building again gives the same digest; a code-only change moves only the last
layer and pushes only it. The clear failures are in ``test_e2e_failures.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.image.e2e_env import (
    IRIS_CLASSES,
    AppSource,
    BaseLayout,
    IrisCrate,
    Podman,
    containerize_crate,
    free_port,
    manifest_digest,
    modelcrate_cli,
    registry_get,
    snapshot_app,
    unique,
    wait_ready,
)
from tests.image.registry_fixture import RunningRegistry

pytestmark = pytest.mark.slow

REPO = "iris"
NON_ROOT = 10001
STOP_TIMEOUT_S = 10
READY_TIMEOUT_S = 120


@dataclass(frozen=True)
class Pushed:
    ref: str  # 127.0.0.1:PORT/iris:1
    digest: str  # as the registry serves it
    manifest: dict[str, Any]
    cli_output: str


@dataclass(frozen=True)
class Served:
    name: str  # the container
    url: str
    host_port: str  # 127.0.0.1:PORT, for tritonclient
    version: str


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> AppSource:
    """The modelcrate code every build in this module ships (a copy taken once)."""
    return snapshot_app(tmp_path_factory.mktemp("app-source"))


@pytest.fixture(scope="module")
def pushed(
    iris_crate: IrisCrate, pushed_base: str, registry: RunningRegistry, app: AppSource
) -> Pushed:
    """``modelcrate containerize iris --base REG/pybase:bookworm --insecure-registry --push``."""
    ref = f"{registry.host}/{REPO}:1"
    proc = modelcrate_cli(
        "containerize",
        iris_crate.ref,
        "--store",
        str(iris_crate.store_root),
        "--base",
        pushed_base,
        "--insecure-registry",
        "--push",
        ref,
        app=app,
    )
    assert proc.returncode == 0, f"containerize failed:\n{proc.stdout}\n{proc.stderr}"
    digest, manifest = manifest_digest(ref)
    return Pushed(ref, digest, manifest, proc.stdout)


@pytest.fixture(scope="module")
def served(pushed: Pushed, podman: Podman) -> Iterator[Served]:
    """The pushed image, pulled by podman and running with port 8080 on a free host port."""
    podman.pull(pushed.ref)
    name = unique("modelcrate-e2e-iris")
    port = free_port()
    podman.run_detached(pushed.ref, name=name, ports={port: 8080})

    def alive() -> str | None:
        state = podman.state(name)
        if state.get("Running"):
            return None
        return f"container exited ({state.get('ExitCode')}):\n{podman.logs(name)}"

    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_ready(url, timeout=READY_TIMEOUT_S, alive=alive)
        yield Served(name, url, f"127.0.0.1:{port}", str(ready["version"]))
    finally:
        podman("rm", "--force", "--time", "0", name, check=False, timeout=60)


# --------------------------------------------------------------------------- push and image


def test_cli_push_is_what_the_registry_serves(
    pushed: Pushed, pushed_base: str, base_layout: BaseLayout
) -> None:
    assert pushed.digest in pushed.cli_output  # the CLI reports the digest it pushed
    _, base_manifest = manifest_digest(pushed_base)
    base_layers = [layer["digest"] for layer in base_manifest["layers"]]
    layers = [layer["digest"] for layer in pushed.manifest["layers"]]
    assert layers[: len(base_layers)] == base_layers  # the base's layers, untouched
    assert len(layers) == len(base_layers) + 3  # wheels, model, app


def test_image_config_is_non_root_exec_form_with_provenance(
    pushed: Pushed, pushed_base: str, iris_crate: IrisCrate, registry: RunningRegistry
) -> None:
    from modelcrate.crate.manifest import load_manifest

    manifest = load_manifest(iris_crate.crate_dir)
    # The config blob as stored (skopeo drops Docker's Healthcheck extension when it parses).
    doc = registry_get(registry.url, f"{REPO}/blobs/{pushed.manifest['config']['digest']}")
    assert doc is not None
    assert (doc["os"], doc["architecture"]) == ("linux", "amd64")
    config = doc["config"]
    user = config["User"]
    assert user.split(":")[0].isdigit()
    assert int(user.split(":")[0]) != 0
    entry = config["Entrypoint"]
    assert isinstance(entry, list)
    assert entry[0].startswith("/usr/bin/python3")
    assert entry[1:4] == ["-m", "modelcrate", "serve"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert "/readyz" in " ".join(config["Healthcheck"]["Test"])
    labels = config["Labels"]
    base_digest, _ = manifest_digest(pushed_base)
    assert labels["org.opencontainers.image.base.digest"] == base_digest
    assert labels["io.modelcrate.crate.version"] == manifest.version
    assert labels["io.modelcrate.lock.sha256"] == manifest.lock_sha256
    assert labels["org.opencontainers.image.title"] == iris_crate.name


# --------------------------------------------------------------------------- the running container


def test_predict_in_the_container_equals_the_model(served: Served, iris_crate: IrisCrate) -> None:
    rows = iris_crate.frame.iloc[::10]
    records = [{k: float(v) for k, v in row.items()} for row in rows.to_dict("records")]
    with httpx.Client(base_url=served.url, timeout=30) as client:
        answer = client.post("/predict", json=records)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [p["label"] for p in body] == list(iris_crate.model.predict(rows))
    probs = np.array([[p["probabilities"][c] for c in IRIS_CLASSES] for p in body])
    np.testing.assert_allclose(probs, iris_crate.model.predict_proba(rows), atol=1e-5)


def test_v2_tritonclient_in_the_container_equals_the_model(
    served: Served, iris_crate: IrisCrate
) -> None:
    import tritonclient.http as httpclient

    x = iris_crate.frame.to_numpy()[1::7]
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=False),
        httpclient.InferRequestedOutput("probabilities", binary_data=False),
    ]
    client = httpclient.InferenceServerClient(url=served.host_port)
    try:
        assert client.is_server_ready()
        assert client.is_model_ready(iris_crate.name)
        result = client.infer(iris_crate.name, [tensor], outputs=outputs)
    finally:
        client.close()
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in result.as_numpy("label")]
    assert labels == list(iris_crate.model.predict(iris_crate.frame.iloc[1::7]))
    np.testing.assert_allclose(
        result.as_numpy("probabilities"),
        iris_crate.model.predict_proba(iris_crate.frame.iloc[1::7]),
        atol=1e-5,
    )


def test_the_server_runs_as_a_non_root_user(served: Served, podman: Podman) -> None:
    assert podman("exec", served.name, "id", "-u").stdout.strip() == str(NON_ROOT)
    status = podman("exec", served.name, "cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == [str(NON_ROOT)] * 4  # real, effective, saved, filesystem
    cmdline = podman("exec", served.name, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[1:4] == ["-m", "modelcrate", "serve"]  # PID 1 is the server itself


def test_sigterm_stops_the_server_cleanly(served: Served, podman: Podman) -> None:
    """Last test on the container: ``podman stop`` sends SIGTERM and waits."""
    start = time.monotonic()
    podman("stop", "--time", str(STOP_TIMEOUT_S), served.name, timeout=STOP_TIMEOUT_S + 30)
    elapsed = time.monotonic() - start
    state = podman.state(served.name)
    logs = podman.logs(served.name)
    assert elapsed < STOP_TIMEOUT_S, f"needed SIGKILL after {elapsed:.1f} s:\n{logs}"
    assert state["ExitCode"] in (0, 143), logs
    assert not state.get("OOMKilled"), logs
    assert "Application shutdown complete" in logs, logs


# --------------------------------------------------------------------------- reproducible, layered


def test_building_again_gives_the_same_digest_and_pushes_only_the_manifest(
    pushed: Pushed, iris_crate: IrisCrate, pushed_base: str, app: AppSource
) -> None:
    result = containerize_crate(
        iris_crate, app, base=pushed_base, push=pushed.ref, insecure_registry=True
    )
    assert result.digest == pushed.digest
    assert result.pushed is not None
    assert result.pushed.digest == pushed.digest
    assert result.pushed.blobs_sent == 0  # every blob checked with HEAD and skipped
    assert result.wheels_cached  # the second build did no pip work


def test_a_code_only_change_moves_only_the_last_layer(
    pushed: Pushed, iris_crate: IrisCrate, pushed_base: str, app: AppSource, tmp_path: Path
) -> None:
    changed = snapshot_app(tmp_path, edit="a code-only change")
    ref = f"{pushed.ref.rpartition(':')[0]}:code-change"
    result = containerize_crate(
        iris_crate, changed, base=pushed_base, push=ref, insecure_registry=True
    )
    before = [layer["digest"] for layer in pushed.manifest["layers"]]
    after = [layer.digest for layer in result.layers]
    assert after[:-1] == before[:-1]  # base, wheels and model layers unchanged
    assert after[-1] != before[-1]
    assert result.digest != pushed.digest
    assert result.pushed is not None
    assert result.pushed.blobs_sent == 2  # the app layer and the config
    app_size = result.layers[-1].size
    config_size = len(result.image.config_blob)
    assert result.pushed.bytes_sent == app_size + config_size + len(result.image.manifest_blob)
    assert manifest_digest(ref)[0] == result.digest
