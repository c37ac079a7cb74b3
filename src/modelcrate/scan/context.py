"""The state one scan carries through nested containers: findings, limits, budgets, policy."""

from __future__ import annotations

import contextlib
import importlib
import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from modelcrate.scan.findings import Finding, Location, Severity
from modelcrate.scan.limits import Limits
from modelcrate.scan.policy import Policy

# A scanned input: the whole file memory-mapped (pages never touched are never read), or the
# bytes of an archive member. Scanners only slice, ``len`` and ``find`` it.
Blob = bytes | mmap.mmap


class Scanner(Protocol):
    """A format scanner. Returns a refined format name (e.g. ``"pytorch-zip"``) or ``None``."""

    def __call__(self, data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None: ...


# format name (from :func:`modelcrate.scan.sniff.sniff`) -> "module:function", imported lazily
SCANNERS: dict[str, str] = {
    "pickle": "modelcrate.scan.pickle_scan:scan_pickle",
    "zip": "modelcrate.scan.zipscan:scan_zip",
    "tar": "modelcrate.scan.tarscan:scan_tar",
    "7z": "modelcrate.scan.sevenzip:scan_7z",
    "gzip": "modelcrate.scan.compressed:scan_compressed",
    "bz2": "modelcrate.scan.compressed:scan_compressed",
    "xz": "modelcrate.scan.compressed:scan_compressed",
    "lzma": "modelcrate.scan.compressed:scan_compressed",
    "zlib": "modelcrate.scan.compressed:scan_compressed",
    "lz4": "modelcrate.scan.compressed:scan_compressed",
    "joblib-zf": "modelcrate.scan.compressed:scan_compressed",
    "npy": "modelcrate.scan.numpy_scan:scan_npy",
    "hdf5": "modelcrate.scan.keras_scan:scan_h5",
    "keras-json": "modelcrate.scan.keras_scan:scan_keras_config",
    "safetensors": "modelcrate.scan.safetensors_scan:scan_safetensors",
    "gguf": "modelcrate.scan.gguf_scan:scan_gguf",
    "onnx": "modelcrate.scan.onnx_scan:scan_onnx",
    "savedmodel": "modelcrate.scan.tf_scan:scan_savedmodel",
    "json": "modelcrate.scan.config_scan:scan_json",
    "yaml": "modelcrate.scan.config_scan:scan_yaml",
}


def _resolve(fmt: str) -> Scanner | None:
    target = SCANNERS.get(fmt)
    if target is None:
        return None
    module, _, func = target.partition(":")
    scanner: Scanner = getattr(importlib.import_module(module), func)
    return scanner


@dataclass
class ScanContext:
    """Collects findings for one top-level file and enforces the per-file budgets."""

    limits: Limits = field(default_factory=Limits)
    policy: Policy = field(default_factory=Policy)
    findings: list[Finding] = field(default_factory=list)
    inflated_bytes: int = 0
    entries: int = 0
    # Which unpickler will read pickles found now: None (Python's) or "torchscript" (the C++ one
    # of torch.jit.load, which resolves __torch__.* classes from the archive's own code/).
    pickle_dialect: str | None = None
    # Every format the blob being analysed now was found to be (see scan_blob): a scanner can
    # leave to the other analyses what they cover (a zip's prefix that is also a pickle).
    blob_formats: tuple[str, ...] = ()
    _limit_hit: set[str] = field(default_factory=set)

    @contextlib.contextmanager
    def pickle_dialect_set(self, dialect: str | None) -> Iterator[None]:
        """Scan what is inside the block as read by the ``dialect`` unpickler."""
        saved, self.pickle_dialect = self.pickle_dialect, dialect
        try:
            yield
        finally:
            self.pickle_dialect = saved

    def add(
        self,
        severity: Severity,
        rule_id: str,
        message: str,
        loc: Location,
        *,
        why: str = "",
        symbol: str | None = None,
    ) -> None:
        """Record a finding (the policy may override its severity; the finding then says so)."""
        over = self.policy.override(rule_id, severity)
        if over.note is None:
            self.findings.append(Finding(severity, rule_id, message, loc, why, symbol))
            return
        self.findings.append(
            Finding(
                over.severity,
                rule_id,
                f"{message} [{over.note}]",
                loc,
                why,
                symbol,
                original_severity=severity,
                policy_note=over.note,
            )
        )

    def limit(self, name: str, message: str, loc: Location) -> None:
        """Report an exhausted limit once per limit name and file.

        What a limit stopped the scanner from reading was not verified, so the finding is at
        the gate or above it: HIGH, or the policy's ``fail_on`` when that is higher.
        """
        if name in self._limit_hit:
            return
        self._limit_hit.add(name)
        self.add(
            max(Severity.HIGH, self.policy.fail_on),
            "archive.bomb"
            if name in {"inflated", "ratio", "entries", "depth"}
            else "limits.exceeded",
            message,
            loc,
            why="the rest of this input was not verified; raise the limit only for trusted input",
        )

    def not_scanned(self, message: str, loc: Location) -> None:
        """Report one input (a member, a trailing part) that a size limit kept from the scan."""
        self.add(
            max(Severity.HIGH, self.policy.fail_on),
            "limits.exceeded",
            message,
            loc,
            why="it was not verified; raise the limit only for trusted input",
        )

    def charge_inflated(self, n: int, compressed: int, loc: Location) -> bool:
        """Account ``n`` more decompressed bytes; False (and a finding) past a limit."""
        self.inflated_bytes += n
        lim = self.limits
        if self.inflated_bytes > lim.max_inflated_bytes:
            self.limit("inflated", f"decompressed size exceeds {lim.max_inflated_bytes} bytes", loc)
            return False
        if self.inflated_bytes > lim.ratio_floor and compressed > 0:
            ratio = self.inflated_bytes / compressed
            if ratio > lim.max_ratio:
                self.limit(
                    "ratio",
                    f"compression ratio {ratio:.0f}:1 exceeds {lim.max_ratio:.0f}:1 "
                    f"(decompression bomb)",
                    loc,
                )
                return False
        return True

    def scan_blob(
        self, data: Blob, loc: Location, depth: int, *, name: str = "", read_as: str | None = None
    ) -> str:
        """Analyse ``data`` as every format it is; return the primary (refined) format name.

        A file can be several formats at once (a polyglot read differently by different
        loaders): each format whose detector accepts it is analysed and the findings are the
        union. ``read_as`` names a format a known loader reads these bytes as (``"pickle"``
        for an object array's data), analysed whatever else they look like.
        """
        from modelcrate.scan.sniff import sniff_all

        if depth > self.limits.max_depth:
            self.limit("depth", f"containers nested deeper than {self.limits.max_depth}", loc)
            return "nested"
        formats = sniff_all(data, name or (loc.members[-1] if loc.members else loc.path))
        if formats == ("empty",):
            return "empty"
        if read_as is not None and read_as not in formats:
            formats = (read_as, *(f for f in formats if f != "unknown"))
        if formats == ("unknown",):
            self.add(
                Severity.INFO,
                "format.unknown",
                "unrecognised format: no model format matched its content",
                loc,
                why="not a pickle, archive or known model format; nothing was executed",
            )
            return "unknown"
        if len(formats) > 1:
            self.add(
                Severity.MEDIUM,
                "format.polyglot",
                f"content is valid for several formats at once ({', '.join(formats)}); "
                "it was analysed as each",
                loc.at(0),
                why="each loader reads its own format from the same bytes (a pickle loader from "
                "byte 0, a zip reader from the end): one file can hide a payload from a scanner "
                "that sees only one of them",
                symbol="+".join(formats),
            )
        refined: dict[str, str] = {}
        saved, self.blob_formats = self.blob_formats, formats
        try:
            # the pickle reading first: it is the one that runs code
            for fmt in sorted(formats, key=lambda f: f != "pickle"):
                scanner = _resolve(fmt)
                if scanner is not None:
                    refined[fmt] = scanner(data, loc, self, depth) or fmt
        finally:
            self.blob_formats = saved
        return refined.get(formats[0], formats[0])
