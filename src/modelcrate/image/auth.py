"""Registry authentication: credentials, ``WWW-Authenticate`` challenges and bearer tokens.

Registries answer 401 with a challenge. ``Basic realm=...`` wants the user and password on every
request. ``Bearer realm=...,service=...,scope=...`` (the distribution token spec, used by Docker
Hub, GHCR, Harbor, ...) wants a token from the ``realm`` URL: ``GET realm?service=S&scope=X``,
with Basic credentials when there are any, anonymous otherwise; the JSON answer holds ``token``
(or ``access_token``), sent back as ``Authorization: Bearer <token>``.

Credentials belong to one registry host and go to that host only (:class:`CredentialStore`):

- ``MODELCRATE_REGISTRY_USER`` and ``MODELCRATE_REGISTRY_PASSWORD``, or
  ``MODELCRATE_REGISTRY_TOKEN`` (a ready bearer token), apply to the hosts listed in
  ``MODELCRATE_REGISTRY_HOST`` (comma-separated); when it is unset, to the registry the command
  line names (``containerize``: the ``--push`` registry, else an explicit ``--base`` one), never
  to a default such as Docker Hub for the default base;
- otherwise the container tools' auth files (:mod:`modelcrate.image.authfiles`), per host.

Requests carry ``Authorization`` only to the registry's own scheme, host and port: never along a
redirect (blob storage), never to an upload ``Location`` on another host. A token ``realm`` gets
the registry's credentials only when it is on the registry's own host (and HTTPS, unless the
registry itself is plain HTTP); a realm on any other host (another port or name included) gets
the credentials configured for *that* host, or none. Docker Hub's token service
``auth.docker.io`` counts as Docker Hub, as docker treats it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from modelcrate.errors import InputError

ENV_USER = "MODELCRATE_REGISTRY_USER"
ENV_PASSWORD = "MODELCRATE_REGISTRY_PASSWORD"
ENV_TOKEN = "MODELCRATE_REGISTRY_TOKEN"
ENV_HOST = "MODELCRATE_REGISTRY_HOST"
CREDENTIALS_HINT = (
    "log in with 'podman login {host}' or 'docker login {host}' (modelcrate reads their auth "
    f"files), or set {ENV_USER} and {ENV_PASSWORD} (or {ENV_TOKEN}) with {ENV_HOST}={{host}}"
)
HUB_REALM_HOSTS: Final = frozenset({"auth.docker.io"})  # Docker Hub's token service
MAX_TOKEN_RESPONSE = 1 << 20

_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)")
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s"]*)\s*(?:,|$)')


class RegistryError(InputError):
    """A registry refused a request or could not be reached; ``status`` and ``body`` say why."""

    code = "registry"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str = "",
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, path=path, hint=hint)
        self.status = status
        self.body = body


def credentials_hint(host: str) -> str:
    return CREDENTIALS_HINT.format(host=host)


@dataclass(frozen=True)
class Credentials:
    """A user and password, or a ready bearer token, or an identity (OAuth refresh) token, or
    nothing (anonymous); ``source`` says where they came from (never the secret)."""

    username: str | None = None
    password: str | None = None
    token: str | None = None
    identity_token: str | None = None
    source: str = field(default="", compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        """The ``MODELCRATE_REGISTRY_*`` credentials, whatever host they are meant for."""
        env = os.environ if environ is None else environ
        return cls(
            env.get(ENV_USER) or None,
            env.get(ENV_PASSWORD) or None,
            env.get(ENV_TOKEN) or None,
            source="MODELCRATE_REGISTRY_* environment variables",
        )

    @property
    def has_password(self) -> bool:
        return self.username is not None and self.password is not None

    @property
    def anonymous(self) -> bool:
        return not (self.has_password or self.token or self.identity_token)

    def basic(self) -> str:
        """The ``Authorization`` value for Basic auth."""
        raw = f"{self.username or ''}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()


class CredentialStore:
    """Which credentials go to which registry host (see the module doc).

    ``explicit``: credentials given in code, for ``explicit_host`` only. ``env_hosts``: the
    hosts the ``MODELCRATE_REGISTRY_*`` credentials are for when ``MODELCRATE_REGISTRY_HOST`` is
    unset (the registry the command line names). Lookups are cached per host and repository.
    """

    def __init__(
        self,
        *,
        explicit: Credentials | None = None,
        explicit_host: str | None = None,
        env_hosts: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        from modelcrate.image.authfiles import registry_key

        self._environ = os.environ if environ is None else environ
        self._explicit = explicit if explicit is not None and not explicit.anonymous else None
        self._explicit_key = registry_key(explicit_host) if explicit_host else None
        named = self._environ.get(ENV_HOST, "")
        hosts = [h for h in named.split(",") if h.strip()] if named.strip() else list(env_hosts)
        self._env_keys = frozenset(registry_key(h) for h in hosts)
        self._cache: dict[tuple[str, str], Credentials] = {}
        self.notes: list[str] = []

    def preset(self, host: str) -> Credentials:
        """The credentials given for ``host`` in code or the environment (no file is read)."""
        from modelcrate.image.authfiles import registry_key

        key = registry_key(host)
        if self._explicit is not None and key == self._explicit_key:
            return self._explicit
        if key in self._env_keys:
            return Credentials.from_env(self._environ)
        return Credentials()

    def for_host(self, host: str, repository: str | None = None) -> Credentials:
        """The credentials for registry ``host`` (anonymous ``Credentials()`` when none)."""
        from modelcrate.image.authfiles import lookup, registry_key

        key = registry_key(host)
        cache_key = (key, repository or "")
        if cache_key in self._cache:
            return self._cache[cache_key]
        creds = self.preset(host)
        if creds.anonymous:
            found = lookup(host, repository, self._environ)
            self.notes.extend(n for n in found.notes if n not in self.notes)
            creds = found.credentials or creds
        self._cache[cache_key] = creds
        return creds


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: the scheme (lower case) and its parameters."""

    scheme: str
    params: Mapping[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """All challenges of a ``WWW-Authenticate`` value (RFC 7235 form, quoted strings allowed)."""
    out: list[Challenge] = []
    pos = 0
    while pos < len(header):
        scheme = _SCHEME.match(header, pos)
        if scheme is None:
            break
        pos = scheme.end()
        params: dict[str, str] = {}
        while (param := _PARAM.match(header, pos)) is not None and param.end() > pos:
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            pos = param.end()
        out.append(Challenge(scheme.group(1).lower(), params))
        while pos < len(header) and header[pos] in ", ":
            pos += 1
    return out


def fetch_token(
    challenge: Challenge,
    scope: str | None,
    credentials: Credentials,
    *,
    opener: urllib.request.OpenerDirector,
    timeout: float,
) -> str:
    """Ask the challenge's ``realm`` for a bearer token for ``scope``, with ``credentials``
    (which the caller chose for the realm's host): Basic for a user and password, the OAuth2
    refresh-token grant (``POST``) for an identity token, anonymous otherwise."""
    realm = challenge.params.get("realm")
    if not realm or urllib.parse.urlsplit(realm).scheme not in ("http", "https"):
        raise RegistryError(
            f"the registry's Bearer challenge has no usable realm ({realm!r})",
            hint="the registry's token service is misconfigured",
        )
    query: list[tuple[str, str]] = []
    if service := challenge.params.get("service"):
        query.append(("service", service))
    if scope:
        query.append(("scope", scope))
    if credentials.identity_token:
        form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", credentials.identity_token),
            ("client_id", "modelcrate"),
            *query,
        ]
        request = urllib.request.Request(
            realm,
            data=urllib.parse.urlencode(form).encode(),
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    else:
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, method="GET")
    if credentials.has_password:
        request.add_unredirected_header("Authorization", credentials.basic())
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_TOKEN_RESPONSE)
    except urllib.error.HTTPError as exc:
        text = exc.read(4096).decode(errors="replace")
        denied = exc.code in (401, 403)
        raise RegistryError(
            f"the token service {realm} refused the {'credentials' if denied else 'request'} "
            f"(HTTP {exc.code}): {text.strip()[:300]}",
            status=exc.code,
            body=text,
            hint=credentials_hint(_netloc(realm)) if denied else "check the registry address",
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryError(
            f"cannot reach the token service {realm}: {getattr(exc, 'reason', exc)}",
            hint="check the network and the registry address",
        ) from exc
    try:
        data = json.loads(body)
        token = data.get("token") or data.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise RegistryError(
            f"the token service {realm} answered without a token",
            body=body.decode(errors="replace"),
            hint="the registry's token service is misconfigured",
        )
    return token


def _netloc(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc.rpartition("@")[2]


class _RedirectKeepingHead(urllib.request.HTTPRedirectHandler):
    """Follow redirects as urllib does, but keep HEAD a HEAD (urllib 3.11 turns it into GET)."""

    def redirect_request(  # noqa: PLR0917 -- urllib's signature
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            for name in [k for k in new.headers if k.lower() == "authorization"]:
                del new.headers[name]  # whoever set it: credentials never follow a redirect
            if req.get_method() == "HEAD":
                new.method = "HEAD"
        return new


def http_opener() -> urllib.request.OpenerDirector:
    """urllib's opener (proxies from the environment, HTTPS checks) with HEAD-keeping redirects.

    Callers set ``Authorization`` with ``add_unredirected_header`` so that it never follows a
    redirect to blob storage on another host.
    """
    return urllib.request.build_opener(_RedirectKeepingHead)


def error_summary(text: str) -> str:
    """``CODE: message`` of each error in a distribution API error body."""
    try:
        errors: Any = json.loads(text).get("errors")
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}" for e in errors]
    except (ValueError, AttributeError, TypeError):
        return ""
    return "; ".join(parts)
