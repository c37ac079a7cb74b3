"""Archive links resolved against the archive's own tree (issue 9 item 7).

Each link alone stays inside the extraction folder; resolved together, as tarfile extracts them
(and as ``tarfile.data_filter`` checks them), they escape. The tar samples are also extracted
for real with ``filter="data"`` into a deep temporary folder, to check that every member the
standard library refuses is one the scanner reports at HIGH.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from modelcrate.scan import Limits, Location, Severity
from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Finding
from tests.scan.archivegen import Member, TarItem, build_tar, build_zip

LINK = 0o120777


def run(data: bytes, name: str = "model.tar", limits: Limits | None = None) -> list[Finding]:
    ctx = ScanContext(limits or Limits())
    ctx.scan_blob(data, Location(name), 0)
    return ctx.findings


def high_members(findings: list[Finding]) -> set[str]:
    """Members reported at HIGH for a link or a path that leaves the extraction folder."""
    rules = {"archive.symlink", "archive.path-traversal"}
    return {
        f.location.members[-1]
        for f in findings
        if f.rule_id in rules and f.severity >= Severity.HIGH and f.location.members
    }


def refused_by_data_filter(data: bytes, tmp_path: Path) -> set[str]:
    """Members tarfile's data filter refuses, extracting one by one into a deep folder."""
    dest = tmp_path / "a" / "b" / "c" / "d" / "root"
    dest.mkdir(parents=True)
    refused: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for member in tf.getmembers():
            try:
                tf.extract(member, dest, filter="data")
            except tarfile.FilterError:
                refused.add(member.name)
            except (KeyError, OSError):
                pass  # e.g. a hard link whose (refused) target was never extracted
    return refused


# The example, then one shape per way links combine.
ESCAPES: dict[str, tuple[list[TarItem], set[str]]] = {
    "dot_then_dotdot": (
        [TarItem("d", link="."), TarItem("d/e", link="..")],
        {"d/e"},
    ),
    "symlink_chain": (
        [
            TarItem("x/y", link="../z"),
            TarItem("z", link="."),
            TarItem("x/y/w", link=".."),
        ],
        {"x/y/w"},
    ),
    "dotdot_after_symlinked_dir": (
        [TarItem("d", link="."), TarItem("up", link="d/..")],
        {"up"},
    ),
    "file_written_through_linked_dir": (
        [
            TarItem("d", link="."),
            TarItem("d/e", link=".."),
            TarItem("d/e/escaped.txt", b"written outside"),
        ],
        {"d/e", "d/e/escaped.txt"},
    ),
    "hardlink_to_escaping_link": (
        [
            TarItem("d", link="."),
            TarItem("d/e", link=".."),
            TarItem("h", link="d/e/secret", hard=True),
        ],
        {"d/e", "h"},
    ),
    "link_retargeted_by_a_later_member": (
        [TarItem("s", link="d/.."), TarItem("d", link="."), TarItem("t", link="d/../x")],
        {"s", "t"},
    ),
    "file_over_an_existing_link": (
        [TarItem("d", link="."), TarItem("f", link="d/../x"), TarItem("f", b"overwrite")],
        {"f"},
    ),
}


@pytest.mark.parametrize("shape", sorted(ESCAPES))
def test_links_that_escape_only_together_are_high(shape: str) -> None:
    items, expected = ESCAPES[shape]
    findings = run(build_tar(items))
    assert high_members(findings) == expected


@pytest.mark.parametrize("shape", sorted(ESCAPES))
def test_scanner_reports_everything_tarfile_data_filter_refuses(shape: str, tmp_path: Path) -> None:
    items, _ = ESCAPES[shape]
    data = build_tar(items)
    refused = refused_by_data_filter(data, tmp_path)
    assert refused  # the standard library sees an escape here too
    assert refused <= high_members(run(data))


def test_absolute_targets_and_windows_drives() -> None:
    findings = run(
        build_tar(
            [
                TarItem("etc", link="/etc"),
                TarItem("etc/cron.d/job", b"* * * * * root id\n"),
                TarItem("h", link="/etc/shadow", hard=True),
                TarItem("w", link="C:/Windows/System32"),
            ]
        )
    )
    assert high_members(findings) == {"etc", "etc/cron.d/job", "h", "w"}


def test_links_inside_the_archive_stay_medium(tmp_path: Path) -> None:
    """No new false alarm: a Hugging Face cache layout and versioned library links."""
    items = [
        TarItem("blobs/123abc", b"weights"),
        TarItem("snapshots/main/model.bin", link="../../blobs/123abc"),
        TarItem("lib/libfoo.so.1", b"\x7fELF"),
        TarItem("lib/libfoo.so", link="libfoo.so.1"),
        TarItem("current", link="snapshots/main"),
        TarItem("current/config.json", b"{}"),
        TarItem("up", link="lib/.."),
    ]
    data = build_tar(items)
    findings = run(data)
    assert high_members(findings) == set()
    links = [f for f in findings if f.rule_id == "archive.symlink"]
    assert len(links) == 4
    assert all(f.severity is Severity.MEDIUM for f in links)
    assert refused_by_data_filter(data, tmp_path) == set()


def test_link_loops_end_and_a_budget_past_its_limit_is_high() -> None:
    loop = [TarItem("a", link="b"), TarItem("b", link="a"), TarItem("a/x", b"data")]
    findings = run(build_tar(loop))
    assert high_members(findings) == set()
    many = [TarItem(f"l{i}", link=f"l{i + 1}/x") for i in range(30)]
    limited = run(build_tar(many), limits=Limits(max_link_steps=50))
    hits = [f for f in limited if f.rule_id == "limits.exceeded"]
    assert hits
    assert hits[0].severity is Severity.HIGH


def test_zip_symlinks_resolved_together() -> None:
    data = build_zip(
        [
            Member("d", b".", unix_mode=LINK),
            Member("d/e", b"..", unix_mode=LINK),
            Member("d/e/payload.py", b"print('outside')\n"),
            Member("ok", b"d", unix_mode=LINK),
        ]
    )
    findings = run(data, "model.zip")
    assert high_members(findings) == {"d/e", "d/e/payload.py"}
    assert {f.symbol: f.severity for f in findings if f.rule_id == "archive.symlink"} == {
        ".": Severity.MEDIUM,
        "..": Severity.HIGH,
        "d": Severity.MEDIUM,
    }


def test_zip_file_through_an_absolute_directory_link() -> None:
    """Variant: the link escapes on its own (HIGH already); the file written through it too."""
    data = build_zip(
        [
            Member("cfg", b"/home/user/.ssh", unix_mode=LINK),
            Member("cfg/authorized_keys", b"ssh-ed25519 AAAA attacker\n"),
        ]
    )
    assert high_members(run(data, "model.zip")) == {"cfg", "cfg/authorized_keys"}


def test_7z_links_resolved_together(tmp_path: Path) -> None:
    py7zr = pytest.importorskip("py7zr")
    (tmp_path / "t").mkdir()
    (tmp_path / "u").mkdir()
    (tmp_path / "t" / "d").symlink_to(".")
    (tmp_path / "u" / "e").symlink_to("..")
    (tmp_path / "u" / "f").write_text("hi\n")
    archive = tmp_path / "m.7z"
    with py7zr.SevenZipFile(archive, "w") as z:
        z.write(tmp_path / "t" / "d", arcname="d")
        z.write(tmp_path / "u" / "e", arcname="d/e")
        z.write(tmp_path / "u" / "f", arcname="d/e/f.txt")
    assert high_members(run(archive.read_bytes(), "m.7z")) == {"d/e", "d/e/f.txt"}


def test_plain_members_do_not_spend_the_link_budget() -> None:
    """Only link hops count: an archive of many deep plain members never reaches the budget."""
    items = [TarItem(f"a/b/c/d/e/f{i}.txt", b"x") for i in range(2000)]
    items.append(TarItem("a/link", link="b/c"))
    items.append(TarItem("a/link/d/g.txt", b"through a link"))
    findings = run(build_tar(items), limits=Limits(max_link_steps=100))
    assert not [f for f in findings if f.rule_id == "limits.exceeded"]
    assert high_members(findings) == set()
