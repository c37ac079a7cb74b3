"""Rendering for people (Rich): scan reports, step progress, the results console.

Rich is imported inside the functions: commands that print nothing for people never pay for it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from modelcrate.scan.findings import FileReport, Severity

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from modelcrate.scan.report import ScanReport

_STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}


def _file_line(fr: FileReport, fail_on: Severity) -> Text:
    from rich.text import Text

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
    from rich.table import Table
    from rich.text import Text

    min_sev = Severity.INFO if show_info else Severity.LOW
    hidden = 0
    for fr in report.files:
        console.print(_file_line(fr, fail_on))
        # a finding a policy lowered is always listed, with the note that says so
        visible = [f for f in fr.findings if f.severity >= min_sev or f.policy_note]
        shown = sorted(visible, key=lambda f: -f.severity)
        hidden += len(fr.findings) - len(visible)
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


def stdout_console() -> Console:
    """Results on stdout; piped output is not cut at 80 columns (digests and paths are long)."""
    from rich.console import Console

    return Console(
        file=sys.stdout, highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 240
    )


@contextmanager
def step_progress(console: Console, labels: Mapping[str, str]) -> Iterator[Callable[[str], None]]:
    """One line per step: a spinner while it runs, a tick (or a cross) and its seconds when done.

    Yields ``on_step(name)``, to call as each step starts.
    """
    from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn
    from rich.text import Text

    class Seconds(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{task.elapsed or 0.0:5.2f}s", style="dim")

    columns = (SpinnerColumn(finished_text=""), TextColumn("{task.description}"), Seconds())
    state: dict[str, TaskID] = {}
    with Progress(*columns, console=console, transient=False) as progress:

        def finish(mark: str, style: str) -> None:
            for step, task in state.items():
                if not progress.tasks[task].finished:
                    label = labels.get(step, step)
                    progress.update(task, description=f"[{style}]{mark}[/] {label}", completed=1)
                    progress.stop_task(task)

        def on_step(step: str) -> None:
            finish("✓", "green")
            state[step] = progress.add_task(labels.get(step, step), total=1)

        try:
            yield on_step
        except BaseException:
            finish("✗", "red")
            raise
        finish("✓", "green")
