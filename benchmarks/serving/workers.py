#!/usr/bin/env python3
"""Memory of N serving workers with a model of large weights: pre-fork vs each worker loading it.

Runs in modelcrate's ``.venv``::

    .venv/bin/python benchmarks/serving/workers.py [--workers 1,2,4] [--hidden 4096 --layers 3]

The model is an ONNX MLP built with ``onnx.helper`` (input ``[rows, 256]``, ``--layers``
``hidden x hidden`` MatMuls: ~200 MB of float32 weights by default), saved twice under
``benchmarks/.work/workers/``: inline, and with its weights as external data. Each mode below
serves it with N workers (a raw ASGI app that runs the session on 8 rows and answers its pid),
receives requests on fresh connections until every worker has answered a few, then has its
process tree measured from ``/proc/PID/smaps_rollup``: RSS, PSS (shared pages divided among the
processes that map them: the sum over the tree is its real footprint) and USS (private pages).
Results: ``workers.json`` and ``workers.md`` next to this file.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = REPO / "benchmarks" / ".work" / "workers"
D_IN = 256
ROWS = 8
HOST = "127.0.0.1"
REQUESTS_PER_WORKER = 5
MODES = {
    "prefork": "pre-fork (`serve_prefork`): the parent loads the model from bytes, as "
    "`OnnxPredictor` does, then forks the workers",
    "prefork-path": "pre-fork, the parent loads the model from its file path",
    "fork-load": "forked workers, each loads the model from bytes after the fork (its own copy)",
    "uvicorn-spawn": "`uvicorn.run(..., workers=N)`, today's `modelcrate serve --workers N`: "
    "fresh interpreters, each loads the model from bytes",
    "fork-load-extdata": "forked workers, each loads the model from a path with external data "
    "(ORT defaults)",
    "fork-load-extdata-noprepack": "same, with `session.disable_prepacking=1`",
}
Json = dict[str, Any]


def log(msg: str) -> None:
    print(f"[workers] {msg}", flush=True)


# --- the model -------------------------------------------------------------------------------


def build_models(hidden: int, layers: int) -> Json:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inline, external = WORK / "mlp.onnx", WORK / "mlp-ext.onnx"
    stamp = WORK / "mlp.json"
    spec = {"hidden": hidden, "layers": layers, "d_in": D_IN}
    if inline.exists() and external.exists() and stamp.exists():
        info: Json = json.loads(stamp.read_text())
        if info["spec"] == spec:
            return info
    WORK.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    dims = [D_IN, *[hidden] * (layers + 1), 8]
    nodes, weights, prev = [], [], "x"
    for i in range(len(dims) - 1):
        w = rng.standard_normal((dims[i], dims[i + 1]), dtype=np.float32) / np.sqrt(dims[i])
        weights.append(numpy_helper.from_array(w.astype(np.float32), f"W{i}"))
        out = "y" if i == len(dims) - 2 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", D_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    weight_bytes = sum(int(np.prod(w.dims)) * 4 for w in weights)
    onnx.save_model(model, inline)
    onnx.save_model(
        model,
        external,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="mlp-ext.data",
        size_threshold=1024,
    )
    info = {"spec": spec, "weight_bytes": weight_bytes, "dims": dims}
    stamp.write_text(json.dumps(info))
    return info


# --- the server (a subprocess: ``workers.py serve MODE N PORT``) ------------------------------


def session_from(source: str | bytes, *, prepack: bool = True) -> Any:
    import onnxruntime as ort

    from modelcrate.runtime.onnx_runtime import configure_threads

    options = ort.SessionOptions()
    configure_threads(options, 1)  # the same options in every mode
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def make_app(session: Any) -> Any:
    import numpy as np

    x = np.full((ROWS, D_IN), 0.5, dtype=np.float32)

    async def app(scope: Json, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        started = time.perf_counter()
        session.run(None, {"x": x})
        ms = (time.perf_counter() - started) * 1000
        body = json.dumps({"pid": os.getpid(), "run_ms": ms}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


def spawn_app() -> Any:
    """uvicorn's factory in ``uvicorn-spawn`` mode (each spawned worker imports this module)."""
    return make_app(session_from(Path(os.environ["WORKERS_MODEL"]).read_bytes()))


def serve(mode: str, workers: int, port: int) -> int:
    import numpy  # noqa: F401  (imported before the fork in every mode)
    import onnxruntime  # noqa: F401

    from modelcrate.serve.prefork import serve_prefork

    inline, external = WORK / "mlp.onnx", WORK / "mlp-ext.onnx"
    kwargs: Json = {"log_level": "warning", "lifespan": "off", "access_log": False}
    if mode == "uvicorn-spawn":
        import uvicorn

        os.environ["WORKERS_MODEL"] = str(inline)
        uvicorn.run(
            "workers:spawn_app", factory=True, workers=workers, host=HOST, port=port,
            app_dir=str(HERE), **kwargs,
        )  # fmt: skip
        return 0
    if mode in ("prefork", "prefork-path"):  # loaded here, in the parent, before the fork
        app = make_app(session_from(inline.read_bytes() if mode == "prefork" else str(inline)))

        def factory() -> Any:
            return app

    else:  # loaded in each worker, after the fork

        def factory() -> Any:
            if mode == "fork-load":
                return make_app(session_from(inline.read_bytes()))
            prepack = mode != "fork-load-extdata-noprepack"
            return make_app(session_from(str(external), prepack=prepack))

    return serve_prefork(
        factory, workers=workers, host=HOST, port=port, uvicorn_kwargs=kwargs,
        graceful_timeout_s=5.0,
    )  # fmt: skip


# --- the measurement -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def request(port: int) -> Json | None:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("POST", "/", body=b"{}")
        response = conn.getresponse()
        body = response.read()
        return json.loads(body) if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, pp in parents.items() if pp == pid]
        found += children
        frontier += children
    return sorted(found)


def memory(pid: int) -> Json:
    """RSS, PSS, USS and shared MiB of one process, from /proc/PID/smaps_rollup."""
    kb: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        kb[key] = int(rest.split()[0])
    mib = 1024.0
    return {
        "rss": kb["Rss"] / mib,
        "pss": kb["Pss"] / mib,
        "uss": (kb["Private_Clean"] + kb["Private_Dirty"]) / mib,
        "shared": (kb["Shared_Clean"] + kb["Shared_Dirty"]) / mib,
    }


def measure(mode: str, workers: int) -> Json:
    port = free_port()
    logfile = WORK / f"{mode}-{workers}.log"
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "serve", mode, str(workers), str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=HERE,
        )
    try:
        started = time.monotonic()
        answers: dict[int, list[float]] = {}
        tries = 0
        while len(answers) < workers or min(len(v) for v in answers.values()) < (
            REQUESTS_PER_WORKER
        ):
            if proc.poll() is not None:
                raise RuntimeError(f"{mode} exited early:\n{logfile.read_text()}")
            if time.monotonic() - started > 120 or tries > 2000:
                raise RuntimeError(
                    f"{mode}: only {sorted(answers)} answered:\n{logfile.read_text()}"
                )
            answer = request(port)
            if answer is None:
                time.sleep(0.05)
                continue
            tries += 1
            answers.setdefault(answer["pid"], []).append(answer["run_ms"])
        ready_s = time.monotonic() - started
        time.sleep(0.5)
        tree = descendants(proc.pid)
        per_pid = {pid: memory(pid) for pid in [proc.pid, *tree]}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    worker_pids = [p for p in [proc.pid, *tree] if p in answers]
    others = [p for p in tree if p not in answers]

    def mean(key: str, pids: list[int]) -> float:
        return statistics.fmean(per_pid[p][key] for p in pids) if pids else 0.0

    return {
        "mode": mode,
        "workers": workers,
        "ready_s": round(ready_s, 2),
        "requests": sum(len(v) for v in answers.values()),
        "run_ms_median": statistics.median(ms for v in answers.values() for ms in v[1:] or v),
        "tree_pss": sum(m["pss"] for m in per_pid.values()),
        "tree_rss": sum(m["rss"] for m in per_pid.values()),
        "tree_uss": sum(m["uss"] for m in per_pid.values()),
        "worker_rss": mean("rss", worker_pids),
        "worker_pss": mean("pss", worker_pids),
        "worker_uss": mean("uss", worker_pids),
        "parent": per_pid[proc.pid],
        "other_processes": len(others),
        "processes": {str(p): m for p, m in per_pid.items()},
        "exit_code": proc.returncode,
    }


def write(results: list[Json], model: Json, args: argparse.Namespace) -> None:
    import onnxruntime

    meta = {
        "command": "python benchmarks/serving/workers.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs), "
        f"Linux {platform.release()}, Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}",
        "model": model,
        "rows_per_request": ROWS,
    }
    (HERE / "workers.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    weights = model["weight_bytes"] / 2**20
    dims = " -> ".join(map(str, model["dims"]))
    lines = [
        "# Memory per worker: pre-fork vs each worker loading the model",
        "",
        f"`{meta['command'].strip()}` on {meta['machine']}; {meta['when']}.",
        "",
        f"Model: an ONNX MLP (MatMuls {dims}), **{weights:.0f} MiB** of float32 weights; each "
        f"request runs it on {ROWS} rows. Every worker answered ≥ {REQUESTS_PER_WORKER} "
        "requests before the measurement. MiB from `/proc/PID/smaps_rollup`: **PSS** divides "
        "each shared page among the processes that map it, so the tree's PSS is its real "
        "footprint; RSS counts a shared page once per process; USS is a process's private pages.",
        "",
        "Modes:",
        "",
        *[f"- **{name}**: {text}" for name, text in MODES.items() if name in args.modes],
        "",
        "| mode | workers | tree PSS | tree RSS (sum) | worker RSS | worker PSS | worker USS "
        "| parent RSS | parent USS | run (median) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p = r["parent"]
        lines.append(
            f"| {r['mode']} | {r['workers']} | **{r['tree_pss']:.0f}** | {r['tree_rss']:.0f} "
            f"| {r['worker_rss']:.0f} | {r['worker_pss']:.0f} | {r['worker_uss']:.0f} "
            f"| {p['rss']:.0f} | {p['uss']:.0f} | {r['run_ms_median']:.2f} ms |"
        )
    lines += ["", conclusion(results, weights), "", *findings(results), ""]
    (HERE / "workers.md").write_text("\n".join(lines))


def conclusion(results: list[Json], weights: float) -> str:
    by = {(r["mode"], r["workers"]): r for r in results}
    n = max(r["workers"] for r in results)
    pre, own = by.get(("prefork", n)), by.get(("fork-load", n))
    if pre is None or own is None:
        return ""
    step_pre = by.get(("prefork", 1))
    step_own = by.get(("fork-load", 1))
    extra = ""
    if step_pre and step_own and n > 1:
        per_pre = (pre["tree_pss"] - step_pre["tree_pss"]) / (n - 1)
        per_own = (own["tree_pss"] - step_own["tree_pss"]) / (n - 1)
        extra = (
            f"; each worker past the first adds {per_pre:.0f} MiB pre-forked vs "
            f"{per_own:.0f} MiB loading its own"
        )
    return (
        f"**Conclusion:** with {n} workers and {weights:.0f} MiB of weights, pre-fork uses "
        f"{pre['tree_pss']:.0f} MiB in all (PSS) vs {own['tree_pss']:.0f} MiB when each worker "
        f"loads the model ({own['tree_pss'] / pre['tree_pss']:.1f}x){extra}."
    )


def findings(results: list[Json]) -> list[str]:
    """What the extra modes show, in numbers from this run."""
    by = {(r["mode"], r["workers"]): r for r in results}
    n = max(r["workers"] for r in results)
    lines = []
    pre, path = by.get(("prefork", 1)), by.get(("prefork-path", 1))
    if pre and path:
        lines.append(
            f"- Loaded from bytes, the model costs {pre['tree_pss'] - path['tree_pss']:.0f} MiB "
            "more than from its path: `onnxruntime.InferenceSession(bytes)` keeps the bytes "
            "(`session._model_bytes`) for the session's lifetime."
        )
    ext, mapped = by.get(("fork-load-extdata", n)), by.get(("fork-load-extdata-noprepack", n))
    if ext and mapped:
        lines.append(
            f"- External data: ONNX Runtime memory-maps the weights file, but prepacks the MatMul "
            f"weights into private memory (worker USS {ext['worker_uss']:.0f} MiB, {n} workers: "
            f"{ext['tree_pss']:.0f} MiB); with prepacking off the mapped pages are shared "
            f"between independent processes ({mapped['worker_uss']:.0f} MiB each, "
            f"{mapped['tree_pss']:.0f} MiB in all) but a run takes "
            f"{mapped['run_ms_median']:.0f} ms instead of {ext['run_ms_median']:.0f} ms."
        )
    lines.append(
        "- Run times are the median `session.run` of the measured requests (8 rows, one "
        "intra-op thread), sequential requests on this machine: indicative only."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts (default 1,2,4)")
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES), help=f"of {','.join(MODES)}")
    args = parser.parse_args()
    args.modes = args.modes.split(",")
    model = build_models(args.hidden, args.layers)
    log(f"model: {model['weight_bytes'] / 2**20:.0f} MiB of weights, in {WORK}")
    results = []
    for mode in args.modes:
        for n in (int(w) for w in args.workers.split(",")):
            r = measure(mode, n)
            log(
                f"{mode:28} N={n}: tree PSS {r['tree_pss']:6.0f} MiB, RSS {r['tree_rss']:6.0f} MiB"
                f"; worker USS {r['worker_uss']:5.0f} MiB; run {r['run_ms_median']:.2f} ms"
            )
            results.append(r)
    write(results, model, args)
    log(f"wrote {HERE / 'workers.md'} and workers.json")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        sys.path.insert(0, str(REPO / "src"))
        sys.exit(serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    main()
