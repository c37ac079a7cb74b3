"""The peers' own test files as a benchmark: picklescan's and modelscan's, from their checkouts.

Used by ``run.py --peer-tests NAME=CHECKOUT``. Standard library only. The expected verdict of
each file comes from ``peer_labels.json``, derived by reading each peer's tests (what the test
asserts for the file); nothing of the peers' is committed here. See README.md, "The peers' own
test files".

- picklescan commits its samples (``tests/data``, ``tests/data2``): they are scanned in the
  checkout, and each label's sha256 is compared with the file's.
- modelscan builds most of its samples in its test fixtures: ``peer_tests_modelscan.py`` runs
  those fixtures (in the ``modelscan-tests`` venv of ``requirements-peer-tests.txt``) into
  ``benchmarks/.work/peer-tests/modelscan``; the labels hold the sha256 of the test sources and
  of the two files the fixtures copy from ``tests/data``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import HERE, VENVS, WORK, Json, install_peers, read_requirements, short

LABELS = HERE / "peer_labels.json"
REQUIREMENTS_PEER_TESTS = HERE / "requirements-peer-tests.txt"
GENERATED = WORK / "peer-tests"
GENERATOR = HERE / "peer_tests_modelscan.py"
GEN_VENV = "modelscan-tests"
GEN_TIMEOUT_S = 1800.0
PEERS = ("picklescan", "modelscan")


@dataclass
class PeerSet:
    """One peer's samples, ready for ``run.scan_corpus`` (paths relative to ``root``)."""

    name: str
    root: Path  # the checkout (picklescan) or the generated folder (modelscan)
    samples: list[dict[str, str]] = field(default_factory=list)
    checks: Json = field(default_factory=dict)  # stale / missing / unlabelled / generation


def parse_peer_args(values: list[str]) -> dict[str, Path]:
    """``["picklescan=/path", ...]`` -> ``{"picklescan": Path("/path")}``."""
    out: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        name = name.strip()
        if not sep or name not in PEERS or not path.strip():
            raise SystemExit(
                f"error: --peer-tests {value!r}: want NAME=CHECKOUT with NAME one of "
                + ", ".join(PEERS)
            )
        root = Path(path).expanduser().resolve()
        if not (root / "tests").is_dir():
            raise SystemExit(f"error: --peer-tests {name}: {root} has no tests/ folder")
        out[name] = root
    return out


def load_labels(path: Path = LABELS) -> Json:
    data = json.loads(path.read_text(encoding="utf-8"))
    return dict(data)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_commit(root: Path) -> str | None:
    proc = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], check=False, capture_output=True, text=True
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def _sample(peer: str, label: Json, *, label_check: str) -> dict[str, str]:
    return {
        "id": f"{peer}:{label['path']}",
        "peer": peer,
        "file": str(label["path"]),
        "expected": str(label["expected"]),
        "format": str(label["format"]),
        "technique": str(label["reason"]),
        "test": str(label["test"]),
        "debatable": str(label.get("debatable", "")),
        "label_check": label_check,
    }


# --------------------------------------------------------------------------- picklescan


def picklescan_set(root: Path, labels: Json) -> PeerSet:
    """Every labelled file of the checkout; a file whose sha256 differs from its label's is
    still scanned and listed as stale (its label may no longer hold)."""
    spec = labels["picklescan"]
    ps = PeerSet("picklescan", root)
    stale: list[Json] = []
    missing: list[str] = []
    for label in spec["files"]:
        path = root / label["path"]
        if not path.is_file():
            missing.append(label["path"])
            continue
        digest = sha256_file(path)
        check = "ok" if digest == label["sha256"] else "stale"
        if check == "stale":
            stale.append({"path": label["path"], "label_sha256": label["sha256"], "now": digest})
        ps.samples.append(_sample("picklescan", label, label_check=check))
    known = {str(label["path"]) for label in spec["files"]}
    on_disk = sorted(
        p.relative_to(root).as_posix()
        for folder in spec["folders"]
        for p in (root / folder).rglob("*")
        if p.is_file()
    )
    ps.checks = {
        "checkout": str(root),
        "commit": git_commit(root),
        "labels_commit": spec["commit"],
        "stale": stale,
        "missing": missing,
        "unlabelled": [p for p in on_disk if p not in known],
    }
    return ps


# --------------------------------------------------------------------------- modelscan


def _sources_now(root: Path, names: list[str]) -> dict[str, str]:
    return {n: sha256_file(root / n) if (root / n).is_file() else "missing" for n in names}


def generate_modelscan(
    root: Path,
    out: Path,
    *,
    skip_install: bool,
    regenerate: bool,
    log: Callable[[str], None],
) -> Json:
    """Run modelscan's fixtures into ``out`` (unless a previous run from the same sources is
    there); returns ``generated.json`` plus how it was obtained, or ``{"error": ...}``."""
    marker = out / "generated.json"
    sources = ["tests/test_modelscan.py", "tests/test_utils.py"]
    if marker.is_file() and not regenerate:
        try:
            prev = json.loads(marker.read_text(encoding="utf-8"))
        except ValueError:
            prev = {}
        if prev.get("repo") == str(root) and prev.get("sources_sha256") == _sources_now(
            root, sources
        ):
            log(f"modelscan samples: reusing {out} (same checkout and test sources)")
            return dict(prev) | {"obtained": "reused"}
    install: Json = {}
    if not skip_install:
        install = install_peers(read_requirements(REQUIREMENTS_PEER_TESTS), log)
    python = VENVS / GEN_VENV / "bin" / "python"
    if not python.is_file():
        return {"error": f"{python} not found (run without --skip-install)", "install": install}
    log(f"modelscan samples: running its test fixtures into {out}")
    try:
        proc = subprocess.run(
            [str(python), str(GENERATOR), "--repo", str(root), "--out", str(out)],
            check=False,
            capture_output=True,
            text=True,
            timeout=GEN_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"generator: {exc}", "install": install}
    if not marker.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": "generator wrote nothing: " + " | ".join(tail), "install": install}
    gen = dict(json.loads(marker.read_text(encoding="utf-8")))
    return gen | {"obtained": f"generated (rc {proc.returncode})", "install": install}


def modelscan_set(
    root: Path,
    labels: Json,
    *,
    skip_install: bool,
    regenerate: bool,
    log: Callable[[str], None],
) -> PeerSet:
    spec = labels["modelscan"]
    out = GENERATED / "modelscan"
    gen = generate_modelscan(root, out, skip_install=skip_install, regenerate=regenerate, log=log)
    ms = PeerSet("modelscan", out)
    if "error" in gen:
        ms.checks = {"checkout": str(root), "generation": gen}
        return ms
    # Labels were derived from these sources; a change upstream makes every label stale.
    now = _sources_now(root, list(spec["sources_sha256"]))
    changed = [n for n, d in spec["sources_sha256"].items() if now.get(n) != d]
    fixtures: dict[str, str] = dict(gen.get("fixtures", {}))
    generated_files: dict[str, str] = dict(gen.get("files", {}))
    not_generated: list[Json] = []
    for label in spec["files"]:
        path = out / label["path"]
        state = fixtures.get(str(label["fixture"]), "not run")
        if not path.exists():
            not_generated.append({"path": label["path"], "fixture_state": state})
            continue
        check = "stale" if changed else "ok"
        ms.samples.append(_sample("modelscan", label, label_check=check))
    labelled = [str(label["path"]) for label in spec["files"]]
    why = dict(spec.get("not_labelled", {}))
    unlabelled = [
        {"path": f, "why": why.get(f, "no label")}
        for f in sorted(generated_files)
        if not any(f == p or f.startswith(p.rstrip("/") + "/") for p in labelled)
    ]
    ms.checks = {
        "checkout": str(root),
        "commit": git_commit(root),
        "labels_commit": spec["commit"],
        "generated_into": str(out),
        "generation": {k: v for k, v in gen.items() if k not in ("files",)},
        "sources_changed_since_labels": changed,
        "stale": [s["file"] for s in ms.samples if s["label_check"] == "stale"],
        "missing": [],
        "not_generated": not_generated,
        "unlabelled": unlabelled,
    }
    return ms


# --------------------------------------------------------------------------- report


def _wrong(expected: str, verdict: str) -> bool:
    if expected == "malicious":
        return verdict != "flagged"
    return verdict not in ("clean", "unsupported")


def render_markdown(res: Json) -> str:
    """peer_tests.md: summary per peer and tool, then misses / false alarms per file."""
    tools: list[str] = list(res["tools"])
    rows: list[Json] = res["results"]
    m: Json = res["machine"]
    out = [
        "# Scanner benchmark on the peers' own test files (picklescan, modelscan)",
        "",
        f"Generated by `benchmarks/scan/run.py --peer-tests ...` on {m['date']}: "
        f"{m['nproc']} CPUs, Python {m['python']}, {m['platform']}; load average "
        f"{m['loadavg_at_start']} at start, {m['loadavg_at_end']} at end. "
        "Method, labels and caveats: `benchmarks/scan/README.md` (\"The peers' own test "
        'files"); labels: `benchmarks/scan/peer_labels.json`.',
        "",
    ]
    origin = res.get("modelcrate_source") or {}
    if origin:
        out += [
            f"modelcrate measured: `{origin.get('executable')}`, package "
            f"`{origin.get('package_dir')}`"
            + (f", commit {origin['commit'][:12]}" if origin.get("commit") else "")
            + (" (with uncommitted changes)" if origin.get("uncommitted_changes") else "")
            + (f", PYTHONPATH `{origin['pythonpath']}`" if origin.get("pythonpath") else "")
            + ".",
            "",
        ]
    out.append(
        "Versions: "
        + "; ".join(
            f"{k}: " + ", ".join(f"{p} {v}" for p, v in dict(val).items())
            for k, val in dict(res["versions"]).items()
        )
    )
    out.append("")
    if res.get("skipped_tools"):
        out += [
            "Not run: " + "; ".join(f"{k} ({v})" for k, v in dict(res["skipped_tools"]).items()),
            "",
        ]
    out += ["## Peers and label checks", ""]
    for peer, chk in dict(res["peers"]).items():
        n = sum(1 for r in rows if r["peer"] == peer)
        nm = sum(1 for r in rows if r["peer"] == peer and r["expected"] == "malicious")
        out.append(
            f"- **{peer}**: {n} files ({nm} malicious, {n - nm} benign) from "
            f"`{chk.get('checkout')}`"
            + (f" at {str(chk['commit'])[:12]}" if chk.get("commit") else "")
            + f"; labels read at {str(chk.get('labels_commit', '?'))[:12]}."
        )
        gen = chk.get("generation")
        if isinstance(gen, dict):
            if "error" in gen:
                out.append(f"  - generation failed: {gen['error']}")
            else:
                out.append(
                    f"  - samples {gen.get('obtained')}, into `{chk.get('generated_into')}`; "
                    "fixtures: "
                    + "; ".join(f"{k} {v}" for k, v in dict(gen.get("fixtures", {})).items())
                )
                vers = dict(gen.get("versions", {}))
                out.append("  - written with " + ", ".join(f"{k} {v}" for k, v in vers.items()))
        for key, what in (
            ("stale", "label sha256 differs from the file (label may not hold)"),
            ("sources_changed_since_labels", "test sources changed since the labels"),
            ("missing", "labelled but not in the checkout"),
            ("not_generated", "labelled but not generated"),
            ("unlabelled", "present but no test asserts a verdict: not scanned"),
        ):
            items = chk.get(key) or []
            if items:
                shown = [
                    f"`{i['path']}`"
                    + (f" ({i.get('why') or i.get('fixture_state')})" if len(i) > 1 else "")
                    if isinstance(i, dict)
                    else f"`{i}`"
                    for i in items
                ]
                out.append(f"  - {what}: " + ", ".join(shown))
    out += [
        "",
        "## Summary",
        "",
        "Caught = flagged. False alarms = benign files flagged. Blocked = benign files flagged "
        "or errored. Time = sum of the wall time of one fresh process per file (no folder "
        "runs here). Ratio = tool / modelcrate.",
        "",
    ]
    groups = [("all", rows)] + [
        (p, [r for r in rows if r["peer"] == p]) for p in dict(res["peers"])
    ]
    out += [
        "| files | tool | malicious caught | benign false alarms | benign blocked "
        "| errors (mal/ben) | unsupported (mal/ben) | timeouts | per-file sum s | ratio "
        "| start-up floor s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, dict[str, Json]] = res["summary"]
    floor: dict[str, Json] = res["startup_floor"]
    for group, _ in groups:
        if not summary.get(group):
            continue  # a peer with no file to scan (see the label checks above)
        base = float(summary[group].get("modelcrate", {}).get("seconds_per_file_sum") or 0.0)
        for t in tools:
            s = summary[group][t]
            secs = float(s["seconds_per_file_sum"])
            ratio = f"{secs / base:.2f}x" if base > 0 else "-"
            out.append(
                f"| {group} | {t} | {s['detected']}/{s['malicious_total']} | "
                f"{s['false_alarms']}/{s['benign_total']} | "
                f"{s['benign_blocked']}/{s['benign_total']} | "
                f"{s['errors_on_malicious']}/{s['errors_on_benign']} | "
                f"{s['unsupported_malicious']}/{s['unsupported_benign']} | {s['timeouts']} | "
                f"{secs:.2f} | {ratio} | {floor.get(t, {}).get('secs_median', '-')} |"
            )
    markers = {
        t: summary["all"][t]["markers_created"]
        for t in tools
        if summary["all"][t]["markers_created"]
    }
    out += [
        "",
        "Payload markers created while scanning: " + (json.dumps(markers) if markers else "none."),
        "",
        "## Misses and false alarms, per file",
        "",
        "Every file that at least one tool gets wrong (malicious not flagged; benign flagged "
        "or errored). Bold = wrong. The modelcrate column also gives what it reported.",
        "",
        "| file | expected | " + " | ".join(tools) + " | modelcrate reported | debatable |",
        "|---|---|" + "---|" * len(tools) + "---|---|",
    ]
    for r in rows:
        verdicts = {t: str(r["tools"][t]["verdict"]) for t in tools}
        if not any(_wrong(r["expected"], v) for v in verdicts.values()):
            continue
        cells = [f"**{v}**" if _wrong(r["expected"], v) else v for v in verdicts.values()]
        mc = r["tools"].get("modelcrate", {})
        detail = str(mc.get("detail", "")).replace("|", "/")
        deb = "yes" if r.get("debatable") else ""
        out.append(
            f"| `{r['id']}` | {r['expected']} | " + " | ".join(cells) + f" | {detail} | {deb} |"
        )
    out += ["", "## modelcrate: every miss and false alarm", ""]
    mc_wrong = [
        r
        for r in rows
        if "modelcrate" in r["tools"]
        and _wrong(r["expected"], str(r["tools"]["modelcrate"]["verdict"]))
    ]
    if not mc_wrong:
        out.append("None.")
    for r in mc_wrong:
        mc = r["tools"]["modelcrate"]
        out.append(
            f"- `{r['id']}` ({r['expected']}, {r['format']}): modelcrate **{mc['verdict']}** "
            f"(exit {mc['rc']}): {mc['detail'] or '-'}. Their test: {r['test']}: {r['technique']}"
            + (f" Debatable: {r['debatable']}" if r.get("debatable") else "")
        )
    deb_rows = [r for r in rows if r.get("debatable")]
    out += ["", "## Debatable labels", ""]
    if not deb_rows:
        out.append("None.")
    for r in deb_rows:
        verdicts = ", ".join(f"{t} {r['tools'][t]['verdict']}" for t in tools)
        out.append(
            f"- `{r['id']}` labelled {r['expected']} ({r['test']}): {r['debatable']} "
            f"Verdicts: {verdicts}."
        )
    out += [
        "",
        "## Per file",
        "",
        "| file | expected | format | their test | " + " | ".join(tools) + " |",
        "|---|---|---|---|" + "---|" * len(tools),
    ]
    for r in rows:
        cells = []
        for t in tools:
            v = str(r["tools"][t]["verdict"])
            cells.append(f"**{v}**" if _wrong(r["expected"], v) else v)
        out.append(
            f"| `{r['id']}` | {r['expected']} | {r['format']} | "
            f"{short(str(r['test']), 40)} | " + " | ".join(cells) + " |"
        )
    if "modelcrate" in tools:
        out += [
            "",
            "## What modelcrate reported per file",
            "",
            "| file | expected | verdict | HIGH/CRITICAL findings (rule, symbol) |",
            "|---|---|---|---|",
        ]
        for r in rows:
            mc = r["tools"]["modelcrate"]
            detail = str(mc["detail"]).replace("|", "/")
            out.append(f"| `{r['id']}` | {r['expected']} | {mc['verdict']} | {detail} |")
    out.append("")
    return "\n".join(out)
