"""Per-registry credentials from the auth files container tools write (``podman login``,
``docker login``), looked up by registry host as those tools do.

Files, first match wins (containers-auth.json(5), then Docker's):

1. ``$REGISTRY_AUTH_FILE``
2. ``$XDG_RUNTIME_DIR/containers/auth.json`` (podman, skopeo, buildah)
3. ``${XDG_CONFIG_HOME:-~/.config}/containers/auth.json``
4. ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``

In each, ``credHelpers[HOST]`` names a credential helper, else an ``auths`` entry holds the
credentials (``auth``: base64 ``user:password``; or ``username``/``password``; ``identitytoken``:
an OAuth refresh token; ``registrytoken``: a bearer token), else ``credsStore`` names the helper
for every host. A helper is the program ``docker-credential-NAME`` on ``PATH``, run as
``docker-credential-NAME get`` with the server name on stdin (no shell, a timeout, a bounded
answer); a helper that is missing or fails gives no credentials and a note for the error hint.

Keys are matched by registry name: ``https://index.docker.io/v1/``, ``docker.io``,
``index.docker.io`` and ``registry-1.docker.io`` are all Docker Hub; a key with a scheme counts
by host only; a key without a scheme may name a namespace (``quay.io/team``), which then applies
to the repositories under it only, most specific first (as podman does). Only the entry for the
host asked about is ever read out: nothing here sends anything anywhere.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from modelcrate.image.auth import Credentials

HUB_KEY: Final = "docker.io"
HUB_ALIASES: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
HUB_SERVER: Final = "https://index.docker.io/v1/"  # what docker login writes, and helpers get
HELPER_PREFIX: Final = "docker-credential-"
HELPER_TIMEOUT_S: Final = 30.0
MAX_FILE_BYTES: Final = 4 << 20
MAX_HELPER_OUTPUT: Final = 1 << 20
_HELPER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DEFAULT_PORTS: Final = {"https": "443", "http": "80"}


def registry_key(name: str) -> str:
    """The host part of a registry name or URL as auth files key it: lower case, the default
    port of a URL's scheme dropped, every Docker Hub alias as ``docker.io``."""
    text = name.strip()
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        host = parts.netloc.lower().rpartition("@")[2]
        default = _DEFAULT_PORTS.get(parts.scheme.lower())
        if default and host.endswith(":" + default):
            host = host[: -len(default) - 1]
    else:
        host = text.split("/", 1)[0].lower()
    return HUB_KEY if host in HUB_ALIASES else host


def _entry_key(key: str) -> tuple[str, str]:
    """``(host key, namespace)`` of an auth-file key; the namespace is "" for a host entry."""
    text = key.strip()
    if "://" in text:
        return registry_key(text), ""
    host, _, path = text.partition("/")
    return registry_key(host), path.strip("/")


@dataclass
class Lookup:
    """Credentials found for one host, or none; ``notes`` say why a source gave nothing."""

    credentials: Credentials | None = None
    notes: list[str] = field(default_factory=list)


def auth_file_paths(environ: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home())
    paths = []
    if env.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(Path(env["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    paths.append(Path(env.get("XDG_CONFIG_HOME") or home / ".config", "containers", "auth.json"))
    docker = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"
    paths.append(docker / "config.json")
    return paths


def lookup(
    host: str, repository: str | None = None, environ: Mapping[str, str] | None = None
) -> Lookup:
    """The credentials the auth files hold for registry ``host`` (and ``repository``)."""
    env = os.environ if environ is None else environ
    key = registry_key(host)
    found = Lookup()
    for path in auth_file_paths(env):
        doc = _read(path, found)
        if doc is None:
            continue
        creds = _from_file(doc, path, key=key, repository=repository or "", env=env, found=found)
        if creds is not None:
            found.credentials = creds
            return found
    return found


def _read(path: Path, found: Lookup) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError:
        return None
    try:
        if len(raw) > MAX_FILE_BYTES:
            raise ValueError("larger than 4 MiB")
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        found.notes.append(f"{path} is not a readable auth file ({exc})")
        return None
    return doc


def _from_file(
    doc: dict[str, Any],
    path: Path,
    *,
    key: str,
    repository: str,
    env: Mapping[str, str],
    found: Lookup,
) -> Credentials | None:
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for name, helper in helpers.items():
            if isinstance(name, str) and registry_key(name) == key and isinstance(helper, str):
                return _helper(helper, _server(key, name), path, env, found)
    auths = doc.get("auths")
    if isinstance(auths, dict):
        best: tuple[int, Credentials] | None = None
        for name, entry in auths.items():
            if not isinstance(name, str) or not isinstance(entry, dict):
                continue
            host, namespace = _entry_key(name)
            if host != key or not _under(repository, namespace):
                continue
            creds = _entry_credentials(entry, f"{path} ({name})", found)
            if creds is not None and (best is None or len(namespace) > best[0]):
                best = (len(namespace), creds)
        if best is not None:
            return best[1]
    store = doc.get("credsStore")
    if isinstance(store, str) and store:
        return _helper(store, _server(key, key), path, env, found)
    return None


def _under(repository: str, namespace: str) -> bool:
    return not namespace or repository == namespace or repository.startswith(namespace + "/")


def _server(key: str, written: str) -> str:
    """The server name a helper is asked about: Docker Hub's legacy URL, else the host."""
    return HUB_SERVER if key == HUB_KEY else written


def _entry_credentials(entry: dict[str, Any], where: str, found: Lookup) -> Credentials | None:
    user = entry.get("username") if isinstance(entry.get("username"), str) else None
    password = entry.get("password") if isinstance(entry.get("password"), str) else None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            found.notes.append(f"the auth entry in {where} is not base64 of user:password")
            return None
        user, sep, password = decoded.partition(":")
        if not sep:
            found.notes.append(f"the auth entry in {where} has no ':' between user and password")
            return None
    identity = entry.get("identitytoken")
    registry_token = entry.get("registrytoken")
    creds = Credentials(
        username=user or None,
        password=password or None,
        token=registry_token if isinstance(registry_token, str) and registry_token else None,
        identity_token=identity if isinstance(identity, str) and identity else None,
        source=where,
    )
    usable = creds.has_password or creds.token or creds.identity_token
    return creds if usable else None


def _helper(
    name: str, server: str, path: Path, env: Mapping[str, str], found: Lookup
) -> Credentials | None:
    where = f"credential helper {HELPER_PREFIX}{name} (named in {path})"
    if not _HELPER_NAME.match(name):
        found.notes.append(f"{path} names a credential helper {name!r} that is not a valid name")
        return None
    program = shutil.which(HELPER_PREFIX + name, path=env.get("PATH"))
    if program is None:
        found.notes.append(f"the {where} is not on PATH")
        return None
    try:
        proc = subprocess.run(
            [program, "get"],
            input=(server + "\n").encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT_S,
            check=False,
            env=dict(env),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        found.notes.append(f"the {where} could not run: {exc}")
        return None
    if proc.returncode != 0:
        said = proc.stdout[:200].decode(errors="replace").strip()
        if "not found" not in said.lower():
            found.notes.append(f"the {where} failed (exit {proc.returncode}): {said}")
        return None
    try:
        if len(proc.stdout) > MAX_HELPER_OUTPUT:
            raise ValueError("answer too large")
        doc = json.loads(proc.stdout)
        user, secret = doc["Username"], doc["Secret"]
        if not isinstance(user, str) or not isinstance(secret, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        found.notes.append(f"the {where} answered something that is not its JSON")
        return None
    if user == "<token>":  # docker's marker for an identity (refresh) token
        return Credentials(identity_token=secret or None, source=where)
    return Credentials(username=user or None, password=secret or None, source=where)
