"""``crate.yaml``: the crate's manifest, its canonical form and its content digest.

The manifest is the edge between a crate on disk and everything that reads it (serve, predict,
export), so it is a Pydantic model: frozen, ``extra="forbid"``. Its identity is
``version = "sha256:" + sha256(canonical_bytes())``, where the canonical form is compact JSON with
sorted keys of every field *except* ``version`` and ``created``: the same inputs give the same
version, byte for byte, whenever they are built. ``created`` is ``SOURCE_DATE_EPOCH`` (else the
Unix epoch), never the clock, so the file's bytes are reproducible too.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelcrate._epoch import source_date_epoch
from modelcrate.crate.canonical import MANIFEST_NAME, NAME_RE, NOT_IN_DIGEST, canonical_json
from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError

SCHEMA_VERSION: Final = "modelcrate.crate/v1"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
CREATED_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
FlavorName = Literal["sklearn", "onnx", "xgboost", "lightgbm"]
RuntimeKind = Literal["onnxruntime", "xgboost", "lightgbm", "skops"]
# Fields that describe *when*, not *what*: left out of the digest.
_NOT_IN_DIGEST = NOT_IN_DIGEST


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Source(_Frozen):
    """The model file the crate was built from (its name only: no user paths in the digest)."""

    path: str
    sha256: str
    size: int = Field(ge=0)
    format: str

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        return _check_hex(value)

    @field_validator("path")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError("source.path must be a bare file name")
        return value


class ArtifactEntry(_Frozen):
    """One safe-format file under ``model/``."""

    path: str
    format: str
    sha256: str
    size: int = Field(ge=0)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        return _check_hex(value)

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        parts = value.split("/")
        if (
            not value.startswith("model/")
            or "\\" in value
            or any(p in ("", ".", "..") for p in parts)
        ):
            raise ValueError(f"artifact path {value!r} must be a plain relative path under model/")
        return value


class Runtime(_Frozen):
    kind: RuntimeKind
    opset: int | None = None


DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_LATENCY_MS = 2.0


class Batching(_Frozen):
    """The server's adaptive batching (``serve.batching``); ``modelcrate serve`` may override."""

    max_batch_size: int = Field(default=DEFAULT_MAX_BATCH_SIZE, ge=1)
    max_latency_ms: float = Field(default=DEFAULT_MAX_LATENCY_MS, ge=0)


class PythonTarget(_Frozen):
    version: str = "3.11"
    platform: str = "linux_x86_64"


class ScanSummary(_Frozen):
    verdict: str
    counts: dict[str, int]
    scanner_version: str


class ParitySummary(_Frozen):
    """What the build's parity check established: ``passed`` on ``rows`` rows within
    ``tolerance`` (3 significant digits).

    The measured ``max_abs_diff`` and ``label_agreement`` are not recorded by builds (``null``):
    they are measurements of the build machine, whose BLAS kernels, SIMD paths and thread counts
    move them in the last bits (and labels at exact ties), and a crate's bytes and version must
    not depend on the machine. ``modelcrate build`` prints them. Crates made before record them.
    """

    rows: int = Field(ge=0)
    tolerance: float
    max_abs_diff: float | None = None
    label_agreement: float | None = None
    passed: bool


class Provenance(_Frozen):
    modelcrate_version: str
    converters: dict[str, str] = Field(default_factory=dict)


class Manifest(_Frozen):
    """The content of ``crate.yaml``."""

    schema_version: Literal["modelcrate.crate/v1"] = SCHEMA_VERSION
    name: str
    version: str
    created: str
    flavor: FlavorName
    source: Source
    artifacts: list[ArtifactEntry]
    signature: dict[str, Any]
    runtime: Runtime
    batching: Batching = Field(default_factory=Batching)
    python: PythonTarget = Field(default_factory=PythonTarget)
    system_packages: list[str] = Field(default_factory=list)
    scan: ScanSummary
    parity: ParitySummary
    provenance: Provenance
    lock_sha256: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(
                f"crate name {value!r} must match [a-z0-9][a-z0-9._-]* (at most 128 characters)"
            )
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not DIGEST_RE.match(value):
            raise ValueError("version must be 'sha256:' followed by 64 lowercase hex digits")
        return value

    @field_validator("created")
    @classmethod
    def _created(cls, value: str) -> str:
        if not CREATED_RE.match(value):
            raise ValueError("created must be RFC 3339 UTC, e.g. 2024-01-31T12:00:00Z")
        return value

    @field_validator("lock_sha256")
    @classmethod
    def _lock(cls, value: str) -> str:
        return _check_hex(value)

    @field_validator("signature")
    @classmethod
    def _signature(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            sig = Signature.from_dict(value)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid signature: {exc}") from exc
        return sig.to_dict()  # normalised: one spelling per signature

    @field_validator("artifacts")
    @classmethod
    def _artifacts(cls, value: list[ArtifactEntry]) -> list[ArtifactEntry]:
        if not value:
            raise ValueError("a crate needs at least one artifact")
        paths = [a.path for a in value]
        if len(set(paths)) != len(paths):
            raise ValueError("artifact paths must be unique")
        return value

    # -- identity --------------------------------------------------------------------------

    def digest_content(self) -> dict[str, Any]:
        """The JSON-ready content the version digest covers (all but version and created)."""
        data = self.model_dump(mode="json")
        return {k: v for k, v in data.items() if k not in _NOT_IN_DIGEST}

    def canonical_bytes(self) -> bytes:
        """Compact JSON, sorted keys, UTF-8, no NaN: the exact bytes the version hashes."""
        return canonical_json(self.digest_content())

    def compute_version(self) -> str:
        return "sha256:" + hashlib.sha256(self.canonical_bytes()).hexdigest()

    def with_version(self) -> Manifest:
        """A copy whose ``version`` is the digest of its content."""
        return self.model_copy(update={"version": self.compute_version()})

    def signature_obj(self) -> Signature:
        return Signature.from_dict(self.signature)

    @property
    def short_version(self) -> str:
        """The first 12 hex digits of the version, as shown in listings."""
        return self.version.removeprefix("sha256:")[:12]

    # -- serialisation ---------------------------------------------------------------------

    def dump_yaml(self) -> bytes:
        """Deterministic YAML: fields in declaration order, block style, UTF-8."""
        import yaml  # type: ignore[import-untyped, unused-ignore]

        text: str = yaml.safe_dump(
            self.model_dump(mode="json"),
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
            width=1_000_000,
        )
        return text.encode("utf-8")


def created_now() -> str:
    """The crate's ``created``: ``SOURCE_DATE_EPOCH`` when set, else 1970-01-01T00:00:00Z.

    Never the clock: two builds of the same inputs give the same bytes (crate.yaml, the SBOM's
    timestamp, the export, the image config), wherever and whenever they run. When a crate
    entered a store is the store index's ``stored``.
    """
    return rfc3339(source_date_epoch())


def rfc3339(epoch: int) -> str:
    """RFC 3339 UTC, second precision."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def parse_manifest(data: bytes, *, path: str) -> Manifest:
    """Parse and validate ``crate.yaml`` bytes; InputError naming ``path`` when they are bad."""
    import yaml  # type: ignore[import-untyped, unused-ignore]

    # libyaml's C parser where PyYAML has it (the manylinux wheels do): same safe subset of
    # YAML, ten times faster than the pure-Python one (a server's start-up reads this file)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        raw = yaml.load(data, Loader=loader)  # a safe loader, C or Python
    except yaml.YAMLError as exc:
        raise InputError(
            f"crate manifest is not valid YAML: {exc}",
            path=path,
            hint="rebuild the crate with 'modelcrate build' or restore crate.yaml",
        ) from exc
    if not isinstance(raw, dict):
        raise InputError(
            "crate manifest must be a YAML mapping",
            path=path,
            hint="rebuild the crate with 'modelcrate build' or restore crate.yaml",
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise InputError(
            f"crate manifest is invalid at {where}: {first['msg']}"
            + (f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""),
            path=path,
            hint="rebuild the crate with 'modelcrate build' or restore crate.yaml",
        ) from exc


def load_manifest(crate_dir: Path, *, verify: bool = False) -> Manifest:
    """Read ``crate_dir/crate.yaml``. With ``verify``, also check version == content digest."""
    path = Path(crate_dir) / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(
            "not a crate: crate.yaml is missing",
            path=str(path),
            hint="pass a crate folder made by 'modelcrate build', or a NAME[:VERSION] in the store",
        ) from exc
    except OSError as exc:
        raise InputError(
            f"cannot read crate manifest: {exc.strerror or exc}",
            path=str(path),
            hint="check the file's permissions",
        ) from exc
    manifest = parse_manifest(data, path=str(path))
    if verify and manifest.compute_version() != manifest.version:
        raise InputError(
            "crate manifest does not match its version digest (modified after the build)",
            path=str(path),
            hint="rebuild the crate, or re-import it from a trusted export",
        )
    return manifest


def _check_hex(value: str) -> str:
    if not HEX64_RE.match(value):
        raise ValueError("expected 64 lowercase hex digits (a sha256)")
    return value
