"""Shared parts of the scanner benchmark: peer venvs, one tool process, verdict mapping.

Standard library only. Used by ``run.py`` (the corpus benchmark) and ``big_checkpoint.py``.
Each tool's exit codes and output are mapped to one verdict: flagged, clean, error or
unsupported; README.md explains the mapping per tool.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Json = dict[str, Any]  # a parsed JSON object / a results record

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = REPO / "benchmarks" / ".work"
VENVS = WORK / "venvs"
SCRATCH = WORK / "scratch"
REQUIREMENTS = HERE / "requirements-peers.txt"
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
MODELCRATE = REPO / ".venv" / "bin" / "modelcrate"
MODELCRATE_PY = REPO / ".venv" / "bin" / "python"
MARKER_DIR = Path("/tmp/mc-corpus-pwned")  # what a corpus payload creates if it ever runs
STAMP = ".bench-installed"
DETAIL_MAX = 160
VERDICTS = ("flagged", "clean", "error", "unsupported")
BLOCKING = ("HIGH", "CRITICAL")  # modelcrate's default --fail-on is high


# --------------------------------------------------------------------------- installing peers


def read_requirements(path: Path = REQUIREMENTS) -> dict[str, list[str]]:
    """``{venv name: [pip requirement, ...]}`` from ``<venv>: <requirement>`` lines."""
    venvs: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, req = line.partition(":")
        if not sep or not name.strip() or not req.strip():
            raise SystemExit(f"{path}: cannot parse line {raw!r} (want '<venv>: <requirement>')")
        venvs.setdefault(name.strip(), []).append(req.strip())
    return venvs


def install_peers(reqs: dict[str, list[str]], log: Callable[[str], None]) -> dict[str, str]:
    """Create each venv and pip-install its pinned requirements once (a stamp file)."""
    status: dict[str, str] = {}
    for venv, lines in reqs.items():
        target = VENVS / venv
        stamp = target / STAMP
        wanted = "\n".join(lines) + "\n"
        if stamp.is_file() and stamp.read_text(encoding="utf-8") == wanted:
            status[venv] = "already installed"
            continue
        log(f"installing {venv}: {' '.join(lines)}")
        steps = [
            [sys.executable, "-m", "venv", str(target)],
            [str(target / "bin" / "python"), "-m", "pip", "install", "-q",
             "--disable-pip-version-check", *lines],
        ]  # fmt: skip
        status[venv] = "installed"
        for argv in steps:
            try:
                proc = subprocess.run(
                    argv, check=False, capture_output=True, text=True, timeout=1800
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                status[venv] = f"install failed: {exc}"
                break
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                status[venv] = f"install failed (rc {proc.returncode}): {' | '.join(tail)}"
                break
        if status[venv] == "installed":
            stamp.write_text(wanted, encoding="utf-8")
        log(f"  {venv}: {status[venv]}")
    return status


def package_versions(python: Path, names: list[str]) -> dict[str, str]:
    """Installed versions of ``names`` in the environment of ``python``."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = m.version(n)\n"
        "    except Exception: out[n] = 'not installed'\n"
        "print(json.dumps(out))\n"
    )
    try:
        proc = subprocess.run(
            [str(python), "-c", code, *names],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return dict(json.loads(proc.stdout))
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {n: "unknown" for n in names}


def modelcrate_origin(exe: Path, env: dict[str, str] | None = None) -> Json:
    """Which modelcrate code ``exe`` runs: the imported package's folder and, when that is in
    a git work tree, its commit and whether it has uncommitted changes."""
    python = exe.parent / "python"
    code = "import modelcrate, os; print(os.path.dirname(modelcrate.__file__))"
    out: Json = {"executable": str(exe), "pythonpath": (env or {}).get("PYTHONPATH", "")}
    try:
        proc = subprocess.run(
            [str(python), "-c", code], check=False, capture_output=True, text=True,
            timeout=60, env=tool_env(env),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return out | {"package_dir": f"unknown ({exc})"}
    pkg = proc.stdout.strip() or f"unknown ({_last_line(proc.stderr)})"
    out["package_dir"] = pkg
    if Path(pkg).is_dir():

        def git(*cmd: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["git", "-C", pkg, *cmd], check=False, capture_output=True, text=True
            )

        head = git("rev-parse", "HEAD")
        if head.returncode == 0:
            out["commit"] = head.stdout.strip()
            out["uncommitted_changes"] = bool(git("status", "--porcelain", "--", ".").stdout)
    return out


def requirement_name(req: str) -> str:
    for sep in ("==", ">=", "<=", "~=", "!=", "<", ">", "[", ";", " "):
        req = req.split(sep, 1)[0]
    return req.strip()


# --------------------------------------------------------------------------- running one process


@dataclass(frozen=True)
class Run:
    """One finished (or killed) tool process."""

    rc: int | None  # None: it never started
    secs: float
    stdout: str
    stderr: str
    timed_out: bool
    scratch: Path  # the process's own empty working directory
    markers: tuple[str, ...] = ()  # corpus payload markers that appeared during the run


@dataclass(frozen=True)
class Outcome:
    verdict: str  # one of VERDICTS
    detail: str


def _markers() -> set[str]:
    try:
        return {p.name for p in MARKER_DIR.iterdir()}
    except OSError:
        return set()


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "PYTHONIOENCODING": "utf-8"})
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    env.update(extra or {})
    return env


def run_process(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> Run:
    """Run ``argv`` in a fresh empty working directory; kill its process group on timeout.
    ``env``: variables added to the clean tool environment (e.g. PYTHONPATH for modelcrate)."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=SCRATCH))
    before = _markers()
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=scratch,
            env=tool_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return Run(None, 0.0, "", f"{type(exc).__name__}: {exc}", False, scratch)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    secs = time.perf_counter() - t0
    new = tuple(sorted(_markers() - before))
    return Run(
        proc.returncode,
        secs,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        timed_out,
        scratch,
        new,
    )


def short(text: str, limit: int = DETAIL_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _common_failure(run: Run) -> Outcome | None:
    if run.rc is None:
        return Outcome("error", short(f"could not start: {run.stderr}"))
    if run.timed_out:
        return Outcome("error", f"timeout after {run.secs:.1f}s (killed)")
    return None


def _crashed(run: Run) -> bool:
    """An uncaught Python exception: exits 1 like a "found something" verdict, so check."""
    return "Traceback (most recent call last)" in run.stderr


def _crash(run: Run) -> Outcome:
    return Outcome("error", short(f"crash (rc {run.rc}): {_last_line(run.stderr)}"))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------- per-tool verdicts


def classify_modelscan(run: Run) -> Outcome:
    """modelscan 0.8.8 exit codes (cli.py): 0 clean, 1 issues, 2 errors/exception,
    3 nothing scanned (errored files count as not scanned), 4 usage error."""
    if (fail := _common_failure(run)) is not None:
        return fail
    lines = run.stdout.splitlines()
    issues: list[str] = []
    errors: list[str] = []
    severity = ""
    section = ""
    block: list[str] = []
    for raw in lines:
        line = raw.strip()
        if line.startswith("---") and line.endswith("---"):
            if block:
                errors.append(block[-1])
                block = []
            section = line.strip("- ").strip()
            continue
        if line.startswith("- Severity:"):
            severity = line.split(":", 1)[1].strip()
        elif line.startswith("- Description:"):
            desc = line.split(":", 1)[1].strip()
            if desc.startswith("Use of unsafe operator '") and "' from module '" in desc:
                op, _, mod = desc[len("Use of unsafe operator '") :].partition("' from module '")
                desc = f"{mod.rstrip(chr(39))}.{op}"
            issues.append(f"{severity} {desc}".strip())
        elif section == "Errors":
            if line.startswith("Error ") and line.endswith(":"):
                if block:
                    errors.append(block[-1])
                block = []
            elif line:
                block.append(line)
    if block:
        errors.append(block[-1])
    exception = [ln.strip() for ln in lines if ln.startswith("Exception:")]
    total = 0
    for line in lines:
        if line.startswith("Total Issues:"):
            try:
                total = int(line.split(":", 1)[1])
            except ValueError:
                total = 1
    if total > 0 or issues:
        return Outcome("flagged", short("; ".join(issues) or f"{total} issues"))
    if _crashed(run):
        return _crash(run)
    if run.rc == 1:
        return Outcome("flagged", "exit code 1")
    if run.rc == 2 or errors or exception or run.rc == 4:
        return Outcome("error", short("; ".join(errors + exception) or _last_line(run.stderr)))
    if run.rc == 3:
        return Outcome("unsupported", "")
    if run.rc == 0:
        return Outcome("clean", "")
    return Outcome("error", short(f"rc {run.rc}: {_last_line(run.stderr or run.stdout)}"))


def classify_picklescan(run: Run) -> Outcome:
    """picklescan 1.0.5: rc 1 dangerous globals found, 2 scan error, 0 otherwise; a file it
    does not handle (e.g. .keras) gives rc 0 with "Scanned files: 0"."""
    if (fail := _common_failure(run)) is not None:
        return fail
    out = run.stdout + "\n" + run.stderr
    found = [ln.strip() for ln in out.splitlines() if "dangerous import" in ln]
    infected = 0
    scanned = -1
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Infected files":
            infected = int(value) if value.strip().isdigit() else 1
        elif key.strip() == "Scanned files":
            scanned = int(value) if value.strip().isdigit() else -1
    if found or infected > 0:
        return Outcome("flagged", short(" | ".join(found) or f"{infected} infected files"))
    if run.rc == 1:
        return _crash(run) if _crashed(run) else Outcome("flagged", "exit code 1")
    errs = [ln.strip() for ln in out.splitlines() if ln.startswith(("ERROR", "Unhandled"))]
    if run.rc == 2 or errs:
        if "Traceback" in out:
            errs.append(_last_line(run.stderr or run.stdout))
        return Outcome("error", short(" | ".join(errs) or _last_line(out)))
    if run.rc == 0 and scanned == 0:
        return Outcome("unsupported", "")
    if run.rc == 0:
        return Outcome("clean", "")
    return Outcome("error", short(f"rc {run.rc}: {_last_line(out)}"))


def _fickling_severities(scratch: Path) -> list[str]:
    """fickling appends one JSON object per stacked pickle to ./safety_results.json."""
    path = scratch / "safety_results.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    decoder = json.JSONDecoder()
    out: list[str] = []
    pos = 0
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except ValueError:
            break
        if isinstance(obj, dict):
            out.append(str(obj.get("severity", "?")))
    return out


def classify_fickling(run: Run) -> Outcome:
    """fickling 0.1.12 --check-safety (cli.py): 0 clean, 1 unsafe, 2 parse error."""
    if (fail := _common_failure(run)) is not None:
        return fail
    if run.rc == 1:
        sev = _fickling_severities(run.scratch)
        if not sev and _crashed(run):
            return _crash(run)
        return Outcome("flagged", short(",".join(sev) or _last_line(run.stderr)))
    if run.rc == 0:
        return Outcome("clean", "")
    first = next((ln for ln in run.stderr.splitlines() if ln.strip()), "")
    if "Traceback" in run.stderr:
        first = _last_line(run.stderr)
    return Outcome("error", short(first or f"rc {run.rc}"))


def mc_file_outcome(entry: Json) -> Outcome:
    """One file entry of modelcrate's JSON report -> verdict at the default --fail-on high."""
    findings = entry.get("findings") or []
    blocking: list[str] = []
    if isinstance(findings, list):
        for f in findings:
            if isinstance(f, dict) and str(f.get("severity", "")).upper() in BLOCKING:
                sym = f.get("symbol")
                blocking.append(
                    f"{f.get('severity')} {f.get('rule_id')}" + (f" {sym}" if sym else "")
                )
    if blocking:
        counts: dict[str, int] = {}
        for b in blocking:
            counts[b] = counts.get(b, 0) + 1
        text = " | ".join(b if n == 1 else f"{b} (x{n})" for b, n in counts.items())
        return Outcome("flagged", short(text))
    fmt = str(entry.get("format") or "unknown")
    if fmt in ("unknown", "") and not findings:
        return Outcome("unsupported", "")
    return Outcome("clean", short(f"format {fmt}"))


def classify_modelcrate(run: Run) -> Outcome:
    """modelcrate scan: 0 nothing at/above --fail-on (high), 1 findings, 2 input error,
    3 internal error. The verdict follows the exit code; the detail comes from the JSON."""
    if (fail := _common_failure(run)) is not None:
        return fail
    try:
        report = json.loads(run.stdout)
    except ValueError:
        report = None
    if not isinstance(report, dict) and run.rc in (0, 1):
        # `--format json` always prints a report; without one, exit 1 is a crash.
        return _crash(run) if _crashed(run) else Outcome("error", "no JSON report on stdout")
    files = report.get("files", []) if isinstance(report, dict) else []
    per_file = [mc_file_outcome(f) for f in files if isinstance(f, dict)]
    detail = " | ".join(o.detail for o in per_file if o.detail)
    if run.rc == 1:
        return Outcome("flagged", short(detail or _last_line(run.stderr)))
    if run.rc == 0:
        if per_file and all(o.verdict == "unsupported" for o in per_file):
            return Outcome("unsupported", "")
        return Outcome("clean", short(detail))
    return Outcome("error", short(f"rc {run.rc} {_last_line(run.stderr or run.stdout)}"))


# --------------------------------------------------------------------------- the tools


@dataclass(frozen=True)
class Tool:
    name: str
    exe: Path
    file_argv: Callable[[Path], list[str]]
    dir_argv: Callable[[Path], list[str]] | None  # None: no directory argument
    classify: Callable[[Run], Outcome]
    venv: str | None  # None: modelcrate's own .venv
    startup_argv: tuple[str, ...]  # a do-nothing command: the start-up and import floor
    env: dict[str, str] | None = None  # added to the tool environment (tool_env)


def all_tools(
    modelcrate: Path = MODELCRATE, modelcrate_env: dict[str, str] | None = None
) -> list[Tool]:
    """The tools; ``modelcrate`` (an executable) and ``modelcrate_env`` choose which modelcrate
    runs (default: this checkout's ``.venv``, as installed)."""
    mc = modelcrate
    ms = VENVS / "modelscan" / "bin" / "modelscan"
    ps = VENVS / "picklescan" / "bin" / "picklescan"
    fk = VENVS / "fickling" / "bin" / "fickling"
    return [
        Tool(
            "modelcrate",
            mc,
            lambda p: [str(mc), "scan", str(p), "--format", "json"],
            lambda d: [str(mc), "scan", str(d), "--format", "json"],
            classify_modelcrate,
            None,
            (str(mc), "--version"),
            modelcrate_env,
        ),
        Tool(
            "modelscan",
            ms,
            lambda p: [str(ms), "-p", str(p)],
            lambda d: [str(ms), "-p", str(d)],
            classify_modelscan,
            "modelscan",
            (str(ms), "--version"),
        ),
        Tool(
            "picklescan",
            ps,
            lambda p: [str(ps), "-p", str(p)],
            lambda d: [str(ps), "-p", str(d)],
            classify_picklescan,
            "picklescan",
            (str(ps), "--help"),
        ),
        Tool(
            "picklescan --strict",
            ps,
            lambda p: [str(ps), "-p", str(p), "--strict"],
            lambda d: [str(ps), "-p", str(d), "--strict"],
            classify_picklescan,
            "picklescan",
            (str(ps), "--help"),
        ),
        Tool(
            "fickling",
            fk,
            lambda p: [str(fk), "--check-safety", str(p)],
            None,  # fickling takes one PICKLE_FILE
            classify_fickling,
            "fickling",
            (str(fk), "--version"),
        ),
    ]


def tool_available(tool: Tool) -> str | None:
    """None when the tool can run, else why not."""
    if not tool.exe.is_file():
        return f"{tool.exe} not found"
    if tool.name == "modelcrate":
        probe = run_process([str(tool.exe), "scan", "--help"], 60, tool.env)
        shutil.rmtree(probe.scratch, ignore_errors=True)
        if probe.rc != 0:
            return short(f"`modelcrate scan --help` failed: {_last_line(probe.stderr)}")
    return None


def machine_info() -> Json:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
