#!/usr/bin/env python3
"""Serving benchmark: modelcrate serve vs MLServer, BentoML, a textbook FastAPI service and a
bare ASGI ceiling, all loaded by ``wrk`` with one JSON row per request.

Standard library only; runs with any Python 3.11. One command::

    python benchmarks/serving/run.py [--duration S] [--skip-install] [--only a,b]

Each peer lives in its own virtual environment under ``benchmarks/.work/serving-venvs/<peer>``
(installed once from ``requirements-peers.txt``). The two models are trained in modelcrate's
own ``.venv`` (``train.py``), modelcrate builds a crate of each, then every server is started in
turn on a free loopback port, checked for a correct prediction, warmed up, loaded with
``wrk -t2 -c16 --latency``, measured (RSS from /proc) and stopped. Results go to
``results.json`` and ``results.md`` next to this file. See README.md for the method.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Json = dict[str, Any]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = REPO / "benchmarks" / ".work"
VENVS = WORK / "serving-venvs"
RUNDIR = WORK / "serving"
PEERS_DIR = HERE / "peers"
MC_BIN = REPO / ".venv" / "bin"
REQUIREMENTS = HERE / "requirements-peers.txt"

SERVERS = ("ceiling", "modelcrate", "mlserver", "bentoml", "fastapi")
MODELS = ("rf", "lr")
MODEL_TITLES = {
    "rf": "RandomForest(n_estimators=100, max_depth=10), make_classification 5000x30",
    "lr": "LogisticRegression(max_iter=500), iris",
}
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
WARMUP_S = 2


def log(msg: str) -> None:
    print(f"[serving] {msg}", flush=True)


# --------------------------------------------------------------------------- install


def read_requirements(path: Path) -> dict[str, list[str]]:
    """``{venv name: [pip requirement, ...]}`` from ``<venv>: <requirement>`` lines."""
    venvs: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, req = line.partition(": ")
        if not sep:
            raise SystemExit(f"{path}: cannot parse line {raw!r} (want '<venv>: <requirement>')")
        venvs.setdefault(name.strip(), []).append(req.strip())
    return venvs


def install_peers(only: set[str], skip: bool) -> dict[str, str]:
    """Create each peer venv and pip-install its pinned lines once (a stamp file)."""
    status: dict[str, str] = {}
    for venv, lines in read_requirements(REQUIREMENTS).items():
        if venv not in only:
            continue
        target = VENVS / venv
        stamp = target / ".installed"
        want = "".join(f"{line}\n" for line in lines)
        if stamp.is_file() and stamp.read_text(encoding="utf-8") == want:
            status[venv] = "installed"
            continue
        if skip:
            status[venv] = "not installed (--skip-install)"
            continue
        log(f"installing {venv}: {' '.join(lines)}")
        shutil.rmtree(target, ignore_errors=True)
        steps = [
            [sys.executable, "-m", "venv", str(target)],
            [str(target / "bin" / "python"), "-m", "pip", "install", "-q", *lines],
        ]
        status[venv] = "installed"
        for argv in steps:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                status[venv] = f"install failed (rc {proc.returncode}): {' | '.join(tail)}"
                break
        if status[venv] == "installed":
            stamp.write_text(want, encoding="utf-8")
        log(f"  {venv}: {status[venv]}")
    return status


def package_versions(python: Path, names: list[str]) -> dict[str, str]:
    code = (
        "import json, sys, importlib.metadata as m\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = None\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [str(python), "-c", code, *names], capture_output=True, text=True, check=False
    )
    try:
        return dict(json.loads(proc.stdout))
    except ValueError:
        return {}


# --------------------------------------------------------------------------- models, crates


def train_models() -> Json:
    out = RUNDIR / "models"
    log("training the two models in modelcrate's .venv")
    subprocess.run([str(MC_BIN / "python"), str(HERE / "train.py"), str(out)], check=True)
    return dict(json.loads((out / "models.json").read_text(encoding="utf-8")))


def build_crates(models: Json, store: Path) -> None:
    for name, info in models.items():
        log(f"modelcrate build {Path(info['file']).name} --name {name}")
        proc = subprocess.run(
            [
                str(MC_BIN / "modelcrate"),
                "build",
                info["file"],
                "--name",
                name,
                "--store",
                str(store),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "MODELCRATE_HOME": str(store)},
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"modelcrate build {name} failed:\n{proc.stdout}\n{proc.stderr}")


# --------------------------------------------------------------------------- one server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: object = None, timeout: float = 5.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


@dataclass
class Server:
    """How to start one server for one model, probe it, and ask it for one prediction."""

    name: str
    argv: list[str]
    ready_path: str
    predict_path: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    # Called once the server is ready: the request body (may ask the server, e.g. its schema).
    body: Callable[[str], object] = lambda _base: {}
    # The label in a response, for the correctness check (None: nothing to check).
    label: Callable[[Any], str] | None = None


def modelcrate_body(row: list[float]) -> Callable[[str], object]:
    def make(base: str) -> object:
        _, raw = http("GET", f"{base}/openapi.json")
        doc = json.loads(raw)
        schema = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
        ref = schema["schema"]["anyOf"][0]["$ref"].rsplit("/", 1)[-1]
        fields = list(doc["components"]["schemas"][ref]["properties"])
        return dict(zip(fields, row, strict=True))

    return make


def servers_for(model: str, info: Json, store: Path, venvs: Path) -> list[Server]:
    row: list[float] = info["row"]
    path = info["file"]
    uvicorn_flags = ["--host", "127.0.0.1", "--workers", "1", "--no-access-log"]
    uvicorn_flags += ["--log-level", "warning", "--app-dir", str(PEERS_DIR)]
    out = {
        "ceiling": Server(
            name="ceiling",
            argv=[str(venvs / "asgi" / "bin" / "uvicorn"), "ceiling:app", *uvicorn_flags],
            ready_path="/",
            predict_path="/",
        ),
        "modelcrate": Server(
            name="modelcrate",
            argv=[
                str(MC_BIN / "modelcrate"),
                "serve",
                model,
                "--store",
                str(store),
                "--workers",
                "1",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env={"MODELCRATE_HOME": str(store)},
            ready_path="/readyz",
            predict_path="/predict",
            body=modelcrate_body(row),
            label=lambda r: str(r["label"]),
        ),
        "mlserver": Server(
            name="mlserver",
            argv=[str(venvs / "mlserver" / "bin" / "mlserver"), "start", "{mlserver_dir}"],
            ready_path=f"/v2/models/{model}/ready",
            predict_path=f"/v2/models/{model}/infer",
            body=lambda _b: {
                "inputs": [
                    {"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}
                ]
            },
            label=lambda r: str(int(r["outputs"][0]["data"][0])),
        ),
        "bentoml": Server(
            name="bentoml",
            argv=[
                str(venvs / "bentoml" / "bin" / "bentoml"),
                "serve",
                "bentoml_service:Classifier",
                "--host",
                "127.0.0.1",
            ],
            env={"BENCH_MODEL": path, "BENTOML_DO_NOT_TRACK": "True"},
            cwd=PEERS_DIR,
            ready_path="/readyz",
            predict_path="/predict",
            body=lambda _b: {"features": [row]},
            label=lambda r: str(r[0]["label"]),
        ),
        "fastapi": Server(
            name="fastapi",
            argv=[
                str(venvs / "fastapi" / "bin" / "uvicorn"),
                "textbook_fastapi:app",
                *uvicorn_flags,
            ],
            env={"BENCH_MODEL": path},
            ready_path="/health",
            predict_path="/predict",
            body=lambda _b: {"features": row},
            label=lambda r: str(r["label"]),
        ),
    }
    return [out[s] for s in SERVERS]


def write_mlserver_dir(model: str, path: str, ports: tuple[int, int, int]) -> Path:
    """MLServer's repository folder: settings.json (ports) + model-settings.json (the model)."""
    folder = RUNDIR / f"mlserver-{model}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    http_port, grpc_port, metrics_port = ports
    settings = {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
    }
    (folder / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    model_settings = {
        "name": model,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": path},
    }
    (folder / "model-settings.json").write_text(json.dumps(model_settings), encoding="utf-8")
    return folder


def process_tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        pid = frontier.pop()
        kids = [c for c, p in parents.items() if p == pid]
        tree += kids
        frontier += kids
    return tree


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, then SIGKILL after STOP_TIMEOUT_S."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------- wrk


def lua_script(body: object, path: Path) -> Path:
    text = json.dumps(body, separators=(",", ":"))
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{text}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n',
        encoding="utf-8",
    )
    return path


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(out: str) -> Json:
    res: Json = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else None
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[f"p{pct}_ms"] = to_ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(g) for g in m.groups()) if m else 0
    res["errors"] = res["non_2xx"] + res["socket_errors"]
    return res


def wrk(url: str, script: Path, duration: int, cpus: str | None) -> tuple[Json, str]:
    argv = ["wrk", "-t2", "-c16", f"-d{duration}s", "--latency", "-s", str(script), url]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    return parse_wrk(proc.stdout), proc.stdout


# --------------------------------------------------------------------------- one run


def measure(
    server: Server,
    model: str,
    info: Json,
    *,
    duration: int,
    server_cpus: str | None,
    wrk_cpus: str | None,
) -> Json:
    port = free_port()
    argv = list(server.argv)
    if server.name == "mlserver":
        folder = write_mlserver_dir(model, info["file"], (port, free_port(), free_port()))
        argv = [a.replace("{mlserver_dir}", str(folder)) for a in argv]
    elif server.name in ("modelcrate", "bentoml", "ceiling", "fastapi"):
        argv += ["--port", str(port)]
    if server_cpus is not None:
        argv = ["taskset", "-c", server_cpus, *argv]
    base = f"http://127.0.0.1:{port}"
    logfile = RUNDIR / f"{model}-{server.name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **server.env}
    log(f"{model} / {server.name}: starting on port {port}")
    with logfile.open("wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=server.cwd,
            env=env,
            start_new_session=True,
        )
    try:
        cold: float | None = None
        while time.monotonic() - t0 < READY_TIMEOUT_S:
            if proc.poll() is not None:
                return {
                    "status": f"not measured (exited rc {proc.returncode} before ready; see log)"
                }
            try:
                code, _ = http("GET", base + server.ready_path, timeout=1.0)
                if code == 200:
                    cold = time.monotonic() - t0
                    break
            except OSError:
                pass
            time.sleep(0.01)
        if cold is None:
            return {"status": f"not measured (not ready within {READY_TIMEOUT_S:.0f} s)"}
        body = server.body(base)
        code, raw = http("POST", base + server.predict_path, body, timeout=30.0)
        sample = raw.decode(errors="replace")[:300]
        check = "not checked (constant answer)"
        if server.label is not None:
            if code != 200:
                return {"status": f"not measured (sample request answered {code}: {sample})"}
            got = server.label(json.loads(raw))
            if got != info["label"]:
                return {
                    "status": f"not measured (wrong prediction {got!r}, want {info['label']!r})"
                }
            check = f"label {got} as expected"
        script = lua_script(body, RUNDIR / f"{model}-{server.name}.lua")
        url = base + server.predict_path
        wrk(url, script, WARMUP_S, wrk_cpus)
        res, raw_out = wrk(url, script, duration, wrk_cpus)
        tree = process_tree(proc.pid)
        # Leave out the taskset wrapper: it execs, so the root pid is the server itself.
        rss = sum(rss_kib(p) for p in tree)
        res.update(
            status="measured",
            cold_start_s=round(cold, 3),
            rss_mib=round(rss / 1024, 1),
            processes=len(tree),
            sample_check=check,
            sample_response=sample,
            wrk_output=raw_out,
        )
        log(
            f"  {res['rps']:.0f} req/s, p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms, "
            f"errors {res['errors']}, cold start {cold:.2f} s, RSS {res['rss_mib']} MiB"
        )
        return res
    finally:
        stop(proc)


# --------------------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def add_ratios(results: Json) -> None:
    ceiling = results["ceiling"].get("rps")
    for model in MODELS:
        runs = results["models"].get(model, {})
        ml = runs.get("mlserver", {}).get("rps")
        for r in runs.values():
            r["x_ceiling"] = ratio(r.get("rps"), ceiling)
            r["x_mlserver"] = ratio(r.get("rps"), ml)


def fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


def targets(results: Json) -> list[str]:
    rf = results["models"].get("rf", {}).get("modelcrate", {})
    lr = results["models"].get("lr", {}).get("modelcrate", {})

    def line(name: str, value: float | None, ok: bool | None, want: str) -> str:
        verdict = "not measured" if value is None else ("met" if ok else "**not met**")
        return f"- {name}: {want}: {verdict}"

    out = []
    v = rf.get("x_ceiling")
    out.append(
        line("RF", v, v is not None and v >= 0.5, f"≥ 0.50x ceiling, got {fmt(v, '.2f', 'x')}")
    )
    v = rf.get("x_mlserver")
    out.append(
        line("RF", v, v is not None and v >= 40, f"≥ 40x MLServer, got {fmt(v, '.1f', 'x')}")
    )
    v = rf.get("p99_ms")
    out.append(line("RF", v, v is not None and v <= 10, f"p99 ≤ 10 ms, got {fmt(v, '.2f', ' ms')}"))
    v = lr.get("x_ceiling")
    out.append(
        line("LR", v, v is not None and v >= 0.5, f"≥ 0.50x ceiling, got {fmt(v, '.2f', 'x')}")
    )
    v = rf.get("cold_start_s")
    out.append(
        line("RF", v, v is not None and v <= 0.5, f"cold start ≤ 0.5 s, got {fmt(v, '.2f', ' s')}")
    )
    return out


def markdown(results: Json) -> str:
    m = results["machine"]
    lines = [
        "# Serving benchmark results",
        "",
        f"`{results['command']}` on {m['cpu']} ({m['cpus']} CPUs), {m['os']}, "
        f"Python {m['python']}; {results['started']}. "
        f"Load: `wrk -t2 -c16 -d{results['duration_s']}s --latency`, one JSON row per request, "
        f"after a {WARMUP_S} s warm-up. Server CPUs: {results['server_cpus']}, "
        f"wrk CPUs: {results['wrk_cpus']}. One worker per server.",
        "",
        "Ratios are requests/s divided by the bare-ASGI ceiling's and by MLServer's, in this run. "
        "RSS is the sum over the server's process tree after the load; cold start is process "
        "start → first 200 from its readiness endpoint.",
        "",
    ]
    head = "| server | req/s | x ceiling | x MLServer | p50 | p99 | errors | cold start | RSS |"
    for model in MODELS:
        runs = results["models"].get(model)
        if runs is None:
            continue
        lines += [f"## {model}: {MODEL_TITLES[model]}", "", head, "|" + "---|" * 9]
        for name, r in runs.items():
            label = f"{name} {results['versions'].get(name, '')}".strip()
            if r.get("status") != "measured":
                lines.append(f"| {label} | {r.get('status')} |  |  |  |  |  |  |  |")
                continue
            lines.append(
                f"| {label} | {r['rps']:,.0f} | {fmt(r['x_ceiling'], '.2f', 'x')} | "
                f"{fmt(r['x_mlserver'], '.1f', 'x')} | {fmt(r['p50_ms'], '.2f', ' ms')} | "
                f"{fmt(r['p99_ms'], '.2f', ' ms')} | {r['errors']} | "
                f"{fmt(r['cold_start_s'], '.2f', ' s')} | {fmt(r['rss_mib'], '.0f', ' MiB')} |"
            )
        lines.append("")
    lines += ["## Targets (issue 4)", "", *targets(results), ""]
    return "\n".join(lines)


def machine_info() -> Json:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0)),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def versions(venvs: Path, installed: dict[str, str]) -> dict[str, str]:
    def one(python: Path, pkg: str) -> str:
        return package_versions(python, [pkg]).get(pkg) or "?"

    out = {"modelcrate": one(MC_BIN / "python", "modelcrate")}
    for server, (venv, pkg) in {
        "mlserver": ("mlserver", "mlserver"),
        "bentoml": ("bentoml", "bentoml"),
        "fastapi": ("fastapi", "fastapi"),
        "ceiling": ("asgi", "uvicorn"),
    }.items():
        if installed.get(venv) == "installed":
            v = one(venvs / venv / "bin" / "python", pkg)
            out[server] = v if pkg == server else f"(uvicorn {v})"
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="wrk seconds per server (default 10)")
    ap.add_argument("--skip-install", action="store_true", help="do not create peer venvs")
    ap.add_argument("--only", default="", help=f"comma-separated servers among {','.join(SERVERS)}")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and wrk to CPUs")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for results.json/results.md")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else set(SERVERS)
    if unknown := only - set(SERVERS):
        raise SystemExit(f"unknown servers: {', '.join(sorted(unknown))}")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    RUNDIR.mkdir(parents=True, exist_ok=True)
    venv_of = {
        "ceiling": "asgi",
        "mlserver": "mlserver",
        "bentoml": "bentoml",
        "fastapi": "fastapi",
    }
    installed = install_peers({venv_of[s] for s in only if s in venv_of}, args.skip_install)
    models = train_models()
    store = RUNDIR / "store"
    if "modelcrate" in only:
        build_crates(models, store)

    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = wrk_cpus = None
    if not args.no_pin and len(cpus) >= 2:
        # wrk gets the last CPU, the server all the others: they never compete for a core.
        server_cpus = ",".join(str(c) for c in cpus[:-1])
        wrk_cpus = str(cpus[-1])

    results: Json = {
        "command": "python benchmarks/serving/run.py " + " ".join(sys.argv[1:]),
        "started": started,
        "duration_s": args.duration,
        "warmup_s": WARMUP_S,
        "load": f"wrk -t2 -c16 -d{args.duration}s --latency",
        "server_cpus": server_cpus or "all",
        "wrk_cpus": wrk_cpus or "all",
        "machine": machine_info(),
        "installed": installed,
        "versions": versions(VENVS, installed),
        "ceiling": {},
        "models": {},
    }
    t_start = time.monotonic()
    for model in MODELS:
        runs: Json = {}
        for server in servers_for(model, models[model], store, VENVS):
            if server.name not in only:
                continue
            if server.name == "ceiling" and results["ceiling"]:
                runs["ceiling"] = dict(results["ceiling"])  # model-independent: measured once
                continue
            venv = venv_of.get(server.name)
            if venv is not None and installed.get(venv) != "installed":
                runs[server.name] = {"status": f"not measured ({venv} venv {installed.get(venv)})"}
                continue
            try:
                runs[server.name] = measure(
                    server,
                    model,
                    models[model],
                    duration=args.duration,
                    server_cpus=server_cpus,
                    wrk_cpus=wrk_cpus,
                )
            except Exception as exc:  # one server's failure must not stop the run
                runs[server.name] = {"status": f"not measured ({type(exc).__name__}: {exc})"}
            if server.name == "ceiling":
                results["ceiling"] = runs["ceiling"]
        results["models"][model] = runs
    results["bench_wall_s"] = round(time.monotonic() - t_start, 1)
    add_ratios(results)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    md = markdown(results)
    (args.out / "results.md").write_text(md, encoding="utf-8")
    print(md)


if __name__ == "__main__":
    main()
