"""A real OCI registry for tests: Debian's ``docker-registry`` on 127.0.0.1, plus auth helpers.

``running_registry(workdir)`` starts ``docker-registry serve CONFIG`` on a free loopback port with
its storage in ``workdir``, waits until ``/v2/`` answers and stops the process on exit. Variants:

- ``htpasswd={"user": "password"}``: Basic auth (bcrypt hashes made with the system libcrypt, so
  no ``htpasswd`` binary or Python package is needed);
- ``token=TokenServer``: Bearer-token auth against a tiny local token service
  (:func:`token_server`): RS256 JWTs with an ``x5c`` chain that the registry verifies against a
  self-signed certificate, as the distribution token spec describes;
- ``readonly=True``: the registry refuses every write (maintenance mode).

A missing ``docker-registry`` binary is an error, never a skip (``scripts/system-deps.sh``
installs it).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime
import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REGISTRY_BINARY = "docker-registry"


@dataclass(frozen=True)
class RunningRegistry:
    """A started registry: ``host`` is ``127.0.0.1:PORT`` (plain HTTP)."""

    host: str
    root: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class TokenServer:
    """A token service: ``realm`` URL, the ``service``/``issuer`` names and the cert to trust.

    ``requests`` records each token request (query parameters and the authenticated user) so
    tests can check what a client asked for.
    """

    realm: str
    service: str
    issuer: str
    cert_path: Path
    requests: list[dict[str, Any]] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_registry(
    workdir: Path,
    *,
    htpasswd: Mapping[str, str] | None = None,
    token: TokenServer | None = None,
    readonly: bool = False,
    timeout: float = 20.0,
) -> Iterator[RunningRegistry]:
    """Start a registry in ``workdir`` (storage, config, log); stop it on exit."""
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        raise RuntimeError(
            f"{REGISTRY_BINARY} not found: install Debian's docker-registry "
            "(scripts/system-deps.sh)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    storage: dict[str, Any] = {"filesystem": {"rootdirectory": str(workdir / "data")}}
    if readonly:
        storage["maintenance"] = {"readonly": {"enabled": True}}
    auth: dict[str, Any] = {}
    if htpasswd is not None:
        lines = "".join(f"{user}:{bcrypt_hash(pw)}\n" for user, pw in htpasswd.items())
        (workdir / "htpasswd").write_text(lines)
        auth = {"htpasswd": {"realm": "modelcrate-test", "path": str(workdir / "htpasswd")}}
    elif token is not None:
        auth = {
            "token": {
                "realm": token.realm,
                "service": token.service,
                "issuer": token.issuer,
                "rootcertbundle": str(token.cert_path),
            }
        }
    last_error = ""
    for _attempt in range(5):  # a free port can be taken between probe and bind: retry
        port = free_port()
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": storage,
            "http": {"addr": f"127.0.0.1:{port}", "secret": "modelcrate-test-secret"},
        }
        if auth:
            config["auth"] = auth
        config_path = workdir / "config.yml"
        config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        log = workdir / "registry.log"
        with open(log, "wb") as log_fh:
            proc = subprocess.Popen(
                [binary, "serve", str(config_path)],
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        registry = RunningRegistry(f"127.0.0.1:{port}", workdir / "data", log)
        try:
            if _wait_ready(registry.url, proc, timeout):
                yield registry
                return
            last_error = registry.log_tail()
        finally:
            _stop(proc)
    raise RuntimeError(f"docker-registry did not start:\n{last_error}")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/v2/", timeout=2):
                return True
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def bcrypt_hash(password: str) -> str:
    """A ``$2y$`` bcrypt hash, as htpasswd -B makes, from the system's libcrypt (libxcrypt)."""
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2y$", 5, None, 0)
    hashed = lib.crypt(password.encode(), salt) if salt else None
    if not hashed or not hashed.startswith(b"$2y$"):
        raise RuntimeError("libcrypt cannot make bcrypt hashes on this system")
    return str(hashed.decode())


@contextlib.contextmanager
def token_server(
    workdir: Path,
    *,
    users: Mapping[str, str],
    anonymous_pull: bool = True,
    service: str = "modelcrate-test-registry",
    issuer: str = "modelcrate-test-issuer",
    realm_host: str = "127.0.0.1",
    refresh_tokens: Mapping[str, str] | None = None,
) -> Iterator[TokenServer]:
    """A Bearer token service on loopback (like auth.docker.io), stopped on exit.

    Valid Basic credentials get every action they ask for; anonymous requests get ``pull`` only
    (or nothing when ``anonymous_pull`` is False); wrong credentials get 401. ``POST`` takes the
    OAuth2 refresh-token grant (form ``grant_type=refresh_token&refresh_token=...``), with
    ``refresh_tokens`` mapping each valid refresh token to its user. ``realm_host``: the name
    the realm URL uses for this loopback server (``localhost`` is another name for it).
    """
    refresh = dict(refresh_tokens or {})
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.x509.oid import NameOID

    workdir.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelcrate test token signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = workdir / "token-signer.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    def b64url(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def sign(user: str, access: list[dict[str, Any]]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
        t = int(time.time())
        claims = {
            "iss": issuer,
            "sub": user,
            "aud": service,
            "exp": t + 300,
            "nbf": t - 5,
            "iat": t,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        )
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"

    port = free_port()
    state = TokenServer(f"http://{realm_host}:{port}/token", service, issuer, cert_path)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            user = refresh.get((form.get("refresh_token") or [""])[0])
            grant = form.get("grant_type") == ["refresh_token"]
            state.requests.append(
                {"query": form, "user": user, "denied": user is None, "method": "POST"}
            )
            if not grant or user is None:
                self._reply(401, {"details": "invalid refresh token"})
                return
            self._grant(urllib.parse.urlsplit(self.path).path, form, user)

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            user = None
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                raw = base64.b64decode(header[6:]).decode(errors="replace")
                name_, _, password = raw.partition(":")
                if users.get(name_) != password:
                    state.requests.append(
                        {"query": query, "user": None, "denied": True, "auth": header}
                    )
                    self._reply(401, {"details": "incorrect username or password"})
                    return
                user = name_
            state.requests.append(
                {"query": query, "user": user, "denied": False, "auth": header or None}
            )
            self._grant(url.path, query, user)

        def _grant(self, path: str, query: dict[str, list[str]], user: str | None) -> None:
            if path != "/token" or query.get("service") != [service]:
                self._reply(400, {"details": "unknown service"})
                return
            access = []
            for scope in query.get("scope", []):
                for one in scope.split(" "):
                    kind, _, rest = one.partition(":")
                    repo, _, actions = rest.rpartition(":")
                    wanted = [a for a in actions.split(",") if a]
                    granted = wanted if user else (["pull"] if anonymous_pull else [])
                    granted = [a for a in wanted if a in granted]
                    access.append({"type": kind, "name": repo, "actions": granted})
            jwt = sign(user or "", access)
            self._reply(200, {"token": jwt, "access_token": jwt, "expires_in": 300})

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="token-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
