"""Issue 9, item 10: registry credentials go to the host they are for, and nowhere else.

Real ``docker-registry`` processes (Basic and token auth) and a second host that records every
``Authorization`` it receives (:mod:`tests.image.recorder`) as the token realm, the redirect
target, the upload ``Location`` and a forward proxy standing in for Docker Hub. Variants: a
realm on another port of 127.0.0.1, a realm named ``localhost``, auth-file entries for other
hosts, Docker Hub's aliases, credential helpers, identity tokens.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelcrate.crate.store import Store
from modelcrate.image.auth import Credentials, CredentialStore, RegistryError
from modelcrate.image.authfiles import lookup, registry_key
from modelcrate.image.containerize import _named_registry, _push_ref, containerize
from modelcrate.image.oci import Image, ImageConfig, build_image
from modelcrate.image.registry import RegistryClient
from modelcrate.image.tarlayer import LayerFile, build_layer, sha256_digest
from tests.image.assembly_helpers import crate_with_lock
from tests.image.e2e_env import unique
from tests.image.recorder import Answer, forward_to, recording_server
from tests.image.registry_fixture import (
    RunningRegistry,
    TokenServer,
    free_port,
    running_registry,
    token_server,
)

USERS = {"alice": "wonderland"}
ALICE = "Basic " + base64.b64encode(b"alice:wonderland").decode()
ALICE_AUTH = {"auth": base64.b64encode(b"alice:wonderland").decode()}


def image_of(text: str) -> Image:
    layer = build_layer([LayerFile("/srv/own.txt", text.encode())])
    return build_image(ImageConfig(cmd=("/bin/true",)), [layer])


def write_auth(path: Path, auths: dict[str, Any], **extra: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths, **extra}))
    return path


def docker_config(entries: dict[str, Any], **extra: Any) -> Path:
    """``$DOCKER_CONFIG/config.json`` (the test's own folder, see conftest)."""
    return write_auth(Path(os.environ["DOCKER_CONFIG"], "config.json"), entries, **extra)


def host_of(url: str) -> str:
    return url.split("/")[2]


# ------------------------------------------------------------------------ names and files


def test_registry_keys_as_container_tools_match_them() -> None:
    hub = {"docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"}
    assert {registry_key(name) for name in hub} == {"docker.io"}
    assert registry_key("https://Reg.Example:443/v2/") == "reg.example"
    assert registry_key("http://reg.example:80") == "reg.example"
    assert registry_key("quay.io/team") == "quay.io"
    assert registry_key("127.0.0.1:5000") != registry_key("localhost:5000")
    assert registry_key("127.0.0.1:5000") != registry_key("127.0.0.1:5001")


def test_auth_files_in_the_container_tools_order(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path / "home"),
        "REGISTRY_AUTH_FILE": str(tmp_path / "explicit.json"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
    }
    b64 = base64.b64encode
    write_auth(tmp_path / "explicit.json", {"reg.example:5000": {"auth": b64(b"first:1").decode()}})
    write_auth(
        tmp_path / "run" / "containers" / "auth.json",
        {
            "reg.example:5000": {"auth": b64(b"second:2").decode()},
            "other.example": {"auth": b64(b"other:3").decode()},
        },
    )
    (tmp_path / "config" / "containers").mkdir(parents=True)
    (tmp_path / "config" / "containers" / "auth.json").write_text("{not json")
    write_auth(
        tmp_path / "docker" / "config.json",
        {
            "https://index.docker.io/v1/": {"auth": b64(b"hub:4").decode()},
            "ghcr.io": {"username": "gh", "password": "5"},
            "quay.io": {"auth": b64(b"quay:6").decode()},
            "quay.io/team": {"auth": b64(b"team:7").decode()},
            "idp.example": {"identitytoken": "refresh-8"},
            "broken.example": {"auth": "%%%"},
        },
    )
    write_auth(tmp_path / "home" / ".docker" / "config.json", {"ghcr.io": ALICE_AUTH})

    def user(host: str, repo: str | None = None) -> str | None:
        found = lookup(host, repo, env).credentials
        return None if found is None else found.username

    assert user("reg.example:5000") == "first"  # $REGISTRY_AUTH_FILE wins
    assert user("other.example") == "other"  # $XDG_RUNTIME_DIR/containers/auth.json
    for alias in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert user(alias, "library/python") == "hub"
    assert user("ghcr.io") == "gh"  # $DOCKER_CONFIG replaces ~/.docker
    assert user("quay.io", "team/app") == "team"  # the most specific entry
    assert user("quay.io", "teammate/app") == "quay"  # a namespace is a path prefix, not a string's
    assert lookup("idp.example", None, env).credentials == Credentials(identity_token="refresh-8")
    for stranger in ("reg.example:5001", "localhost:5000", "reg.example", "auth.docker.io"):
        assert user(stranger) is None, stranger
    notes = lookup("broken.example", None, env).notes
    assert any("not a readable auth file" in n for n in notes)  # the broken XDG_CONFIG_HOME file
    assert any("not base64" in n for n in notes)


def _helper(folder: Path, log: Path) -> Path:
    """``docker-credential-mctest``: answers for two servers, logs what it was asked."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "docker-credential-mctest"
    script.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = get ] || exit 2\nread server\necho "$server" >> {log}\n'
        'case "$server" in\n'
        '  reg.example:5000) echo \'{"ServerURL":"reg.example:5000","Username":"hu",'
        '"Secret":"hs"}\' ;;\n'
        '  https://index.docker.io/v1/) echo \'{"Username":"<token>","Secret":"hub-rt"}\' ;;\n'
        '  broken.example) echo "no json here" ;;\n'
        '  *) echo "credentials not found in native keychain"; exit 1 ;;\n'
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_credential_helpers_are_asked_for_their_host_only(tmp_path: Path) -> None:
    log = tmp_path / "helper.log"
    _helper(tmp_path / "bin", log)
    env = {
        "HOME": str(tmp_path),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
    }
    write_auth(
        tmp_path / "docker" / "config.json",
        {"plain.example": ALICE_AUTH},
        credHelpers={"reg.example:5000": "mctest", "evil.example": "../../bin/sh"},
        credsStore="mctest",
    )
    found = lookup("reg.example:5000", None, env).credentials
    assert found is not None
    assert (found.username, found.password) == ("hu", "hs")
    hub = lookup("registry-1.docker.io", None, env).credentials
    assert hub == Credentials(identity_token="hub-rt")
    plain = lookup("plain.example", None, env).credentials  # an auths entry before the store
    assert plain is not None
    assert plain.username == "alice"
    nothing = lookup("unknown.example", None, env)
    assert (nothing.credentials, nothing.notes) == (None, [])  # "not found" is no error
    broken = lookup("broken.example", None, env)
    assert broken.credentials is None
    assert any("not its JSON" in n for n in broken.notes)
    evil = lookup("evil.example", None, env)
    assert evil.credentials is None
    assert any("not a valid name" in n for n in evil.notes)
    assert log.read_text().splitlines() == [
        "reg.example:5000",
        "https://index.docker.io/v1/",
        "unknown.example",
        "broken.example",
    ]  # each host asked once, by its own name; the plain entry and the bad name ran nothing
    missing = {**env, "PATH": "/usr/bin:/bin"}
    gone = lookup("reg.example:5000", None, missing)
    assert gone.credentials is None
    assert any("docker-credential-mctest" in n and "not on PATH" in n for n in gone.notes)


def test_environment_credentials_go_to_the_named_hosts_only() -> None:
    env = {"MODELCRATE_REGISTRY_USER": "u", "MODELCRATE_REGISTRY_PASSWORD": "p", "HOME": "/nx"}
    none = CredentialStore(environ=env)
    assert none.for_host("127.0.0.1:5000").anonymous  # named by nobody: sent nowhere
    pushed = CredentialStore(environ=env, env_hosts=["127.0.0.1:5000"])
    assert pushed.for_host("127.0.0.1:5000").username == "u"
    for other in ("127.0.0.1:5001", "localhost:5000", "docker.io", "registry-1.docker.io"):
        assert pushed.for_host(other).anonymous, other
    hub = CredentialStore(environ={**env, "MODELCRATE_REGISTRY_HOST": " index.docker.io , x.io"})
    assert hub.for_host("registry-1.docker.io").username == "u"
    assert hub.for_host("x.io").username == "u"
    # MODELCRATE_REGISTRY_HOST, when set, is the whole list: the command line adds nothing
    named = CredentialStore(
        environ={**env, "MODELCRATE_REGISTRY_HOST": "x.io"}, env_hosts=["127.0.0.1:5000"]
    )
    assert named.for_host("127.0.0.1:5000").anonymous
    # which registry containerize names: the push target, else an explicit registry base
    push = _push_ref("127.0.0.1:5000/models/iris:1")
    assert _named_registry(push, "reg.example/py:3.11") == ("127.0.0.1:5000",)
    assert _named_registry(None, "reg.example/py:3.11") == ("reg.example",)
    assert _named_registry(None, None) == ()  # the default base (Docker Hub): never
    assert _named_registry(None, "oci:/tmp/base:t") == ()


def test_which_realms_get_the_registrys_credentials() -> None:
    """The rule itself, for HTTPS registries: same host and HTTPS, or nothing."""
    client = RegistryClient("reg.example", username="alice", password="wonderland")
    mine = Credentials("alice", "wonderland")
    for realm in ("https://reg.example/token", "https://REG.example:443/v2/token?x=1"):
        assert client._realm_credentials(realm, mine) == mine, realm
    for realm in (
        "http://reg.example/token",  # a downgrade to plain HTTP
        "https://reg.example:8443/token",  # another port
        "https://auth.reg.example/token",  # another name
        "https://reg.example.evil.test/token",
        "https://alice@evil.test/token",
        "https://auth.docker.io/token",  # Docker Hub's service is Docker Hub's only
    ):
        assert client._realm_credentials(realm, mine).anonymous, realm
    hub = RegistryClient("index.docker.io", username="alice", password="wonderland")
    assert hub.host == "registry-1.docker.io"
    assert hub._realm_credentials("https://auth.docker.io/token", mine) == mine
    assert hub._realm_credentials("http://auth.docker.io/token", mine).anonymous


# ------------------------------------------------------------------------ real registries


@pytest.fixture(scope="module")
def basic_registry(
    container_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningRegistry]:
    with running_registry(tmp_path_factory.mktemp("basic"), htpasswd=USERS) as reg:
        yield reg


def test_auth_file_entries_for_other_hosts_are_not_sent(
    basic_registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port = basic_registry.host.rsplit(":", 1)[1]
    image, repo = image_of("auth file"), unique("mc/authfile")
    docker_config(
        {
            f"127.0.0.1:{free_port()}": ALICE_AUTH,  # same address, another port
            f"localhost:{port}": ALICE_AUTH,  # same port, another name
            "https://index.docker.io/v1/": ALICE_AUTH,
        }
    )
    with pytest.raises(RegistryError, match="HTTP 401") as err:
        RegistryClient(basic_registry.host, insecure=True).push_image(image, repo, "1")
    assert err.value.hint is not None
    assert f"podman login {basic_registry.host}" in err.value.hint
    # podman's file ($REGISTRY_AUTH_FILE) with the registry's own entry: accepted
    podman_file = write_auth(tmp_path / "podman-auth.json", {basic_registry.host: ALICE_AUTH})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(podman_file))
    client = RegistryClient(basic_registry.host, insecure=True)
    assert client.push_image(image, repo, "1").digest == image.digest
    # docker's file: the same
    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    docker_config({f"http://{basic_registry.host}": ALICE_AUTH})
    assert RegistryClient(basic_registry.host, insecure=True).pull_image(repo, "1") == image


def test_a_credential_helper_against_a_real_registry(
    basic_registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "helper.log"
    script = _helper(tmp_path / "bin", log)
    script.write_text(
        script.read_text()
        .replace("reg.example:5000)", f"{basic_registry.host})")
        .replace('"hu"', '"alice"')
        .replace('"hs"', '"wonderland"')
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    docker_config({}, credHelpers={basic_registry.host: "mctest"})
    image = image_of("helper")
    client = RegistryClient(basic_registry.host, insecure=True)
    assert client.push_image(image, unique("mc/helper"), "1").digest == image.digest
    assert log.read_text().splitlines() == [basic_registry.host]  # asked once, for this host


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    with token_server(
        tmp_path_factory.mktemp("tokens"), users=USERS, refresh_tokens={"rt-alice": "alice"}
    ) as server:
        yield server


@pytest.fixture(scope="module")
def token_registry(
    container_tools: None, tokens: TokenServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningRegistry]:
    with running_registry(tmp_path_factory.mktemp("token-registry"), token=tokens) as reg:
        yield reg


def test_a_realm_on_another_port_gets_no_credentials_unless_named(
    token_registry: RunningRegistry, tokens: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, realm_host = token_registry.host, host_of(tokens.realm)
    image, repo = image_of("realm port"), unique("mc/realm")
    monkeypatch.setenv("MODELCRATE_REGISTRY_USER", "alice")
    monkeypatch.setenv("MODELCRATE_REGISTRY_PASSWORD", "wonderland")
    monkeypatch.setenv("MODELCRATE_REGISTRY_HOST", registry)
    docker_config({registry: ALICE_AUTH})
    tokens.requests.clear()
    for client in (
        RegistryClient(registry, insecure=True),
        RegistryClient(registry, insecure=True, username="alice", password="wonderland"),
    ):
        with pytest.raises(RegistryError, match="HTTP 401") as err:  # anonymous: pull only
            client.push_image(image, repo, "1")
        assert err.value.hint is not None
        assert f"token service is on another host or plain HTTP (http://{realm_host})" in (
            err.value.hint
        )
    assert tokens.requests
    assert [r["auth"] for r in tokens.requests] == [None] * len(tokens.requests)
    # the realm's host named as well: it gets them, and the push goes through
    monkeypatch.setenv("MODELCRATE_REGISTRY_HOST", f"{registry},{realm_host}")
    tokens.requests.clear()
    assert RegistryClient(registry, insecure=True).push_image(image, repo, "1").digest == (
        image.digest
    )
    assert {r["auth"] for r in tokens.requests} == {ALICE}
    # or an auth-file entry for the realm's host
    monkeypatch.delenv("MODELCRATE_REGISTRY_HOST")
    docker_config({registry: ALICE_AUTH, realm_host: ALICE_AUTH})
    assert RegistryClient(registry, insecure=True).push_image(image, repo, "2").digest == (
        image.digest
    )


def test_an_identity_token_goes_to_a_configured_realm(
    token_registry: RunningRegistry, tokens: TokenServer
) -> None:
    realm_host = host_of(tokens.realm)
    docker_config(
        {
            token_registry.host: {"identitytoken": "rt-alice"},
            realm_host: {"identitytoken": "rt-alice"},
        }
    )
    tokens.requests.clear()
    image = image_of("identity token")
    client = RegistryClient(token_registry.host, insecure=True)
    assert client.push_image(image, unique("mc/idtoken"), "1").digest == image.digest
    posts = [r for r in tokens.requests if r.get("method") == "POST"]
    assert posts
    assert posts[0]["query"]["refresh_token"] == ["rt-alice"]
    assert all(r["user"] == "alice" for r in posts)


def test_a_realm_named_localhost_is_not_127_0_0_1(
    container_tools: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        token_server(tmp_path / "t", users=USERS, realm_host="localhost") as local_tokens,
        running_registry(tmp_path / "r", token=local_tokens) as reg,
    ):
        port = host_of(local_tokens.realm).rsplit(":", 1)[1]
        monkeypatch.setenv("MODELCRATE_REGISTRY_USER", "alice")
        monkeypatch.setenv("MODELCRATE_REGISTRY_PASSWORD", "wonderland")
        monkeypatch.setenv("MODELCRATE_REGISTRY_HOST", f"{reg.host},127.0.0.1:{port}")
        image, repo = image_of("localhost realm"), unique("mc/localhost")
        with pytest.raises(RegistryError, match="HTTP 401"):
            RegistryClient(reg.host, insecure=True).push_image(image, repo, "1")
        assert local_tokens.requests
        assert all(r["auth"] is None for r in local_tokens.requests)
        monkeypatch.setenv("MODELCRATE_REGISTRY_HOST", f"{reg.host},localhost:{port}")
        result = RegistryClient(reg.host, insecure=True).push_image(image, repo, "1")
        assert result.digest == image.digest
        assert local_tokens.requests[-1]["auth"] == ALICE


def test_a_recorder_as_the_realm_never_sees_the_registrys_credentials(
    container_tools: None, tokens: TokenServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry names a realm on a second host (which forwards to the real token service):
    credentials for the registry never reach it; credentials configured for it do."""
    with recording_server(forward_to(tokens.realm.rsplit("/", 1)[0])) as realm:
        relayed = TokenServer(f"{realm.url}/token", tokens.service, tokens.issuer, tokens.cert_path)
        with running_registry(tmp_path / "r", token=relayed) as reg:
            image, repo = image_of("recorded realm"), unique("mc/recorded")
            # configured for the realm's host: it is sent there (the recorder can see it)
            docker_config({reg.host: ALICE_AUTH, realm.host: ALICE_AUTH})
            RegistryClient(reg.host, insecure=True).push_image(image, repo, "1")
            assert realm.authorizations
            assert set(realm.authorizations) == {ALICE}
            realm.seen.clear()
            # configured for the registry only, in every way there is
            docker_config({reg.host: ALICE_AUTH})
            monkeypatch.setenv("MODELCRATE_REGISTRY_USER", "alice")
            monkeypatch.setenv("MODELCRATE_REGISTRY_PASSWORD", "wonderland")
            monkeypatch.setenv("MODELCRATE_REGISTRY_HOST", reg.host)
            for client in (
                RegistryClient(reg.host, insecure=True),
                RegistryClient(reg.host, insecure=True, username="alice", password="wonderland"),
            ):
                assert client.pull_image(repo, "1") == image  # anonymous pull still works
                with pytest.raises(RegistryError, match="HTTP 401"):
                    client.push_image(image_of("not allowed"), repo, "2")
            assert realm.seen
            assert realm.authorizations == []


def test_redirects_and_uploads_to_another_host_carry_no_credentials() -> None:
    """A registry that wants Basic auth, redirects blob reads to storage and hands out upload
    Locations on another host (the recorder): the credentials stay with the registry."""
    blob = b"layer bytes"
    digest = sha256_digest(blob)
    front: list[tuple[str, str, str | None]] = []

    def storage(method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        if method == "PUT":
            return Answer(201, {"Docker-Content-Digest": digest})
        return Answer(200, {}, blob)

    with recording_server(storage) as elsewhere:

        class Registry(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                auth = self.headers.get("Authorization")
                front.append((self.command, self.path, auth))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if auth != ALICE:
                    self._answer(401, {"WWW-Authenticate": 'Basic realm="test"'})
                elif self.command in ("GET", "HEAD"):
                    self._answer(307, {"Location": f"{elsewhere.url}/storage/{digest}"})
                elif self.command == "POST":
                    upload = (
                        f"{elsewhere.url}/upload/1?state=x"
                        if "other" in self.path
                        else "/v2/mc/here/blobs/uploads/1?state=y"
                    )
                    self._answer(202, {"Location": upload})
                else:  # PUT of an upload that stayed on this host
                    self._answer(201, {"Docker-Content-Digest": digest})

            def _answer(self, status: int, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = do_POST = do_PUT = _handle

        server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            client = RegistryClient(
                f"127.0.0.1:{server.server_port}",
                insecure=True,
                username="alice",
                password="wonderland",
            )
            assert client.get_blob("mc/other", digest) == blob
            assert client.blob_exists("mc/other", digest)
            assert client.push_blob("mc/other", blob, digest) == len(blob)
            assert client.push_blob("mc/here", blob, digest) == len(blob)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
    assert [s.method for s in elsewhere.seen] == ["GET", "HEAD", "PUT"]
    assert elsewhere.authorizations == []
    # the registry itself got them on every kind of request, the upload on its own host included
    assert {m for m, _, auth in front if auth == ALICE} == {"GET", "HEAD", "POST", "PUT"}
    assert [p.split("?")[0] for m, p, _ in front if m == "PUT"] == ["/v2/mc/here/blobs/uploads/1"]


# ------------------------------------------------------------------------ Docker Hub


def _hub(method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
    """A forward proxy that plays Docker Hub: the registry wants a token from auth.docker.io."""
    if target.startswith("http://auth.docker.io/token"):
        return Answer(200, {"Content-Type": "application/json"}, b'{"token": "anon-hub"}')
    if target.startswith("http://registry-1.docker.io/v2/"):
        if headers.get("authorization") == "Bearer anon-hub":
            error = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "not in this test"}]}
            return Answer(404, {"Content-Type": "application/json"}, json.dumps(error).encode())
        challenge = 'Bearer realm="http://auth.docker.io/token",service="registry.docker.io"'
        return Answer(401, {"WWW-Authenticate": challenge})
    return Answer(502)


def test_the_default_base_on_docker_hub_gets_no_push_credentials(
    registry: RunningRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``containerize --push REG/...`` with MODELCRATE_REGISTRY_* set: the default base is
    pulled from Docker Hub (here a recording proxy) without them, the token realm included."""
    store = Store(tmp_path / "store")
    crate_with_lock(store, "hub", b"# nothing locked\n")
    monkeypatch.setenv("MODELCRATE_REGISTRY_USER", "alice")
    monkeypatch.setenv("MODELCRATE_REGISTRY_PASSWORD", "wonderland")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    docker_config({registry.host: ALICE_AUTH, "quay.io": ALICE_AUTH})
    with recording_server(_hub) as hub:
        monkeypatch.setenv("http_proxy", hub.url)
        with pytest.raises(RegistryError, match="MANIFEST_UNKNOWN"):
            containerize(
                "hub", store=store, push=f"{registry.host}/m/hub:1", insecure_registry=True
            )
        hosts = {s.target.split("/")[2] for s in hub.seen}
        assert hosts == {"registry-1.docker.io", "auth.docker.io"}
        assert set(hub.authorizations) == {"Bearer anon-hub"}  # only the token Hub gave out
        # credentials named for Docker Hub (any alias) do go there, to its token service too
        hub.seen.clear()
        monkeypatch.setenv("MODELCRATE_REGISTRY_HOST", "index.docker.io")
        with pytest.raises(RegistryError, match="MANIFEST_UNKNOWN"):
            containerize(
                "hub", store=store, output=f"oci:{tmp_path / 'out'}", insecure_registry=True
            )
        realm = [s for s in hub.seen if s.target.startswith("http://auth.docker.io/")]
        assert [s.authorization for s in realm] == [ALICE]
