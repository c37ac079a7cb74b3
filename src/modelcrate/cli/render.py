"""Rich text rendering of scan reports for people."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from modelcrate.scan.findings import FileReport, Severity
from modelcrate.scan.report import ScanReport

_STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}


def _file_line(fr: FileReport, fail_on: Severity) -> Text:
    v = fr.verdict
    line = Text()
    line.append(fr.path, style="bold")
    line.append(f"  [{fr.format}, {fr.size:,} bytes]  ", style="dim")
    if v is None or v < Severity.LOW:
        line.append("no known-unsafe constructs found", style="green")
    else:
        line.append(v.name, style=_STYLE[v])
        if v >= fail_on:
            line.append("  (fails the gate)", style="red")
    return line


def render_text(
    report: ScanReport, console: Console, *, fail_on: Severity, show_info: bool = False
) -> None:
    """Print one block per file: its verdict, then its findings, worst first."""
    min_sev = Severity.INFO if show_info else Severity.LOW
    hidden = 0
    for fr in report.files:
        console.print(_file_line(fr, fail_on))
        shown = sorted((f for f in fr.findings if f.severity >= min_sev), key=lambda f: -f.severity)
        hidden += sum(1 for f in fr.findings if f.severity < min_sev)
        if not shown:
            continue
        table = Table(show_header=False, box=None, padding=(0, 1), expand=False)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column()
        for f in shown:
            msg = Text(f.message)
            where = "".join(f"!{m}" for m in f.location.members)
            if f.location.offset is not None:
                where += f"@{f.location.offset}"
            if where:
                msg.append(f"  {where}", style="dim")
            if f.why:
                msg.append(f"\n{f.why}", style="dim italic")
            table.add_row(Text(f.severity.name, style=_STYLE[f.severity]), f.rule_id, msg)
        console.print(table)
    counts = ", ".join(f"{n} {k.lower()}" for k, n in report.counts().items() if n)
    summary = f"{len(report.files)} file(s) scanned in {report.seconds:.2f}s"
    if counts:
        summary += f": {counts}"
    if hidden:
        summary += f" ({hidden} info finding(s) hidden; --show-info lists them)"
    console.print(Text(summary, style="bold"))
