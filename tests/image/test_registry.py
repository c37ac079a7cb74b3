"""The registry client against a real ``docker-registry`` process: push, pull, auth, refusals.

Plain tests use the session registry (``registry`` in conftest); the auth and read-only variants
start their own registries (``tests.image.registry_fixture``). Bearer auth runs against the real
registry configured for token auth, with a local token service issuing signed JWTs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelcrate.errors import InputError
from modelcrate.image.auth import Challenge, Credentials, RegistryError, parse_challenges
from modelcrate.image.layout import read_oci_layout, write_oci_archive
from modelcrate.image.oci import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    ImageConfig,
    build_image,
    build_index,
)
from modelcrate.image.registry import RegistryClient
from modelcrate.image.tarlayer import LayerFile, build_layer, sha256_digest
from tests.image.e2e_env import run, skopeo_inspect, unique
from tests.image.registry_fixture import (
    RunningRegistry,
    TokenServer,
    free_port,
    running_registry,
    token_server,
)

USERS = {"alice": "wonderland"}


def image_of(text: str, *, arch: str = "amd64") -> Image:
    """Two layers (a shared one and one of ``text``) and a config."""
    shared = build_layer([LayerFile("/srv/shared.txt", b"shared base bytes\n" * 100)])
    own = build_layer([LayerFile("/srv/own.txt", text.encode())])
    return build_image(ImageConfig(architecture=arch, cmd=("/bin/true",)), [shared, own])


def blob_bytes(image: Image) -> int:
    return len(image.config_blob) + sum(layer.size for layer in image.layers)


@pytest.fixture(autouse=True)
def _no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELCRATE_REGISTRY_TOKEN", raising=False)


@pytest.fixture
def client(registry: RunningRegistry) -> RegistryClient:
    return RegistryClient(registry.host, insecure=True)


# ------------------------------------------------------------------------ push and pull


def test_push_skips_present_blobs_and_pulls_back(
    client: RegistryClient, registry: RunningRegistry
) -> None:
    image, repo = image_of("push once"), unique("mc/push")
    messages: list[str] = []
    client = RegistryClient(registry.host, insecure=True, progress=messages.append)
    first = client.push_image(image, repo, "1")
    assert first.digest == image.digest
    assert (first.uploaded_blobs, first.skipped_blobs, first.uploaded_bytes) == (
        3,
        0,
        blob_bytes(image),
    )
    again = client.push_image(image, repo, "2")
    assert (again.uploaded_blobs, again.skipped_blobs, again.uploaded_bytes) == (0, 3, 0)
    assert again.digest == image.digest
    assert any("already present, skipped" in m for m in messages)
    assert messages[-1] == f"pushed {registry.host}/{repo}:2 ({image.digest})"

    assert client.pull_image(repo, "1") == image
    assert client.pull_image(repo, image.digest) == image
    body, media_type, digest = client.get_raw_manifest(repo, "2")
    assert (body, media_type, digest) == (image.manifest_blob, OCI_MANIFEST, image.digest)
    assert client.blob_exists(repo, image.layers[1].digest)
    assert not client.blob_exists(repo, sha256_digest(b"never pushed"))


def test_code_only_change_pushes_only_the_changed_layer(client: RegistryClient) -> None:
    repo = unique("mc/change")
    client.push_image(image_of("v1"), repo, "1")
    changed = image_of("v2")
    result = client.push_image(changed, repo, "2")
    assert result.skipped_blobs == 1  # the shared layer
    assert result.uploaded_bytes == len(changed.config_blob) + changed.layers[1].size


def test_mount_from_another_repository(client: RegistryClient) -> None:
    image, base_repo, app_repo = image_of("mount"), unique("mc/base"), unique("mc/app")
    client.push_image(image, base_repo, "1")
    result = client.push_image(image, app_repo, "1", mount_from=base_repo)
    assert (result.mounted_blobs, result.uploaded_bytes) == (3, 0)
    assert client.pull_image(app_repo, "1") == image


def test_skopeo_agrees_with_the_push(
    container_tools: None, client: RegistryClient, registry: RunningRegistry, tmp_path: Path
) -> None:
    image, repo = image_of("skopeo"), unique("mc/skopeo")
    client.push_image(image, repo, "1")
    info = skopeo_inspect(f"{registry.host}/{repo}:1")
    assert info["Digest"] == image.digest
    assert info["Layers"] == [layer.digest for layer in image.layers]
    run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{registry.host}/{repo}:1",
         f"oci:{tmp_path / 'copy'}:copied"])  # fmt: skip
    assert read_oci_layout(tmp_path / "copy", "copied") == image


def test_pull_what_skopeo_pushed_as_docker_schema2(
    container_tools: None, client: RegistryClient, registry: RunningRegistry, tmp_path: Path
) -> None:
    image, repo = image_of("docker format"), unique("mc/v2s2")
    archive = write_oci_archive(image, tmp_path / "img.tar", "img:1")
    run(["skopeo", "copy", "--dest-tls-verify=false", "--format", "v2s2",
         f"oci-archive:{archive}:img:1", f"docker://{registry.host}/{repo}:1"])  # fmt: skip
    pulled = client.pull_image(repo, "1")
    assert pulled.media_type == DOCKER_MANIFEST
    assert pulled.config_blob == image.config_blob
    assert [layer.blob for layer in pulled.layers] == [layer.blob for layer in image.layers]


def test_index_resolves_to_the_platform(client: RegistryClient) -> None:
    amd, arm, repo = image_of("amd"), image_of("arm", arch="arm64"), unique("mc/multi")
    client.push_image(amd, repo, "amd64")
    client.push_image(arm, repo, "arm64")
    index = build_index([amd.descriptor(), arm.descriptor()])
    assert client.push_manifest(repo, "multi", index, OCI_INDEX) == sha256_digest(index)
    assert client.pull_image(repo, "multi") == amd
    assert client.pull_image(repo, "multi", "linux/arm64") == arm
    body, media_type, _ = client.get_manifest(repo, "multi", "linux/arm64")
    assert (body, media_type) == (arm.manifest_blob, OCI_MANIFEST)
    with pytest.raises(InputError, match="no image for platform linux/s390x") as err:
        client.pull_image(repo, "multi", "linux/s390x")
    assert "linux/amd64, linux/arm64" in err.value.message
    with pytest.raises(InputError, match="is an image for linux/arm64, not linux/amd64"):
        client.pull_image(repo, "arm64")


def test_blob_digest_is_checked_before_upload(client: RegistryClient) -> None:
    with pytest.raises(InputError, match="does not match its digest"):
        client.push_blob(unique("mc/bad"), b"data", sha256_digest(b"other"))


# ------------------------------------------------------------------------ refusals


def test_refused_push_reports_status_and_body(client: RegistryClient) -> None:
    with pytest.raises(RegistryError) as err:
        client.push_image(image_of("bad name"), "Not/Lower/Case", "1")
    assert err.value.status == 404
    assert "404 page not found" in err.value.body
    assert "HTTP 404" in err.value.message


def test_manifest_with_missing_blobs_is_refused_and_not_tagged(client: RegistryClient) -> None:
    image, repo = image_of("missing blobs"), unique("mc/partial")
    with pytest.raises(RegistryError) as err:
        client.push_manifest(repo, "1", image.manifest_blob, image.media_type)
    assert err.value.status == 400
    assert "MANIFEST_BLOB_UNKNOWN" in err.value.message
    with pytest.raises(RegistryError, match="HTTP 404"):
        client.get_manifest(repo, "1")


def test_read_only_registry_refuses_and_nothing_is_tagged(
    container_tools: None, tmp_path: Path
) -> None:
    with running_registry(tmp_path / "ro", readonly=True) as ro:
        client = RegistryClient(ro.host, insecure=True)
        with pytest.raises(RegistryError) as err:
            client.push_image(image_of("read-only"), "mc/ro", "1")
        assert err.value.status == 405
        assert "Method not allowed" in err.value.body
        assert "Method not allowed" in err.value.message
        with pytest.raises(RegistryError) as missing:
            client.get_manifest("mc/ro", "1")
        assert missing.value.status == 404
        assert missing.value.hint is not None
        assert "repository name" in missing.value.hint


def test_unreachable_registry_has_a_hint(registry: RunningRegistry) -> None:
    with pytest.raises(RegistryError, match="cannot reach the registry") as err:
        RegistryClient(f"127.0.0.1:{free_port()}", insecure=True, timeout=5).ping()
    assert err.value.hint is not None
    assert "--insecure-registry" in err.value.hint
    with pytest.raises(RegistryError, match="cannot reach the registry"):
        RegistryClient(registry.host, timeout=5).ping()  # HTTPS against a plain-HTTP registry


# ------------------------------------------------------------------------ auth


@pytest.fixture(scope="module")
def basic_registry(
    container_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningRegistry]:
    with running_registry(tmp_path_factory.mktemp("basic"), htpasswd=USERS) as reg:
        yield reg


@pytest.fixture(scope="module")
def token_registry(
    container_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningRegistry, TokenServer]]:
    root = tmp_path_factory.mktemp("token")
    with (
        token_server(root / "tokens", users=USERS) as tokens,
        running_registry(root / "registry", token=tokens) as reg,
    ):
        yield reg, tokens


def test_basic_auth(basic_registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    image = image_of("basic")
    with pytest.raises(RegistryError) as err:
        RegistryClient(basic_registry.host, insecure=True).push_image(image, "mc/basic", "1")
    assert err.value.status == 401
    assert err.value.hint is not None
    assert "MODELCRATE_REGISTRY_USER" in err.value.hint
    bad = RegistryClient(basic_registry.host, insecure=True, username="alice", password="nope")
    with pytest.raises(RegistryError, match="HTTP 401"):
        bad.ping()
    monkeypatch.setenv("MODELCRATE_REGISTRY_USER", "alice")
    monkeypatch.setenv("MODELCRATE_REGISTRY_PASSWORD", "wonderland")
    with pytest.raises(RegistryError, match="HTTP 401") as unnamed:  # for no host in particular
        RegistryClient(basic_registry.host, insecure=True).ping()
    assert unnamed.value.hint is not None
    assert f"MODELCRATE_REGISTRY_HOST={basic_registry.host}" in unnamed.value.hint
    client = RegistryClient(basic_registry.host, insecure=True, env_hosts=[basic_registry.host])
    client.ping()
    assert client.push_image(image, "mc/basic", "1").digest == image.digest
    assert client.pull_image("mc/basic", "1") == image


def test_bearer_token_auth(
    token_registry: tuple[RunningRegistry, TokenServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token service listens on another port: it gets credentials only when that host is
    named too (here by MODELCRATE_REGISTRY_HOST; see test_credentials.py for the refusals)."""
    registry, tokens = token_registry
    token_host = tokens.realm.split("/")[2]
    monkeypatch.setenv("MODELCRATE_REGISTRY_HOST", f"{registry.host},{token_host}")
    image = image_of("bearer")
    anonymous = RegistryClient(registry.host, insecure=True)
    with pytest.raises(RegistryError) as err:
        anonymous.push_image(image, "mc/bearer", "1")
    assert err.value.status == 401  # an anonymous token only grants pull

    tokens.requests.clear()
    monkeypatch.setenv("MODELCRATE_REGISTRY_USER", "alice")
    monkeypatch.setenv("MODELCRATE_REGISTRY_PASSWORD", "wonderland")
    alice = RegistryClient(registry.host, insecure=True)
    result = alice.push_image(image, "mc/bearer", "1")
    assert result.digest == image.digest
    asked = [r for r in tokens.requests if r["user"] == "alice"]
    assert asked
    assert asked[0]["query"]["service"] == [tokens.service]
    assert asked[0]["query"]["scope"] == ["repository:mc/bearer:pull,push"]
    assert len(tokens.requests) == 1  # one token served the whole push

    assert anonymous.pull_image("mc/bearer", "1") == image  # anonymous pull is allowed

    monkeypatch.setenv("MODELCRATE_REGISTRY_PASSWORD", "x")
    wrong = RegistryClient(registry.host, insecure=True)
    with pytest.raises(RegistryError, match=r"token service .* refused the credentials") as bad:
        wrong.pull_image("mc/bearer", "1")
    assert bad.value.status == 401


def test_static_bearer_token_from_env(
    token_registry: tuple[RunningRegistry, TokenServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64
    import urllib.request

    registry, tokens = token_registry
    image = image_of("static token")
    monkeypatch.setenv("MODELCRATE_REGISTRY_HOST", f"{registry.host},{tokens.realm.split('/')[2]}")
    monkeypatch.setenv("MODELCRATE_REGISTRY_USER", "alice")
    monkeypatch.setenv("MODELCRATE_REGISTRY_PASSWORD", "wonderland")
    RegistryClient(registry.host, insecure=True).push_image(image, "mc/static", "1")
    monkeypatch.delenv("MODELCRATE_REGISTRY_USER")
    monkeypatch.delenv("MODELCRATE_REGISTRY_PASSWORD")
    basic = base64.b64encode(b"alice:wonderland").decode()
    url = f"{tokens.realm}?service={tokens.service}&scope=repository:mc/static:pull"
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {basic}"})
    with urllib.request.urlopen(request) as response:
        token = json.loads(response.read())["token"]
    monkeypatch.setenv("MODELCRATE_REGISTRY_TOKEN", token)
    client = RegistryClient(registry.host, insecure=True)
    assert client.pull_image("mc/static", "1") == image
    with pytest.raises(RegistryError, match="HTTP 401"):  # the token grants pull, not push
        client.push_image(image_of("other"), "mc/static", "2")


def test_redirected_blob_download_drops_the_authorization() -> None:
    """Registries redirect blob GETs to storage; the registry's token must not follow."""
    blob = b"layer bytes"
    digest = sha256_digest(blob)
    seen: dict[str, Any] = {}

    class Storage(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen[f"storage {self.command}"] = self.headers.get("Authorization")
            self.send_response(200)
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(blob)

        do_HEAD = do_GET

    class Registry(Storage):
        def do_GET(self) -> None:
            seen[f"registry {self.command}"] = self.headers.get("Authorization")
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{storage.server_port}/data")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

    storage = ThreadingHTTPServer(("127.0.0.1", 0), Storage)
    front = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (storage, front)]
    for t in threads:
        t.start()
    try:
        client = RegistryClient(f"127.0.0.1:{front.server_port}", insecure=True, token="secret")
        assert client.get_blob("mc/redirect", digest) == blob
        assert client.blob_exists("mc/redirect", digest)
    finally:
        for s in (storage, front):
            s.shutdown()
            s.server_close()
    assert seen == {
        "registry GET": "Bearer secret",
        "storage GET": None,
        "registry HEAD": "Bearer secret",
        "storage HEAD": None,  # a HEAD stays a HEAD across the redirect
    }


# ------------------------------------------------------------------------ challenge parsing


def test_parse_challenges() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/python:pull,push", Basic realm="x \\"y\\""'
    )
    assert parse_challenges(header) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/python:pull,push",
            },
        ),
        Challenge("basic", {"realm": 'x "y"'}),
    ]
    assert parse_challenges("") == []
    assert parse_challenges("Basic") == [Challenge("basic", {})]


def test_credentials_from_env() -> None:
    env = {"MODELCRATE_REGISTRY_USER": "u", "MODELCRATE_REGISTRY_PASSWORD": "p"}
    creds = Credentials.from_env(env)
    assert creds.has_password
    assert creds.basic() == "Basic dTpw"
    assert Credentials.from_env({}) == Credentials()
    assert Credentials.from_env({"MODELCRATE_REGISTRY_TOKEN": "t"}).token == "t"
