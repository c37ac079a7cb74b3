"""`make demo` is the README's main command: it must keep passing."""

from __future__ import annotations

from rich.console import Console

from modelcrate.demo import run


def test_demo_passes() -> None:
    console = Console(record=True, width=120)
    assert run(console) == 0
    text = console.export_text()
    assert "demo passed" in text
    assert "os.system" in text
    assert "no known-unsafe constructs found" in text
