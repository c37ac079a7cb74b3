"""Crate commands: build, list, show, rm, export, import. Thin: parse, call, render.

Errors are raised as :class:`~modelcrate.errors.ModelcrateError` and mapped to exit codes by
``modelcrate.cli.main``. Progress and diagnostics go to stderr; results go to stdout.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelcrate.cli.render import stdout_console, step_progress

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from modelcrate.crate.build import BuiltCrate
    from modelcrate.crate.manifest import Manifest
    from modelcrate.crate.store import Store

STEP_LABELS = {
    "scan": "Scan",
    "load": "Safe load",
    "convert": "Convert",
    "parity": "Parity check",
    "signature": "Signature",
    "lock": "Lock dependencies",
    "write": "Write crate",
}


class Flavor(StrEnum):
    auto = "auto"
    sklearn = "sklearn"
    onnx = "onnx"
    xgboost = "xgboost"
    lightgbm = "lightgbm"


class ShowFormat(StrEnum):
    text = "text"
    yaml = "yaml"
    json = "json"


StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="Store folder (default: $MODELCRATE_HOME, else ~/.modelcrate).",
        show_default=False,
    ),
]


def _store(path: Path | None) -> Store:
    from modelcrate.crate.store import Store

    return Store.default(path)


def register(app: typer.Typer) -> None:
    """Add the crate commands to ``app``."""
    app.command("build")(build_cmd)
    app.command("list")(list_cmd)
    app.command("show")(show_cmd)
    app.command("rm")(rm_cmd)
    app.command("export")(export_cmd)
    app.command("import")(import_cmd)


def build_cmd(
    path: Annotated[Path, typer.Argument(help="The model file (.pkl, .joblib, .onnx, ...).")],
    name: Annotated[
        str | None, typer.Option(help="Crate name (default: from the file name).")
    ] = None,
    flavor: Annotated[Flavor, typer.Option(help="Model framework.")] = Flavor.auto,
    sample: Annotated[
        Path | None, typer.Option(help="Sample rows (.csv/.parquet) for the parity check.")
    ] = None,
    signature: Annotated[
        Path | None, typer.Option(help="Signature file (JSON/YAML) overriding the derived one.")
    ] = None,
    python: Annotated[str, typer.Option(help="Python version of the crate.")] = "3.11",
    policy: Annotated[Path | None, typer.Option(help="Scan policy file (TOML/JSON).")] = None,
    max_batch_size: Annotated[
        int,
        typer.Option(
            help="Rows per model call when its server batches concurrent requests (1: none).",
            min=1,
        ),
    ] = 64,
    max_latency_ms: Annotated[
        float,
        typer.Option(help="Longest a request waits for a batch while the model is busy.", min=0),
    ] = 2.0,
    store: StoreOpt = None,
) -> None:
    """Build a crate from a model file: scan, safe load, convert, parity, signature, lock, write.

    Exit 0: built (or already in the store); 1: the scan found issues; 2: bad input.
    """
    from modelcrate.crate.build import build
    from modelcrate.crate.errors import CorruptModel, ScanFailed
    from modelcrate.scan import load_policy

    pol = load_policy(policy) if policy is not None else None
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    try:
        with step_progress(err, STEP_LABELS) as progress:
            built = build(
                path,
                name=name,
                flavor=flavor.value,
                sample=sample,
                signature=signature,
                python=python,
                store=_store(store),
                policy=pol,
                progress=progress,
                max_batch_size=max_batch_size,
                max_latency_ms=max_latency_ms,
            )
    except (ScanFailed, CorruptModel) as exc:
        from modelcrate.cli.render import render_text
        from modelcrate.scan import Severity

        render_text(exc.report, err, fail_on=Severity.HIGH)
        raise
    _render_built(built, stdout_console())


def list_cmd(
    name: Annotated[str | None, typer.Argument(help="Only this crate's versions.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    store: StoreOpt = None,
) -> None:
    """List the crates in the store, newest first."""
    records = _store(store).list(name)
    if as_json:
        doc = [
            {
                "name": r.name,
                "version": r.version,
                "created": r.created,
                "stored": r.stored,
                "flavor": r.flavor,
                "size": r.size,
                "path": str(r.path),
            }
            for r in records
        ]
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    out = stdout_console()
    if not records:
        out.print("no crates in the store (build one with 'modelcrate build MODEL')")
        return
    from rich.table import Table

    table = Table(box=None, padding=(0, 2))
    for col in ("NAME", "VERSION", "STORED", "FLAVOR", "SIZE"):
        table.add_column(col, no_wrap=True, justify="right" if col == "SIZE" else "left")
    for r in records:
        table.add_row(r.name, r.short_version, r.stored, r.flavor, _size(r.size))
    out.print(table)


def show_cmd(
    ref: Annotated[str, typer.Argument(help="NAME[:VERSION] (a version prefix is enough).")],
    fmt: Annotated[ShowFormat, typer.Option("--format", "-f", help="Output format.")] = (
        ShowFormat.text
    ),
    store: StoreOpt = None,
) -> None:
    """Show a crate's manifest: version, source, artifacts, signature, scan, parity (and when
    this store received it)."""
    from modelcrate.crate.manifest import load_manifest

    crates = _store(store)
    record = crates.get(ref)
    path = crates.resolve(ref)
    manifest = load_manifest(path)
    if fmt is ShowFormat.yaml:
        sys.stdout.buffer.write(manifest.dump_yaml())
    elif fmt is ShowFormat.json:
        doc = {"path": str(path), "stored": record.stored, **manifest.model_dump(mode="json")}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        _render_manifest(manifest, path, stdout_console(), stored=record.stored)
    sys.stdout.flush()


def rm_cmd(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION, or NAME when it has one version.")],
    all_versions: Annotated[
        bool, typer.Option("--all", help="Remove every version of NAME.")
    ] = False,
    store: StoreOpt = None,
) -> None:
    """Remove crates from the store."""
    removed = _store(store).remove(ref, all_versions=all_versions)
    out = stdout_console()
    for r in removed:
        out.print(f"removed {r.ref}")


def export_cmd(
    ref: Annotated[str, typer.Argument(help="NAME[:VERSION] to export.")],
    output: Annotated[Path, typer.Argument(help="The archive to write (.tar or .tar.gz).")],
    store: StoreOpt = None,
) -> None:
    """Export a crate as one reproducible tar file (same crate, same bytes)."""
    from modelcrate.crate.archive import export_crate

    exported = export_crate(_store(store), ref, output)
    stdout_console().print(
        f"exported {exported.record.ref} to {exported.path} "
        f"({_size(exported.size)}, sha256:{exported.sha256})"
    )


def import_cmd(
    archive: Annotated[Path, typer.Argument(help="A crate archive made by 'modelcrate export'.")],
    expect: Annotated[
        str | None,
        typer.Option(
            help="Refuse the archive unless it holds this version (sha256:... or a prefix), "
            "e.g. as its author published it.",
            show_default=False,
        ),
    ] = None,
    max_size: Annotated[
        str,
        typer.Option(help="The most the archive may unpack to (bytes, or e.g. 512MiB, 64GiB)."),
    ] = "64GiB",
    policy: Annotated[
        Path | None, typer.Option(help="Scan policy file (TOML/JSON) for the model re-scan.")
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Import a crate archive: sizes checked against crate.yaml before anything is written,
    every sha256 and the version digest verified, the model files scanned again.

    Exit 0: imported; 1: a model file fails the scan gate; 2: refused (unsafe or inconsistent).
    """
    from modelcrate.crate.archive import import_crate
    from modelcrate.crate.errors import ScanFailed
    from modelcrate.scan import load_policy

    pol = load_policy(policy) if policy is not None else None
    try:
        committed = import_crate(
            _store(store), archive, max_bytes=parse_size(max_size), policy=pol, expect=expect
        )
    except ScanFailed as exc:
        from rich.console import Console

        from modelcrate.cli.render import render_text
        from modelcrate.scan import Severity

        render_text(exc.report, Console(stderr=True, highlight=False), fail_on=Severity.HIGH)
        raise
    note = " (already in the store)" if committed.existed else ""
    stdout_console().print(f"imported {committed.record.ref}{note}")


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6}
_UNITS |= {"mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12}
_UNITS |= {"tib": 2**40}


def parse_size(text: str) -> int:
    """``"64GiB"`` -> bytes (B, kB/KiB, MB/MiB, GB/GiB, TB/TiB; a bare number is bytes)."""
    from modelcrate.errors import InputError

    raw = text.strip().lower().replace(" ", "")
    digits = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(digits) :]
    try:
        value = float(digits)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or not value > 0 or value * _UNITS[unit] >= 2**63:
        raise InputError(
            f"{text!r} is not a size", hint="use a positive number of bytes, or e.g. 512MiB, 64GiB"
        )
    return int(value * _UNITS[unit])


# -- rendering ---------------------------------------------------------------------------------


def _render_built(built: BuiltCrate, out: Console) -> None:
    from rich.text import Text

    m = built.manifest
    status = "already in the store" if built.existed else "built"
    out.print(Text.assemble((f"{status}: ", "bold"), (built.ref, "bold green")))
    table = _kv_table()
    table.add_row("version", m.version)
    table.add_row("path", str(built.path))
    table.add_row("flavor", f"{m.flavor} -> {m.runtime.kind}")
    table.add_row("artifacts", ", ".join(f"{a.path} ({_size(a.size)})" for a in m.artifacts))
    table.add_row("parity", built.parity_details.splitlines()[0])
    table.add_row("lock", "requirements.lock" + (" (cached)" if built.lock_cached else ""))
    table.add_row("steps", ", ".join(f"{s} {t:.2f}s" for s, t in built.steps))
    out.print(table)


def _render_manifest(m: Manifest, path: Path, out: Console, *, stored: str) -> None:
    from rich.text import Text

    out.print(Text.assemble((f"{m.name}:{m.short_version}", "bold")))
    table = _kv_table()
    table.add_row("version", m.version)
    table.add_row("created", m.created)
    table.add_row("stored", stored)
    table.add_row("path", str(path))
    table.add_row("flavor", f"{m.flavor} -> {m.runtime.kind}" + _opset(m))
    table.add_row("source", f"{m.source.path} ({m.source.format}, {_size(m.source.size)})")
    for a in m.artifacts:
        table.add_row("artifact", f"{a.path} ({a.format}, {_size(a.size)}) sha256:{a.sha256}")
    sig = m.signature_obj()
    table.add_row("task", sig.task + (f" [{', '.join(sig.classes)}]" if sig.classes else ""))
    table.add_row("inputs", ", ".join(f"{c.name}: {c.dtype}" for c in sig.inputs))
    table.add_row("outputs", ", ".join(f"{o.name}: {o.dtype}" for o in sig.outputs))
    table.add_row("scan", f"{m.scan.verdict} (scanner {m.scan.scanner_version})")
    table.add_row("parity", _parity(m))
    table.add_row("python", f"{m.python.version} {m.python.platform}")
    table.add_row("lock", f"requirements.lock sha256:{m.lock_sha256}")
    out.print(table)


def _kv_table() -> Table:
    from rich.table import Table

    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    return table


def _parity(m: Manifest) -> str:
    p = m.parity
    text = f"{'passed' if p.passed else 'FAILED'} on {p.rows} rows (tolerance {p.tolerance:.3g})"
    if p.max_abs_diff is not None:  # crates built before these were left out
        text += f": max |diff| {p.max_abs_diff:.3g}"
    if p.label_agreement is not None:
        text += f", labels agree {p.label_agreement:.1%}"
    return text


def _opset(m: Manifest) -> str:
    return f" (opset {m.runtime.opset})" if m.runtime.opset is not None else ""


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
