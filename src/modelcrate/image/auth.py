"""Registry authentication: credentials, ``WWW-Authenticate`` challenges and bearer tokens.

Registries answer 401 with a challenge. ``Basic realm=...`` wants the user and password on every
request. ``Bearer realm=...,service=...,scope=...`` (the distribution token spec, used by Docker
Hub, GHCR, Harbor, ...) wants a token from the ``realm`` URL: ``GET realm?service=S&scope=X``,
with Basic credentials when there are any, anonymous otherwise; the JSON answer holds ``token``
(or ``access_token``), sent back as ``Authorization: Bearer <token>``.

Credentials come from arguments or the environment: ``MODELCRATE_REGISTRY_USER`` and
``MODELCRATE_REGISTRY_PASSWORD``, or ``MODELCRATE_REGISTRY_TOKEN`` (a ready bearer token).
"""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelcrate.errors import InputError

ENV_USER = "MODELCRATE_REGISTRY_USER"
ENV_PASSWORD = "MODELCRATE_REGISTRY_PASSWORD"
ENV_TOKEN = "MODELCRATE_REGISTRY_TOKEN"
CREDENTIALS_HINT = f"set {ENV_USER} and {ENV_PASSWORD} (or {ENV_TOKEN}) for this registry"
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


@dataclass(frozen=True)
class Credentials:
    """A user and password, or a ready bearer token, or nothing (anonymous)."""

    username: str | None = None
    password: str | None = None
    token: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if environ is None else environ
        return cls(
            env.get(ENV_USER) or None, env.get(ENV_PASSWORD) or None, env.get(ENV_TOKEN) or None
        )

    @property
    def has_password(self) -> bool:
        return self.username is not None and self.password is not None

    def basic(self) -> str:
        """The ``Authorization`` value for Basic auth."""
        raw = f"{self.username or ''}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()


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
    """Ask the challenge's ``realm`` for a bearer token for ``scope``."""
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
            hint=CREDENTIALS_HINT if denied else "check the registry address",
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
        if new is not None and req.get_method() == "HEAD":
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
