"""What the server knows about the model it serves: read from the crate's manifest, once.

:class:`ModelInfo` is plain data (the name, version and signature that drive every route);
:func:`open_predictor` loads the runtime. Both are called once per process, never per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcrate.errors import InputError

if TYPE_CHECKING:
    from modelcrate.crate.signature import Signature
    from modelcrate.runtime import Predictor

# Triton's platform names where one exists, so V2 clients recognise the backend.
_PLATFORM = {
    "onnxruntime": "onnxruntime_onnx",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "skops": "sklearn",
}


@dataclass(frozen=True)
class ModelInfo:
    """The served model: identity, contract and where its artifacts are."""

    name: str
    version: str
    signature: Signature
    flavor: str = "onnx"
    runtime: str = "onnxruntime"
    artifacts: tuple[str, ...] = ()  # relative paths, e.g. "model/model.onnx"
    crate_dir: Path | None = None
    created: str = ""
    max_batch_size: int = 64
    max_latency_ms: float = 2.0
    # the parsed crate.yaml it was read from (``open_predictor`` verifies the files against it)
    manifest: Any = field(default=None, repr=False, compare=False)

    @property
    def platform(self) -> str:
        """The V2 metadata ``platform`` string (Triton's naming)."""
        return _PLATFORM.get(self.runtime, self.runtime)

    @property
    def short_version(self) -> str:
        return self.version.removeprefix("sha256:")[:12]

    def matches_version(self, version: str) -> bool:
        """True for the full version, its bare hex digest, or a prefix of at least 7 hex digits."""
        if version == self.version:
            return True
        digest = self.version.removeprefix("sha256:")
        wanted = version.removeprefix("sha256:")
        return len(wanted) >= 7 and digest.startswith(wanted)


def read_model_info(crate_dir: Path) -> ModelInfo:
    """Read and verify ``crate.yaml``: the version must equal the manifest's content digest.

    A manifest exactly as built is read without Pydantic (``crate.manifest_view``: start-up
    time); any other goes through the full model, which accepts it or says what is wrong."""
    from modelcrate.crate.manifest_view import read_manifest_view

    view = read_manifest_view(crate_dir)
    if view is not None:
        try:
            return _info(view, crate_dir)
        except (AttributeError, KeyError, TypeError, ValueError):
            pass  # well-formed on the surface only: the full model reports it
    from modelcrate.crate.manifest import load_manifest

    return _info(load_manifest(crate_dir, verify=True), crate_dir)


def _info(manifest: Any, crate_dir: Path) -> ModelInfo:
    return ModelInfo(
        name=manifest.name,
        version=manifest.version,
        signature=manifest.signature_obj(),
        flavor=manifest.flavor,
        runtime=manifest.runtime.kind,
        artifacts=tuple(a.path for a in manifest.artifacts),
        crate_dir=Path(crate_dir),
        created=manifest.created,
        max_batch_size=manifest.batching.max_batch_size,
        max_latency_ms=manifest.batching.max_latency_ms,
        manifest=manifest,
    )


def open_predictor(info: ModelInfo, *, threads: int | None = None) -> Predictor:
    """Verify the crate's files against its manifest, then load the runtime (ONNX Runtime or
    a native booster). A tampered or incomplete crate raises ``IntegrityError`` (exit 2).
    ``threads``: ONNX Runtime's intra-op threads (1 makes the session safe to fork)."""
    from modelcrate.crate.layout import verify_crate
    from modelcrate.runtime import load_predictor

    if info.crate_dir is None:
        raise InputError("this model has no crate folder to load its artifacts from")
    from modelcrate.crate.manifest_view import ManifestView

    try:
        verify_crate(info.crate_dir, info.manifest)
    except (AttributeError, KeyError, TypeError, ValueError):
        if not isinstance(info.manifest, ManifestView):
            raise
        verify_crate(info.crate_dir)  # a view the check could not read: the full model
    return load_predictor(
        info.crate_dir, info.runtime, list(info.artifacts), info.signature, threads=threads
    )
