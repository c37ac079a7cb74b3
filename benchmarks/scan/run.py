#!/usr/bin/env python3
"""Side-by-side benchmark: modelcrate scan vs modelscan, picklescan and fickling.

Standard library only; runs with any Python 3.11. One command::

    python benchmarks/scan/run.py [--corpus DIR] [--skip-install] [--out DIR]
    python benchmarks/scan/run.py --peer-tests picklescan=CHECKOUT --peer-tests modelscan=CHECKOUT

Each peer lives in its own virtual environment under ``benchmarks/.work/venvs/<peer>``
(installed once from ``requirements-peers.txt``). Every tool is run once per corpus file as
a fresh process, exactly as a user would from a shell, then once over the whole corpus folder
where it accepts one. See README.md in this folder for the method and its caveats.

With ``--peer-tests`` it runs over the peers' own test files instead (peer_tests.py): the
files in a picklescan checkout, the files modelscan's test fixtures build from a modelscan
checkout, each labelled from what the peer's tests assert (peer_labels.json); it writes
peer_tests.json and peer_tests.md and leaves results.* alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The sibling module, importable because of the sys.path line above.
from harness import (
    DEFAULT_CORPUS,
    HERE,
    MODELCRATE,
    VENVS,
    Json,
    Outcome,
    Run,
    Tool,
    all_tools,
    install_peers,
    machine_info,
    mc_file_outcome,
    modelcrate_origin,
    package_versions,
    read_requirements,
    requirement_name,
    run_process,
    short,
    tool_available,
)

# --------------------------------------------------------------------------- the benchmark


def load_manifest(corpus: Path) -> list[dict[str, str]]:
    data = json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))
    return [dict(s) for s in data]


def scan_corpus(
    tools: list[Tool],
    samples: list[dict[str, str]],
    corpus: Path,
    timeout: float,
    log: Callable[[str], None],
) -> list[Json]:
    """Run every tool once per sample file, sample-major (tools interleaved against drift)."""
    # One untimed warm-up per tool so the first timed sample does not pay the cold cache.
    for tool in tools:
        warm = run_process(tool.file_argv(corpus / samples[0]["file"]), timeout, tool.env)
        shutil.rmtree(warm.scratch, ignore_errors=True)
    rows: list[Json] = []
    for sample in samples:
        path = corpus / sample["file"]
        results: Json = {}
        for tool in tools:
            run = run_process(tool.file_argv(path), timeout, tool.env)
            outcome = tool.classify(run)
            detail = outcome.detail.replace(str(corpus) + "/", "")
            results[tool.name] = {
                "verdict": outcome.verdict,
                "rc": run.rc,
                "secs": round(run.secs, 4),
                "timed_out": run.timed_out,
                "detail": detail,
                "markers_created": list(run.markers),
            }
            if tool.name == "modelcrate":
                results[tool.name]["scan_secs"] = _mc_seconds(run.stdout)
            shutil.rmtree(run.scratch, ignore_errors=True)
        log(
            f"{sample['id']:>4} {sample['expected']:<9} "
            + "  ".join(f"{t.name}={results[t.name]['verdict']}" for t in tools)
        )
        rows.append(
            {k: sample.get(k, "") for k in ("id", "file", "expected", "format", "technique")}
            | {"tools": results}
        )
    return rows


def _mc_seconds(stdout: str) -> float | None:
    """modelcrate's own scan time from its JSON report (``seconds``), start-up excluded."""
    try:
        return round(float(json.loads(stdout)["seconds"]), 4)
    except (ValueError, KeyError, TypeError):
        return None


def startup_floor(tools: list[Tool], repeat: int, timeout: float) -> Json:
    """Median wall time of each tool's do-nothing command (``--version``/``--help``)."""
    out: Json = {}
    for tool in tools:
        secs = []
        for _ in range(repeat):
            run = run_process(list(tool.startup_argv), timeout, tool.env)
            shutil.rmtree(run.scratch, ignore_errors=True)
            secs.append(run.secs)
        out[tool.name] = {
            "command": " ".join([Path(tool.startup_argv[0]).name, *tool.startup_argv[1:]]),
            "secs_median": round(statistics.median(secs), 4),
            "secs_min": round(min(secs), 4),
        }
    return out


def _dir_verdicts(stdout: str, corpus: Path, samples: list[dict[str, str]]) -> dict[str, str]:
    """Per-sample verdicts from one modelcrate JSON report over the corpus folder."""
    try:
        report = json.loads(stdout)
    except ValueError:
        return {}
    by_file: dict[str, list[Outcome]] = {}
    root = corpus.resolve()
    for entry in report.get("files", []) if isinstance(report, dict) else []:
        if not isinstance(entry, dict):
            continue
        p = Path(str(entry.get("path", "")))
        p = p if p.is_absolute() else corpus / p
        try:
            rel = p.resolve().relative_to(root).as_posix()
        except ValueError:
            rel = str(entry.get("path", ""))
        by_file.setdefault(rel, []).append(mc_file_outcome(entry))
    out: dict[str, str] = {}
    for s in samples:
        got = by_file.get(s["file"])
        if got is None:
            out[s["id"]] = "missing"
        elif any(o.verdict == "flagged" for o in got):
            out[s["id"]] = "flagged"
        else:
            out[s["id"]] = got[0].verdict
    return out


def scan_folder(
    tools: list[Tool],
    corpus: Path,
    samples: list[dict[str, str]],
    rows: list[Json],
    *,
    timeout: float,
    repeat: int,
) -> Json:
    """Time one process over the whole corpus folder, ``repeat`` times, per tool."""
    out: Json = {}
    for tool in tools:
        if tool.dir_argv is None:
            out[tool.name] = {"supported": False, "note": "no directory argument"}
            continue
        secs: list[float] = []
        rcs: list[int | None] = []
        last: Run | None = None
        for _ in range(repeat):
            run = run_process(tool.dir_argv(corpus), timeout * len(samples), tool.env)
            secs.append(run.secs)
            rcs.append(run.rc)
            if last is not None:
                shutil.rmtree(last.scratch, ignore_errors=True)
            last = run
        entry: Json = {
            "supported": True,
            "rc": rcs,
            "timed_out": bool(last and last.timed_out),
            "secs_runs": [round(s, 4) for s in secs],
            "secs_median": round(statistics.median(secs), 4),
            "secs_min": round(min(secs), 4),
            "markers_created": list(last.markers) if last else [],
        }
        if tool.name == "modelcrate" and last is not None:
            verdicts = _dir_verdicts(last.stdout, corpus, samples)
            per_file = {str(r["id"]): r["tools"][tool.name]["verdict"] for r in rows}
            entry["verdicts"] = verdicts
            entry["disagreements_with_per_file_runs"] = sorted(
                i for i, v in verdicts.items() if v != per_file.get(i)
            )
        if last is not None:
            shutil.rmtree(last.scratch, ignore_errors=True)
        out[tool.name] = entry
    return out


# --------------------------------------------------------------------------- summaries


def summarize(tool: str, rows: list[Json]) -> Json:
    """Detection: a malicious sample counts as caught only when flagged; a benign one is a
    false alarm when flagged. Errors and unsupported files are counted on their own; the
    earlier peer study (peers-public.json) also counted a benign *error* as a false alarm
    (it fails a CI gate just the same): that number is ``benign_blocked``."""
    s: Json = {}
    mal = [r for r in rows if r["expected"] == "malicious"]
    ben = [r for r in rows if r["expected"] == "benign"]

    def v(r: Json) -> str:
        return str(r["tools"][tool]["verdict"])

    def ids(rs: list[Json], pred: Callable[[str], bool]) -> list[str]:
        return [str(r["id"]) for r in rs if pred(v(r))]

    s["malicious_total"] = len(mal)
    s["benign_total"] = len(ben)
    s["detected"] = len(ids(mal, lambda x: x == "flagged"))
    s["missed"] = len(mal) - int(s["detected"])
    s["false_alarms"] = len(ids(ben, lambda x: x == "flagged"))
    s["benign_blocked"] = len(ids(ben, lambda x: x in ("flagged", "error")))
    s["errors_on_malicious"] = len(ids(mal, lambda x: x == "error"))
    s["errors_on_benign"] = len(ids(ben, lambda x: x == "error"))
    s["unsupported_malicious"] = len(ids(mal, lambda x: x == "unsupported"))
    s["unsupported_benign"] = len(ids(ben, lambda x: x == "unsupported"))
    s["timeouts"] = sum(1 for r in rows if r["tools"][tool]["timed_out"])
    s["seconds_per_file_sum"] = round(
        sum(float(r["tools"][tool]["secs"]) for r in rows),
        3,
    )
    inproc = [r["tools"][tool].get("scan_secs") for r in rows]
    if any(x is not None for x in inproc):
        s["in_process_scan_seconds_sum"] = round(sum(float(x or 0.0) for x in inproc), 3)
    s["missed_ids"] = ids(mal, lambda x: x != "flagged")
    s["false_alarm_ids"] = ids(ben, lambda x: x == "flagged")
    s["benign_blocked_ids"] = ids(ben, lambda x: x in ("flagged", "error"))
    s["error_ids"] = ids(rows, lambda x: x == "error")
    s["unsupported_ids"] = ids(rows, lambda x: x == "unsupported")
    s["markers_created"] = sorted({m for r in rows for m in r["tools"][tool]["markers_created"]})
    return s


def by_format(tools: list[str], rows: list[Json]) -> dict[str, Json]:
    out: dict[str, Json] = {}
    for fmt in sorted({str(r["format"]) for r in rows}):
        rs = [r for r in rows if r["format"] == fmt]
        out[fmt] = {}
        for t in tools:
            mal = [r for r in rs if r["expected"] == "malicious"]
            ben = [r for r in rs if r["expected"] == "benign"]
            caught = sum(1 for r in mal if r["tools"][t]["verdict"] == "flagged")
            fa = sum(1 for r in ben if r["tools"][t]["verdict"] == "flagged")
            out[fmt][t] = {"malicious": f"{caught}/{len(mal)}", "benign_fa": f"{fa}/{len(ben)}"}
    return out


def compare_previous(previous: Path, tools: list[str], rows: list[Json]) -> Json:
    """Where this run's peer verdicts differ from the earlier study's (same corpus ids)."""
    try:
        prev = json.loads(previous.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    old = {r["id"]: r.get("tools", {}) for r in prev.get("results", []) if isinstance(r, dict)}
    diffs: Json = {}
    for t in tools:
        if t == "modelcrate":
            continue
        d = []
        for r in rows:
            before = old.get(r["id"], {}).get(t, {}).get("verdict")
            now = r["tools"][t]["verdict"]
            if before is not None and before != now:
                d.append({"id": r["id"], "before": before, "now": now})
        diffs[t] = d
    return {"file": str(previous), "verdict_differences": diffs}


def ratios(
    tools: list[str], summary: dict[str, Json], folder: Json
) -> dict[str, dict[str, float | None]]:
    """Each tool's time / modelcrate's time: (a) sum of per-file runs, (b) one folder run."""
    out: dict[str, dict[str, float | None]] = {}
    if "modelcrate" not in summary:
        return out
    base_a = float(summary["modelcrate"]["seconds_per_file_sum"])
    mc_dir = folder.get("modelcrate", {})
    base_b = (
        float(mc_dir["secs_median"])
        if isinstance(mc_dir, dict) and "secs_median" in mc_dir
        else 0.0
    )
    for t in tools:
        a = float(summary[t]["seconds_per_file_sum"])
        d = folder.get(t, {})
        b = float(d["secs_median"]) if isinstance(d, dict) and "secs_median" in d else None
        out[t] = {
            "per_file_sum": round(a / base_a, 2) if base_a > 0 else None,
            "folder_run": round(b / base_b, 2) if b is not None and base_b > 0 else None,
        }
    return out


# --------------------------------------------------------------------------- report


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def render_markdown(res: Json) -> str:
    tools: list[str] = list(res["tools"])
    summary: dict[str, Json] = res["summary"]
    folder: dict[str, Json] = res["folder_run"]
    rat: dict[str, dict[str, float | None]] = res["time_ratios_vs_modelcrate"]
    rows: list[Json] = res["results"]
    m: Json = res["machine"]
    vers: Json = res["versions"]
    n_mal = sum(1 for r in rows if r["expected"] == "malicious")
    out = [
        "# Scanner benchmark: modelcrate vs modelscan, picklescan, fickling",
        "",
        f"Generated by `benchmarks/scan/run.py` on {m['date']}: {m['nproc']} CPUs, "
        f"Python {m['python']}, {m['platform']}; load average (1/5/15 min) "
        f"{m['loadavg_at_start']} at start, {m['loadavg_at_end']} at end.",
        f"Corpus: `{res['corpus']}`, {len(rows)} samples ({n_mal} malicious, "
        f"{len(rows) - n_mal} benign). Method and caveats: `benchmarks/scan/README.md`.",
        "",
        "Versions: "
        + "; ".join(
            f"{k}: " + ", ".join(f"{p} {v}" for p, v in dict(val).items())
            for k, val in vers.items()
        ),
        "",
    ]
    if res.get("skipped_tools"):
        out += [
            "Not run: " + "; ".join(f"{k} ({v})" for k, v in dict(res["skipped_tools"]).items()),
            "",
        ]
    if res.get("modelcrate_source"):
        src = res["modelcrate_source"]
        out += [
            f"modelcrate measured: `{src.get('executable')}`, package `{src.get('package_dir')}`"
            + (f", commit {str(src['commit'])[:12]}" if src.get("commit") else "")
            + (" (with uncommitted changes)" if src.get("uncommitted_changes") else "")
            + (f", PYTHONPATH `{src['pythonpath']}`" if src.get("pythonpath") else "")
            + ".",
            "",
        ]
    out += [
        "## Summary",
        "",
        "Caught = flagged (exit code / output says unsafe). False alarms = benign files flagged. "
        "Blocked = benign files flagged *or* errored (either fails a CI gate; the earlier "
        "peer study, `peers-public.json`, called this number false alarms). "
        "Time (a) = sum of the wall time of one fresh process per file; "
        "(b) = one process over the whole corpus folder (median of "
        f"{res['folder_repeat']} runs; fickling has no folder mode). Ratio = tool / modelcrate.",
        "",
        "| tool | malicious caught | benign false alarms | benign blocked | errors (mal/ben) "
        "| unsupported (mal/ben) | timeouts | (a) per-file sum s | (b) folder run s "
        "| ratio (a) | ratio (b) | start-up floor s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    floor: dict[str, Json] = res["startup_floor"]
    for t in tools:
        s = summary[t]
        f = folder.get(t, {})
        b = f"{f['secs_median']:.2f}" if "secs_median" in f else "n/a"
        rt = rat.get(t, {})
        out.append(
            f"| {t} | {s['detected']}/{s['malicious_total']} | {s['false_alarms']}/"
            f"{s['benign_total']} | {s['benign_blocked']}/{s['benign_total']} | "
            f"{s['errors_on_malicious']}/{s['errors_on_benign']} | "
            f"{s['unsupported_malicious']}/{s['unsupported_benign']} | {s['timeouts']} | "
            f"{float(s['seconds_per_file_sum']):.2f} | {b} | "
            f"{_fmt_ratio(rt.get('per_file_sum'))} | {_fmt_ratio(rt.get('folder_run'))} | "
            f"{floor.get(t, {}).get('secs_median', '-')} |"
        )
    out += [
        "",
        "Start-up floor = median of 5 runs of a do-nothing command ("
        + ", ".join(f"`{f['command']}`" for f in floor.values())
        + "): interpreter start-up and imports, paid once per process.",
    ]
    inproc = summary.get("modelcrate", {}).get("in_process_scan_seconds_sum")
    if inproc is not None:
        out.append(
            f"modelcrate's own scan time summed over the per-file runs (JSON `seconds`): "
            f"{inproc} s of the {summary['modelcrate']['seconds_per_file_sum']} s in (a)."
        )
    out += ["", "## Misses and false alarms", ""]
    for t in tools:
        s = summary[t]
        out.append(
            f"- **{t}**: missed {', '.join(s['missed_ids']) or 'none'}; "
            f"false alarms {', '.join(s['false_alarm_ids']) or 'none'}; "
            f"errors {', '.join(s['error_ids']) or 'none'}"
        )
    markers = {t: summary[t]["markers_created"] for t in tools if summary[t]["markers_created"]}
    out += [
        "",
        "Payload markers created while scanning (a scanner that executed a sample): "
        + (json.dumps(markers) if markers else "none."),
    ]
    mc_dir = folder.get("modelcrate", {})
    if "disagreements_with_per_file_runs" in mc_dir:
        dis = mc_dir["disagreements_with_per_file_runs"]
        out.append(
            "modelcrate folder run vs per-file runs, samples whose verdict differs: "
            + (", ".join(dis) if dis else "none")
            + "."
        )
    out += ["", "## By format (malicious caught / benign false alarms)", ""]
    out += ["| format | " + " | ".join(tools) + " |", "|---|" + "---|" * len(tools)]
    for fmt, per in dict(res["by_format"]).items():
        out.append(
            f"| {fmt} | "
            + " | ".join(f"{per[t]['malicious']} / {per[t]['benign_fa']}" for t in tools)
            + " |"
        )
    out += [
        "",
        "## Per sample",
        "",
        "Bold = wrong outcome (malicious not flagged, or benign not clean/unsupported).",
        "",
        "| id | expected | format | technique | " + " | ".join(tools) + " |",
        "|---|---|---|---|" + "---|" * len(tools),
    ]
    for r in rows:
        tech = short(str(r["technique"]), 70).replace("|", "/")
        cells = []
        for t in tools:
            verdict = str(r["tools"][t]["verdict"])
            wrong = (r["expected"] == "malicious") != (verdict == "flagged") and not (
                r["expected"] == "benign" and verdict == "unsupported"
            )
            cells.append(f"**{verdict}**" if wrong else verdict)
        out.append(
            f"| {r['id']} | {r['expected']} | {r['format']} | {tech} | " + " | ".join(cells) + " |"
        )
    if "modelcrate" in tools:
        out += ["", "## What modelcrate reported per sample", ""]
        out += [
            "| id | expected | verdict | HIGH/CRITICAL findings (rule, symbol) |",
            "|---|---|---|---|",
        ]
        for r in rows:
            mc = r["tools"]["modelcrate"]
            detail = str(mc["detail"]).replace("|", "/")
            out.append(f"| {r['id']} | {r['expected']} | {mc['verdict']} | {detail} |")
    prev = res.get("previous_study") or {}
    if prev:
        out += ["", "## Peer verdicts vs the earlier study", ""]
        for t, d in dict(prev["verdict_differences"]).items():
            items = ", ".join(f"{x['id']} {x['before']}->{x['now']}" for x in d)
            out.append(f"- {t}: {items or 'same verdicts on every sample'}")
    out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- peer tests


def run_peer_tests(
    args: argparse.Namespace,
    *,
    tools: list[Tool],
    skipped: dict[str, str],
    versions: dict[str, dict[str, str]],
    install: dict[str, str],
    log: Callable[[str], None],
) -> int:
    """The peers' own test files (see peer_tests.py): peer_tests.json and peer_tests.md."""
    import peer_tests

    peers = peer_tests.parse_peer_args(args.peer_tests)
    labels = peer_tests.load_labels()
    sets: list[peer_tests.PeerSet] = []
    for name, root in peers.items():
        if name == "picklescan":
            sets.append(peer_tests.picklescan_set(root, labels))
        else:
            sets.append(
                peer_tests.modelscan_set(
                    root,
                    labels,
                    skip_install=args.skip_install,
                    regenerate=args.peer_regenerate,
                    log=log,
                )
            )
    machine = machine_info()
    t0 = time.perf_counter()
    rows: list[Json] = []
    for ps in sets:
        log(f"{ps.name}: {len(ps.samples)} files x {len(tools)} tools, one fresh process each")
        if not ps.samples:
            continue
        got = scan_corpus(tools, ps.samples, ps.root, args.timeout, log)
        for sample, row in zip(ps.samples, got, strict=True):
            extra = ("peer", "test", "debatable", "label_check")
            rows.append({k: sample[k] for k in extra} | row)
    if not rows:
        print("error: no peer test file to scan", file=sys.stderr)
        return 2
    log("start-up floor")
    floor = startup_floor(tools, repeat=5, timeout=args.timeout)
    names = [t.name for t in tools]
    groups: dict[str, list[Json]] = {"all": rows}
    for ps in sets:
        groups[ps.name] = [r for r in rows if r["peer"] == ps.name]
    summary = {g: {t: summarize(t, rs) for t in names} if rs else {} for g, rs in groups.items()}
    mc = next((t for t in tools if t.name == "modelcrate"), None)
    result: Json = {
        "machine": machine | {"loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "tools": names,
        "commands": {t.name: " ".join(t.file_argv(Path("FILE"))) for t in tools},
        "versions": versions,
        "modelcrate_source": modelcrate_origin(mc.exe, mc.env) if mc else {},
        "install": install,
        "skipped_tools": skipped,
        "timeout_s": args.timeout,
        "labels": str(peer_tests.LABELS.relative_to(HERE.parents[1])),
        "peers": {ps.name: ps.checks for ps in sets},
        "summary": summary,
        "startup_floor": floor,
        "by_format": by_format(names, rows),
        "benchmark_wall_s": round(time.perf_counter() - t0, 1),
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out_json, out_md = args.out / "peer_tests.json", args.out / "peer_tests.md"
    out_json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    out_md.write_text(peer_tests.render_markdown(result), encoding="utf-8")
    log(f"wrote {out_json} and {out_md}")
    return 0


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus folder")
    ap.add_argument("--out", type=Path, default=HERE, help="where results.json/.md go")
    ap.add_argument("--skip-install", action="store_true", help="do not create peer venvs")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per file per tool")
    ap.add_argument("--folder-repeat", type=int, default=3, help="folder runs per tool")
    ap.add_argument("--tools", default="", help="comma-separated subset of tool names")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--modelcrate",
        type=Path,
        default=MODELCRATE,
        help="the modelcrate executable to measure (default: this checkout's .venv)",
    )
    ap.add_argument(
        "--modelcrate-src",
        type=Path,
        default=None,
        help="a src/ folder put on PYTHONPATH for modelcrate runs only (e.g. a worktree's src)",
    )
    ap.add_argument(
        "--peer-tests",
        action="append",
        default=[],
        metavar="NAME=CHECKOUT",
        help="instead of the corpus: the test files of picklescan or modelscan, from a "
        "checkout of it (repeatable); writes peer_tests.json/.md",
    )
    ap.add_argument(
        "--peer-regenerate",
        action="store_true",
        help="re-run modelscan's fixtures even if samples from the same sources exist",
    )
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    corpus: Path = args.corpus.resolve()
    if not args.peer_tests and not (corpus / "manifest.json").is_file():
        print(f"error: no manifest.json in {corpus}", file=sys.stderr)
        return 2
    reqs = read_requirements()
    install = {} if args.skip_install else install_peers(reqs, log)
    wanted = {t.strip() for t in args.tools.split(",") if t.strip()}
    tools: list[Tool] = []
    skipped: dict[str, str] = {}
    mc_exe: Path = args.modelcrate.expanduser().absolute()
    mc_env = {"PYTHONPATH": str(args.modelcrate_src.resolve())} if args.modelcrate_src else None
    for tool in all_tools(mc_exe, mc_env):
        if wanted and tool.name not in wanted:
            continue
        why = tool_available(tool)
        if why is None:
            tools.append(tool)
        else:
            skipped[tool.name] = why
            log(f"skipping {tool.name}: {why}")
    if not tools:
        print("error: no tool can run", file=sys.stderr)
        return 2
    versions: dict[str, dict[str, str]] = {}
    for venv, lines in reqs.items():
        if any(t.venv == venv for t in tools):
            names = [requirement_name(r) for r in lines]
            versions[venv] = package_versions(VENVS / venv / "bin" / "python", names)
    if any(t.name == "modelcrate" for t in tools):
        versions["modelcrate"] = package_versions(mc_exe.parent / "python", ["modelcrate"])
    if args.peer_tests:
        return run_peer_tests(
            args, tools=tools, skipped=skipped, versions=versions, install=install, log=log
        )

    machine = machine_info()
    samples = load_manifest(corpus)
    log(f"{len(samples)} samples x {len(tools)} tools, one fresh process each")
    t0 = time.perf_counter()
    rows = scan_corpus(tools, samples, corpus, args.timeout, log)
    log("start-up floor")
    floor = startup_floor(tools, repeat=5, timeout=args.timeout)
    log("folder runs")
    folder = scan_folder(
        tools, corpus, samples, rows, timeout=args.timeout, repeat=max(1, args.folder_repeat)
    )
    names = [t.name for t in tools]
    summary = {t: summarize(t, rows) for t in names}
    result: Json = {
        "machine": machine | {"loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "corpus": str(corpus),
        "tools": names,
        "commands": {t.name: " ".join(t.file_argv(Path("FILE"))) for t in tools},
        "folder_commands": {
            t.name: " ".join(t.dir_argv(Path("DIR"))) for t in tools if t.dir_argv is not None
        },
        "versions": versions,
        "install": install,
        "skipped_tools": skipped,
        "timeout_s": args.timeout,
        "folder_repeat": max(1, args.folder_repeat),
        "summary": summary,
        "startup_floor": floor,
        "folder_run": folder,
        "time_ratios_vs_modelcrate": ratios(names, summary, folder),
        "by_format": by_format(names, rows),
        "previous_study": compare_previous(corpus.parent / "peers-public.json", names, rows),
        "benchmark_wall_s": round(time.perf_counter() - t0, 1),
        "results": rows,
    }
    if mc_exe != MODELCRATE or mc_env:  # which code ran, when it is not the default
        mc = next((t for t in tools if t.name == "modelcrate"), None)
        result["modelcrate_source"] = modelcrate_origin(mc.exe, mc.env) if mc else {}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (args.out / "results.md").write_text(render_markdown(result), encoding="utf-8")
    log(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
