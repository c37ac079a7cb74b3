"""A client for the OCI distribution API (registry v2), on the standard library only.

Pull: manifests by tag or digest (an index or Docker manifest list resolves to one platform),
blobs verified against their digest; redirects to blob storage are followed without the
registry's ``Authorization`` header. Push: each blob is checked with ``HEAD`` first and skipped
when present (or mounted from another repository of the same registry), uploaded otherwise
(``POST`` then one monolithic ``PUT ?digest=``, digest checked on both sides); the manifest is
``PUT`` last, so a push is reported done only once the registry holds the whole image.

Authentication (anonymous, Basic, Bearer tokens) follows the registry's ``WWW-Authenticate``
challenges, with credentials scoped to the registry's host (and a token realm's own host); see
:mod:`modelcrate.image.auth`. ``Authorization`` goes only to the registry's own scheme, host and
port: not along redirects, not to an upload ``Location`` elsewhere. ``insecure=True`` talks
plain HTTP (a registry on loopback); otherwise HTTPS with certificate checks.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from modelcrate._fs import atomic_write_bytes
from modelcrate.errors import InputError
from modelcrate.image.auth import (
    HUB_REALM_HOSTS,
    Challenge,
    Credentials,
    CredentialStore,
    RegistryError,
    credentials_hint,
    error_summary,
    fetch_token,
    http_opener,
    parse_challenges,
)
from modelcrate.image.authfiles import HUB_KEY, registry_key
from modelcrate.image.oci import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    SHA256_RE,
    Image,
    Platform,
    assemble_image,
    check_platform,
    media_type_of,
    parse_index,
    parse_manifest,
    select_platform,
)
from modelcrate.image.tarlayer import sha256_digest

Progress = Callable[[str], None]
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))


@dataclass(frozen=True)
class PushResult:
    """What a push did: the image digest and how many bytes and blobs went over the wire."""

    digest: str
    repository: str
    tag: str
    uploaded_bytes: int
    uploaded_blobs: int
    skipped_blobs: int
    mounted_blobs: int


@dataclass(frozen=True)
class _Response:
    status: int
    headers: dict[str, str]
    body: bytes


class RegistryClient:
    """One registry host. Library code: reports progress through ``progress``, never prints.

    Credentials: ``username``/``password``/``token`` given here are for this host; without them,
    the ``MODELCRATE_REGISTRY_*`` variables apply when ``MODELCRATE_REGISTRY_HOST`` (or else
    ``env_hosts``, the hosts the caller's user named) lists this host, then the auth files
    (``credentials`` replaces all of that with a store the caller made).
    """

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 300.0,
        progress: Progress | None = None,
        env_hosts: Iterable[str] = (),
        credentials: CredentialStore | None = None,
    ) -> None:
        self.host = DOCKER_HUB_API if registry_key(host) == HUB_KEY else host
        self.key = registry_key(self.host)
        self.insecure = insecure
        self.base_url = f"{'http' if insecure else 'https'}://{self.host}"
        self._origin = _origin(self.base_url)
        self.store = credentials or CredentialStore(
            explicit=Credentials(username, password, token, source="arguments"),
            explicit_host=self.host,
            env_hosts=env_hosts,
        )
        self.timeout = timeout
        self._progress = progress
        self._opener = http_opener()
        self._static: str | None = self.store.preset(self.host).token
        self._basic: dict[str | None, str] = {}
        self._bearer: dict[tuple[str | None, bool], str] = {}
        self._withheld: str | None = None  # a token realm on another host that got nothing

    # -- reading -------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the host speaks the registry API (and that credentials, if needed, work)."""
        self._request("GET", "/v2/", None, push=False, what="the API check", ok=(200,))

    def blob_exists(self, repo: str, digest: str, *, push: bool = False) -> bool:
        path = f"/v2/{repo}/blobs/{digest}"
        response = self._request("HEAD", path, repo, push=push, what="a blob check", ok=(200, 404))
        return response.status == 200

    def get_blob(self, repo: str, digest: str) -> bytes:
        """A blob, verified against ``digest``."""
        body = self._request(
            "GET", f"/v2/{repo}/blobs/{digest}", repo, push=False, what=f"blob {digest}", ok=(200,)
        ).body
        if sha256_digest(body) != digest:
            raise RegistryError(
                f"blob {digest} from {self.host}/{repo} does not match its digest",
                hint="the registry or a proxy corrupted it; try again",
            )
        return body

    def get_raw_manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        """``(bytes, media type, digest)`` of the manifest or index at ``ref`` (tag or digest)."""
        response = self._request(
            "GET",
            f"/v2/{repo}/manifests/{ref}",
            repo,
            push=False,
            what=f"manifest {repo}:{ref}",
            ok=(200,),
            headers={"Accept": _ACCEPT},
        )
        body = response.body
        if len(body) > MAX_MANIFEST_BYTES:
            raise RegistryError(f"manifest {repo}:{ref} is larger than 4 MiB")
        digest = sha256_digest(body)
        if SHA256_RE.match(ref) and digest != ref:
            raise RegistryError(
                f"manifest {repo}@{ref} does not match its digest",
                hint="the registry or a proxy corrupted it; try again",
            )
        declared = response.headers.get("content-type", "").split(";")[0].strip()
        media_type = declared if declared in (*MANIFEST_TYPES, *INDEX_TYPES) else ""
        return body, media_type or media_type_of(body, f"manifest {repo}:{ref}"), digest

    def get_manifest(
        self, repo: str, ref: str, platform: str | Platform | None = "linux/amd64"
    ) -> tuple[bytes, str, str]:
        """An image manifest; an index is resolved to ``platform`` (linux/amd64 by default)."""
        body, media_type, digest = self.get_raw_manifest(repo, ref)
        if media_type in INDEX_TYPES:
            index = parse_index(body, f"index {repo}:{ref}")
            want = Platform.of(platform or "linux/amd64")
            entry = select_platform(index, want, f"{self.host}/{repo}:{ref}")
            body, media_type, digest = self.get_raw_manifest(repo, entry.digest)
        if media_type not in MANIFEST_TYPES:
            raise RegistryError(
                f"{self.host}/{repo}:{ref} is a {media_type}, not an image manifest",
                hint="only OCI and Docker schema 2 images are supported",
            )
        return body, media_type, digest

    def pull_image(
        self,
        repo: str,
        ref: str,
        platform: str | Platform | None = "linux/amd64",
        *,
        blob_cache: Path | None = None,
    ) -> Image:
        """The whole image (manifest, config, every layer), each blob verified.

        With ``blob_cache`` (a folder), blobs found there (``sha256/<hex>``, digest checked) are
        not downloaded again, and downloaded ones are stored there atomically.
        """
        where = f"{self.host}/{repo}:{ref}"
        body, _media_type, digest = self.get_manifest(repo, ref, platform)
        manifest = parse_manifest(body, f"manifest {where}")
        config_blob = self._cached_blob(repo, manifest.config.digest, blob_cache)
        blobs = {}
        for layer in manifest.layers:
            blobs[layer.digest] = self._cached_blob(repo, layer.digest, blob_cache, layer.size)
        image = assemble_image(body, config_blob, blobs, where)
        check_platform(image, Platform.of(platform) if platform else None, where)
        self._report(f"pulled {where} ({digest})")
        return image

    def _cached_blob(self, repo: str, digest: str, cache: Path | None, size: int = 0) -> bytes:
        path = None if cache is None else cache / "sha256" / digest.removeprefix("sha256:")
        if path is not None and path.is_file():
            data = path.read_bytes()
            if sha256_digest(data) == digest:
                return data
        if size:
            self._report(f"pulling {digest[:19]} ({size} bytes)")
        data = self.get_blob(repo, digest)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, data)
            except OSError:  # a cache that cannot be written only costs a download next time
                pass
        return data

    # -- writing -------------------------------------------------------------------------------

    def push_blob(
        self, repo: str, blob: bytes, digest: str | None = None, *, mount_from: str | None = None
    ) -> int:
        """Upload ``blob`` (or mount it from ``mount_from``); returns the bytes uploaded."""
        actual = sha256_digest(blob)
        if digest is not None and digest != actual:
            raise InputError(f"blob content does not match its digest {digest} (it is {actual})")
        path = f"/v2/{repo}/blobs/uploads/"
        if mount_from:
            path += "?" + urllib.parse.urlencode({"mount": actual, "from": mount_from})
        started = self._request(
            "POST", path, repo, push=True, what=f"an upload of {actual}", ok=(201, 202)
        )
        if started.status == 201:
            return 0
        location = started.headers.get("location")
        if not location:
            raise RegistryError(f"the registry started an upload of {actual} without a Location")
        url = urllib.parse.urljoin(self.base_url + path, location)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": actual})
        done = self._request(
            "PUT",
            url,
            repo,
            push=True,
            what=f"the upload of {actual}",
            ok=(201,),
            data=blob,
            headers={"Content-Type": "application/octet-stream"},
        )
        echoed = done.headers.get("docker-content-digest")
        if echoed and echoed != actual:
            raise RegistryError(f"the registry stored blob {actual} as {echoed}")
        return len(blob)

    def push_manifest(self, repo: str, ref: str, blob: bytes, media_type: str) -> str:
        """PUT a manifest or index under ``ref`` (a tag or its digest); returns its digest."""
        digest = sha256_digest(blob)
        done = self._request(
            "PUT",
            f"/v2/{repo}/manifests/{ref}",
            repo,
            push=True,
            what=f"manifest {repo}:{ref}",
            ok=(200, 201),
            data=blob,
            headers={"Content-Type": media_type},
        )
        echoed = done.headers.get("docker-content-digest")
        if echoed and echoed != digest:
            raise RegistryError(f"the registry stored manifest {repo}:{ref} as {echoed}")
        return digest

    def push_image(
        self, image: Image, repo: str, tag: str, *, mount_from: str | None = None
    ) -> PushResult:
        """Push every missing blob, then the manifest as ``tag``; skip blobs already there."""
        uploaded = uploaded_blobs = skipped = mounted = 0
        blobs = image.blobs()
        for digest in [image.config_digest, *(layer.digest for layer in image.layers)]:
            blob = blobs[digest]
            if self.blob_exists(repo, digest, push=True):
                skipped += 1
                self._report(f"blob {digest[:19]} already present, skipped")
                continue
            sent = self.push_blob(repo, blob, digest, mount_from=mount_from)
            if sent:
                uploaded += sent
                uploaded_blobs += 1
                self._report(f"pushed blob {digest[:19]} ({sent} bytes)")
            else:
                mounted += 1
                self._report(f"mounted blob {digest[:19]} from {mount_from}")
        digest = self.push_manifest(repo, tag, image.manifest_blob, image.media_type)
        self._report(f"pushed {self.host}/{repo}:{tag} ({digest})")
        return PushResult(digest, repo, tag, uploaded, uploaded_blobs, skipped, mounted)

    # -- HTTP and auth -------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path_or_url: str,
        repo: str | None,
        *,
        push: bool,
        what: str,
        ok: Iterable[int],
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> _Response:
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        response = self._send(method, url, repo, push=push, data=data, headers=headers)
        if response.status == 401:
            challenges = parse_challenges(response.headers.get("www-authenticate", ""))
            if self._authenticate(challenges, repo, push):
                response = self._send(method, url, repo, push=push, data=data, headers=headers)
        if response.status in set(ok):
            return response
        raise self._refused(method, what, response)

    def _send(
        self,
        method: str,
        url: str,
        repo: str | None,
        *,
        push: bool,
        data: bytes | None,
        headers: dict[str, str] | None,
    ) -> _Response:
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        request.add_header("User-Agent", "modelcrate")
        auth = self._auth_header(repo, push) if _origin(url) == self._origin else None
        if auth:  # only to this registry; never sent along a redirect to blob storage
            request.add_unredirected_header("Authorization", auth)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return _Response(response.status, _lower(response.headers.items()), response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return _Response(exc.code, _lower(exc.headers.items()), exc.read())
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryError(
                f"cannot reach the registry {self.base_url}: {reason}",
                hint="check the address and that the registry runs; for a plain-HTTP registry "
                "(e.g. on 127.0.0.1) pass --insecure-registry",
            ) from exc

    def _auth_header(self, repo: str | None, push: bool) -> str | None:
        if self._static:
            return "Bearer " + self._static
        for key in ((repo, push), (repo, True), (None, False)):
            if key in self._bearer:
                return self._bearer[key]
        return self._basic.get(repo) or self._basic.get(None)

    def _authenticate(self, challenges: list[Challenge], repo: str | None, push: bool) -> bool:
        """Act on a 401's challenges; True when a retry with new credentials makes sense."""
        if self._static:
            return False  # a ready token was sent and refused
        creds = self.store.for_host(self.host, repo)
        if creds.token:  # a registry token from an auth file
            self._static = creds.token
            return True
        for challenge in challenges:
            if challenge.scheme == "bearer":
                scope = challenge.params.get("scope")
                if repo is not None:
                    scope = f"repository:{repo}:{'pull,push' if push else 'pull'}"
                token = fetch_token(
                    challenge,
                    scope,
                    self._realm_credentials(challenge.params.get("realm", ""), creds),
                    opener=self._opener,
                    timeout=self.timeout,
                )
                header = "Bearer " + token
                if self._bearer.get((repo, push)) == header:
                    return False
                self._bearer[(repo, push)] = header
                return True
            if challenge.scheme == "basic" and creds.has_password:
                if repo in self._basic:
                    return False  # already sent and refused
                self._basic[repo] = creds.basic()
                return True
        return False

    def _realm_credentials(self, realm: str, registry: Credentials) -> Credentials:
        """What the token service at ``realm`` may get: the registry's credentials when it is
        the registry's own host (HTTPS, unless the registry is plain HTTP), else only those
        configured for the realm's own host."""
        parts = urllib.parse.urlsplit(realm)
        key = registry_key(realm)
        same_host = key == self.key or (self.key == HUB_KEY and key in HUB_REALM_HOSTS)
        if same_host and (parts.scheme == "https" or self.insecure):
            return registry
        own = Credentials() if same_host else self.store.for_host(parts.netloc.rpartition("@")[2])
        if own.anonymous and not registry.anonymous:
            self._withheld = f"{parts.scheme}://{parts.netloc}"
        return own

    def _refused(self, method: str, what: str, response: _Response) -> RegistryError:
        text = response.body[:8192].decode(errors="replace")
        summary = error_summary(text) or text.strip()[:300] or "(no body)"
        if response.status == 401:
            hint = credentials_hint(self.host if self.key != HUB_KEY else HUB_KEY)
            if self._withheld:
                hint += (
                    f"; the registry's token service is on another host or plain HTTP "
                    f"({self._withheld}), which gets no credentials of {self.host}: name its "
                    f"host in MODELCRATE_REGISTRY_HOST or log in to it too if you trust it"
                )
            if self.store.notes:
                hint += "; " + "; ".join(self.store.notes)
        elif response.status == 404 and method in ("GET", "HEAD"):
            hint = "check the repository name and tag (or digest)"
        else:
            hint = "the registry refused the request; its answer says why"
        return RegistryError(
            f"registry {self.host} refused {what} ({method}, HTTP {response.status}): {summary}",
            status=response.status,
            body=text,
            hint=hint,
        )

    def _report(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)


def _origin(url: str) -> tuple[str, str]:
    """``(scheme, host[:port])`` of a URL, the default port dropped, lower case."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    netloc = parts.netloc.lower().rpartition("@")[2]
    default = {"https": ":443", "http": ":80"}.get(scheme, "")
    return scheme, netloc.removesuffix(default) if default else netloc


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in items}
