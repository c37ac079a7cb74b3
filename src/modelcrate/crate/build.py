"""``modelcrate build``: from an untrusted model file to a crate in the store.

Steps, in order (each reported through ``progress`` before it starts): ``scan`` (the gate:
anything at or above HIGH stops here), ``load`` (safe loading only), ``convert`` (to a safe
serving format), ``parity`` (converted vs original predictions), ``signature`` (derived, or the
user's file), ``lock`` (runtime requirements with hashes), ``write`` (atomic, into the store).

The source bytes are read once: that copy is hashed, scanned and loaded; the user's path is never
re-opened after the scan. Nothing reaches the store before the last step, and a failure there
removes what it added.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, cast

from modelcrate.crate.canonical import MANIFEST_NAME
from modelcrate.crate.errors import CorruptModel, ScanFailed
from modelcrate.crate.inputs import (
    crate_name_for,
    read_sample,
    read_signature,
    read_source,
)
from modelcrate.crate.layout import (
    LOCK_FILE,
    SBOM_FILE,
    SCAN_FILE,
    SIGNATURE_FILE,
    relocated,
    scan_json,
    signature_json,
)
from modelcrate.crate.lockfile import check_python, lock_request, resolve_lock
from modelcrate.crate.manifest import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_LATENCY_MS,
    ArtifactEntry,
    Batching,
    Manifest,
    ParitySummary,
    Provenance,
    PythonTarget,
    Runtime,
    ScanSummary,
    Source,
    created_now,
)
from modelcrate.crate.sbom import sbom_json
from modelcrate.crate.signature import Signature
from modelcrate.crate.store import Store, store_errors, write_file
from modelcrate.errors import InputError, ModelcrateError

if TYPE_CHECKING:
    from modelcrate.crate.manifest import FlavorName, RuntimeKind
    from modelcrate.flavors import Converted
    from modelcrate.scan import Policy, ScanReport, Severity

STEPS: tuple[str, ...] = ("scan", "load", "convert", "parity", "signature", "lock", "write")
FLAVORS: tuple[str, ...] = ("auto", "sklearn", "onnx", "xgboost", "lightgbm")
_OUTPUTS = {"classification": {"label", "probabilities"}, "regression": {"prediction"}}
_REQUIRED = {"classification": {"label"}, "regression": {"prediction"}}


@dataclass(frozen=True)
class BuiltCrate:
    """A crate in the store. ``existed``: the store already held this exact version."""

    manifest: Manifest
    path: Path
    existed: bool
    lock_cached: bool
    scan: ScanReport
    parity_details: str
    steps: tuple[tuple[str, float], ...]

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def ref(self) -> str:
        return f"{self.manifest.name}:{self.manifest.short_version}"


def build(
    path: Path,
    *,
    name: str | None = None,
    flavor: str = "auto",
    sample: Path | None = None,
    signature: Path | None = None,
    python: str = "3.11",
    store: Store | None = None,
    policy: Policy | None = None,
    progress: Callable[[str], None] | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS,
) -> BuiltCrate:
    """Build a crate from the model file at ``path`` and write it into ``store``.
    ``max_batch_size``/``max_latency_ms``: the adaptive batching its server uses by default."""
    from modelcrate import __version__
    from modelcrate.flavors import convert, detect_flavor, load_model
    from modelcrate.scan import ScanReport, Severity, scan_file

    store = store or Store.default()
    store.preflight()
    src = Path(path)
    crate_name = crate_name_for(src, name)
    check_python(python)
    if max_batch_size < 1 or max_latency_ms < 0:
        raise InputError(
            f"invalid batching: max_batch_size={max_batch_size}, max_latency_ms={max_latency_ms}",
            hint="max_batch_size is at least 1 (1: no batching), max_latency_ms at least 0",
        )
    if flavor not in FLAVORS:
        raise InputError(f"unknown flavor {flavor!r}", hint=f"use one of: {', '.join(FLAVORS)}")
    timer = _Timer(progress)

    timer.step("scan")
    data = read_source(src)
    threshold = min(policy.fail_on, Severity.HIGH) if policy is not None else Severity.HIGH
    with _private_dir() as work:
        copy = work / src.name
        try:
            copy.write_bytes(data)
        except OSError as exc:
            raise _temp_error(exc) from exc
        file_report = scan_file(copy, policy=policy)
        report = ScanReport(files=[relocated(file_report, str(src))])
        if report.failed(threshold):
            _refuse(report, threshold, src)

        with _user_paths(copy, src):
            timer.step("load")
            fmt = file_report.format
            chosen = detect_flavor(copy, fmt) if flavor == "auto" else flavor
            model = load_model(copy, chosen, fmt, policy=policy)
            sample_df = read_sample(sample) if sample is not None else None
            user_signature = read_signature(signature) if signature is not None else None

            timer.step("convert")
            converted = convert(
                model, chosen, source_path=copy, sample=sample_df, signature=user_signature
            )

    timer.step("parity")
    parity = converted.parity
    if not parity.passed:
        raise InputError(
            f"the converted model does not reproduce the original's predictions: {parity.details}",
            path=str(src),
            hint="report the estimator to modelcrate; meanwhile export it to ONNX yourself",
        )

    timer.step("signature")
    sig = converted.signature
    _check_signature(sig, user_signature, signature or src)

    timer.step("lock")
    lock = resolve_lock(lock_request(converted.runtime, python), cache_dir=store.locks_dir)

    timer.step("write")
    manifest = _manifest(
        name=crate_name,
        src=src,
        data=data,
        fmt=fmt,
        converted=converted,
        sig=sig,
        report=report,
        python=python,
        lock_sha256=lock.sha256,
        version=__version__,
        batching=Batching(max_batch_size=max_batch_size, max_latency_ms=max_latency_ms),
    )
    files: dict[str, bytes] = {a.path: a.data for a in converted.artifacts}
    files[LOCK_FILE] = lock.data
    files[SCAN_FILE] = scan_json(file_report, source_name=src.name, fail_on=threshold.name)
    files[SIGNATURE_FILE] = signature_json(manifest)
    files[SBOM_FILE] = sbom_json(manifest, lock.data)
    files[MANIFEST_NAME] = manifest.dump_yaml()
    with store.staging() as stage:
        with store_errors(store.root):
            for rel, blob in sorted(files.items()):
                write_file(stage / rel, blob)
        committed = store.commit(
            stage, manifest, lock_cache=None if lock.cached else (lock.key, lock.data)
        )
    stored = manifest if not committed.existed else _stored_manifest(committed.record.path)
    return BuiltCrate(
        manifest=stored,
        path=committed.record.path,
        existed=committed.existed,
        lock_cached=lock.cached,
        scan=report,
        parity_details=parity.details,
        steps=timer.finish(),
    )


def _refuse(report: ScanReport, threshold: Severity, src: Path) -> NoReturn:
    """Stop the build: CorruptModel (exit 2) when the only failing findings say the file is
    malformed (not a pickle: there malformation may be an evasion), else ScanFailed (exit 1)."""
    failing = [f for f in report.findings if f.severity >= threshold]
    if all(
        f.rule_id.endswith(".malformed") and not f.rule_id.startswith("pickle.") for f in failing
    ):
        raise CorruptModel(
            f"the model file is corrupt: {failing[0].message}",
            report=report,
            path=str(src),
            hint="re-export or re-download the model; 'modelcrate scan' shows every finding",
        )
    verdict = report.verdict
    raise ScanFailed(
        f"the scan found {verdict.name if verdict else 'blocking'} issues; "
        "the build stopped before loading the model",
        report=report,
        path=str(src),
        hint="run 'modelcrate scan' on the file for details; build only models you can "
        "trust, or re-export the model in a safe format (ONNX, XGBoost JSON, skops)",
    )


def _check_signature(sig: Signature, user: Signature | None, where: Path) -> None:
    """The serving contract: a classifier outputs ``label`` (and maybe ``probabilities``) and
    names its classes; a regressor outputs ``prediction``."""
    allowed = _OUTPUTS.get(sig.task)
    names = {o.name for o in sig.outputs}
    if allowed is not None and (not names <= allowed or not names & _REQUIRED[sig.task]):
        raise InputError(
            f"the signature's outputs {sorted(names)} do not fit a {sig.task} model "
            f"(expected {' and '.join(sorted(allowed))})",
            path=str(where),
            hint="fix the outputs in the signature file, or leave the file out to derive them",
        )
    if sig.task == "classification" and not sig.classes:
        raise InputError(
            "a classification signature needs its class labels",
            path=str(where),
            hint="add 'classes' to the signature file, or leave the file out",
        )
    if user is not None and len(user.inputs) != len(sig.inputs):
        raise InputError(
            "the signature file does not match the model's inputs",
            path=str(where),
            hint=f"the model takes {sig.feature_names}",
        )


def _manifest(
    *,
    name: str,
    src: Path,
    data: bytes,
    fmt: str,
    converted: Converted,
    sig: Signature,
    report: ScanReport,
    python: str,
    lock_sha256: str,
    version: str,
    batching: Batching,
) -> Manifest:
    verdict = report.verdict
    parity = converted.parity
    draft = Manifest(
        name=name,
        version="sha256:" + "0" * 64,
        created=created_now(),
        flavor=cast("FlavorName", converted.flavor),  # validated by the model
        source=Source(
            path=src.name, sha256=hashlib.sha256(data).hexdigest(), size=len(data), format=fmt
        ),
        artifacts=[
            ArtifactEntry(
                path=a.path,
                format=a.format,
                sha256=hashlib.sha256(a.data).hexdigest(),
                size=len(a.data),
            )
            for a in sorted(converted.artifacts, key=lambda a: a.path)
        ],
        signature=sig.to_dict(),
        runtime=Runtime(kind=cast("RuntimeKind", converted.runtime), opset=converted.opset),
        python=PythonTarget(version=python),
        scan=ScanSummary(
            verdict=verdict.name if verdict is not None else "NONE",
            counts=report.counts(),
            scanner_version=version,
        ),
        # the measured differences depend on the build machine's CPU: printed, not recorded
        parity=ParitySummary(
            rows=parity.rows, tolerance=float(f"{parity.tolerance:.3g}"), passed=parity.passed
        ),
        provenance=Provenance(modelcrate_version=version, converters=dict(converted.converters)),
        lock_sha256=lock_sha256,
        batching=batching,
    )
    return draft.with_version()


@contextlib.contextmanager
def _private_dir() -> Iterator[Path]:
    """A private temp folder for the one copy of the model the build reads."""
    try:
        tmp = tempfile.TemporaryDirectory(prefix="modelcrate-build-")
    except OSError as exc:
        raise _temp_error(exc) from exc
    with tmp as work:
        yield Path(work)


def _temp_error(exc: OSError) -> InputError:
    return InputError(
        f"cannot stage the model in the temp folder: {exc.strerror or exc}",
        path=tempfile.gettempdir(),
        hint="free some space there, or point TMPDIR at a folder with room",
    )


@contextlib.contextmanager
def _user_paths(copy: Path, src: Path) -> Iterator[None]:
    """Errors from loading name the user's file, not the private copy the build reads."""
    try:
        yield
    except ModelcrateError as exc:
        private, public = str(copy), str(src)
        if exc.path is not None:
            exc.path = exc.path.replace(private, public)
        exc.message = exc.message.replace(private, public)
        if exc.hint is not None:
            exc.hint = exc.hint.replace(private, public)
        exc.args = (exc.message,)
        raise


def _stored_manifest(crate_dir: Path) -> Manifest:
    from modelcrate.crate.manifest import load_manifest

    return load_manifest(crate_dir)


class _Timer:
    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self._progress = progress
        self._current: str | None = None
        self._start = 0.0
        self._done: list[tuple[str, float]] = []

    def step(self, name: str) -> None:
        self._close()
        self._current, self._start = name, time.perf_counter()
        if self._progress is not None:
            self._progress(name)

    def _close(self) -> None:
        if self._current is not None:
            self._done.append((self._current, time.perf_counter() - self._start))
            self._current = None

    def finish(self) -> tuple[tuple[str, float], ...]:
        self._close()
        return tuple(self._done)
