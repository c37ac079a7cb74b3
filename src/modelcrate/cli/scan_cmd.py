"""``modelcrate scan``: a plain click command.

It is the command CI runs once per file, so its start-up matters: it imports neither Typer (the
other commands' framework, ~90 ms) nor, for JSON/SARIF output, Rich. ``modelcrate --help`` lists it
with the others (``cli.typer_app`` adds it to the Typer group).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from modelcrate import __version__
from modelcrate._fs import atomic_write_bytes
from modelcrate.errors import EXIT_FINDINGS, EXIT_OK


@click.command(
    "scan",
    help="Scan model files statically: nothing in them is imported or executed.\n\n"
    "Exit 0: no finding at or above --fail-on (default high); 1: findings; 2: bad input.",
)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["text", "json", "sarif"]),
    default="text",
    show_default=True,
    help="Report format.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the report to FILE (atomically).",
)
@click.option(
    "--fail-on",
    default=None,
    help="Exit 1 when a finding is at or above: info|low|medium|high|critical.",
)
@click.option(
    "--policy",
    type=click.Path(path_type=Path),
    default=None,
    help="Policy file (TOML/JSON): allowlist, fail_on, rule severities.",
)
@click.option("--hash", "hash_files", is_flag=True, help="Compute each file's sha256.")
@click.option("--show-info", is_flag=True, help="Also list INFO findings in text output.")
def scan(
    paths: tuple[Path, ...],
    fmt: str,
    output: Path | None,
    fail_on: str | None,
    policy: Path | None,
    hash_files: bool,
    show_info: bool,
) -> None:
    from modelcrate.scan import Policy, Severity, load_policy
    from modelcrate.scan import scan as run_scan

    pol = load_policy(policy) if policy else Policy()
    try:
        threshold = Severity.parse(fail_on) if fail_on else pol.fail_on
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fail-on") from exc
    # the gate is the policy's too: what a limit kept from the scan is reported at or above it
    pol = dataclasses.replace(pol, fail_on=threshold)
    report = run_scan(list(paths), policy=pol, compute_hash=hash_files)

    if fmt == "text":
        from rich.console import Console  # only people's output pays for Rich

        from modelcrate.cli.render import render_text

        console = Console(file=sys.stdout) if output is None else Console(record=True, width=120)
        render_text(report, console, fail_on=threshold, show_info=show_info)
        if output is not None:
            atomic_write_bytes(output, console.export_text().encode())
    else:
        if fmt == "json":
            doc: dict[str, object] = {
                "tool": "modelcrate",
                "version": __version__,
                **report.to_dict(),
            }
            doc["fail_on"] = threshold.name
        else:
            from modelcrate.scan.sarif import to_sarif

            doc = to_sarif(report, tool_version=__version__)
        payload = json.dumps(doc, indent=2).encode() + b"\n"
        if output is None:
            sys.stdout.buffer.write(payload)
            sys.stdout.flush()
        else:
            atomic_write_bytes(output, payload)
    raise click.exceptions.Exit(EXIT_FINDINGS if report.failed(threshold) else EXIT_OK)
