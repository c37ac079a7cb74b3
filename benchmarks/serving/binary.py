#!/usr/bin/env python3
"""V2 binary tensors, 1024 rows per request: modelcrate serve vs in-process ONNX Runtime.

    python benchmarks/serving/binary.py [--duration 10] [--out DIR] [--concurrency 1,2,4]

Runs in modelcrate's ``.venv`` (re-executes itself there). Model and crate: run.py's
RandomForest ``rf`` (trained and built if missing); rows: its training data (train.py's
``make_classification(5000, 30, random_state=0)``), 1024-row float32 batches used in turn.

- In process: the ``onnxruntime.InferenceSession`` that the server's OnnxPredictor makes of the
  crate's ``model/model.onnx`` (same options, threads), ``run`` back to back in a subprocess
  pinned to the server's CPUs, before and after each served run (compared with their mean).
- Served: ``modelcrate serve rf`` pinned like run.py pins servers (all CPUs but the last); one
  client process on the last CPU keeps N keep-alive connections busy (asyncio, raw HTTP/1.1)
  with prebuilt V2 binary requests (one FP32 ``[1024, 30]`` tensor, ``binary_data_output``),
  and measures its own CPU share. One ``tritonclient.http`` binary request is checked first.
- Both sides also give rows per CPU-second, which moves less than rows/s on a shared machine.

Writes ``binary.json`` and ``binary.md`` next to this file (or in ``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as serving  # noqa: E402  (run.py: paths, training, crate building, helpers)

Json = dict[str, Any]
ROWS = 1024
TARGET = 0.70
WARMUP_S = 2.0
MODEL = "rf"
PYTHON = serving.MC_BIN / "python"
TICK = os.sysconf("SC_CLK_TCK")


def batches(path: Path) -> list[Any]:
    import numpy as np

    x = np.load(path)
    return [x[i : i + ROWS] for i in range(0, len(x) - ROWS + 1, ROWS)]


def ort_session(onnx: Path) -> Any:
    """The InferenceSession that the server's own OnnxPredictor makes of the crate's graph: its
    session options, providers and thread settings (read from src, which keeps changing)."""
    from modelcrate.crate.signature import Signature
    from modelcrate.runtime.onnx_runtime import OnnxPredictor

    doc = json.loads((onnx.parents[1] / "signature.json").read_text(encoding="utf-8"))
    predictor = OnnxPredictor(onnx.read_bytes(), Signature.from_dict(doc), path=str(onnx))
    if (session := getattr(predictor, "_session", None)) is None:
        raise SystemExit("OnnxPredictor has no _session any more: update binary.ort_session")
    return session


def cpu_s(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / TICK


def thread_cpus(pid: int) -> dict[str, int]:
    """How many threads of ``pid`` may run on each CPU list (ONNX Runtime pins its own)."""
    status = [(t / "status").read_text() for t in Path(f"/proc/{pid}/task").iterdir()]
    return dict(Counter(s.split("Cpus_allowed_list:")[1].split()[0] for s in status))


def child(argv: list[str], cpus: str | None) -> Json:
    """Run this script in a mode (--baseline/--client), pinned; its JSON answer."""
    cmd = [str(PYTHON), __file__, *argv]
    proc = subprocess.run(
        ["taskset", "-c", cpus, *cmd] if cpus else cmd, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:1])} failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout))


# --------------------------------------------------------------------------- the two sides


def baseline_mode(onnx: str, rows: str, duration: str) -> Json:
    """Rows/s of back-to-back ``session.run`` on the batches."""
    session = ort_session(Path(onnx))
    feed, work = session.get_inputs()[0].name, batches(Path(rows))
    end = time.perf_counter() + WARMUP_S
    while time.perf_counter() < end:
        session.run(None, {feed: work[0]})
    n, cpu0, t0 = 0, time.process_time(), time.perf_counter()
    while (wall := time.perf_counter() - t0) < float(duration):
        session.run(None, {feed: work[n % len(work)]})
        n += 1
    cpu = time.process_time() - cpu0
    return {
        "rows_per_s": n * ROWS / wall,
        "rows_per_cpu_s": n * ROWS / cpu,
        "ms_per_batch": wall / n * 1e3,
        "batches": n,
        "providers": session.get_providers(),
        "intra_op_threads": session.get_session_options().intra_op_num_threads,
        "thread_cpus": thread_cpus(os.getpid()),
    }


def request_bytes(port: int, x: Any, input_name: str) -> bytes:
    """One V2 binary request: HTTP head, JSON header, the tensor's little-endian bytes."""
    data = x.astype("<f4", copy=False).tobytes()
    tensor = {
        "name": input_name,
        "shape": list(x.shape),
        "datatype": "FP32",
        "parameters": {"binary_data_size": len(data)},
    }
    doc = {"inputs": [tensor], "parameters": {"binary_data_output": True}}
    header = json.dumps(doc, separators=(",", ":")).encode()
    head = (
        f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: "
        f"{len(header)}\r\nContent-Length: {len(header) + len(data)}\r\n\r\n"
    )
    return head.encode() + header + data


async def connection(port: int, bodies: list[bytes], stop_at: float, lat: list[float]) -> int:
    """Requests on one keep-alive connection until ``stop_at``; latencies into ``lat``; errors."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors, i = 0, 0
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(bodies[i % len(bodies)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            errors += head[9:12] != b"200"
            i += 1
    finally:
        writer.close()
    return errors


async def load(
    port: int, bodies: list[bytes], clients: int, duration: float, pids: list[int]
) -> Json:
    warm = time.perf_counter() + WARMUP_S
    await asyncio.gather(*(connection(port, bodies, warm, []) for _ in range(clients)))
    lat: list[float] = []
    cpu0, srv0, t0 = time.process_time(), cpu_s(pids), time.perf_counter()
    stop_at = t0 + duration
    errs = await asyncio.gather(*(connection(port, bodies, stop_at, lat) for _ in range(clients)))
    wall, srv, cpu = time.perf_counter() - t0, cpu_s(pids) - srv0, time.process_time() - cpu0
    lat.sort()
    pct = lambda q: round(lat[min(len(lat) - 1, int(len(lat) * q))] * 1e3, 2)  # noqa: E731
    return {
        "requests": len(lat),
        "errors": sum(errs),
        "rows_per_s": len(lat) * ROWS / wall,
        "rows_per_cpu_s": len(lat) * ROWS / srv if srv else None,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "client_cpu_share": round(cpu / wall, 3),
        "server_cpu_share": round(srv / wall, 3),
    }


def client_mode(*argv: str) -> Json:
    port, rows, clients, duration, name, pids = argv
    bodies = [request_bytes(int(port), b, name) for b in batches(Path(rows))]
    server = [int(p) for p in pids.split(",")]
    return asyncio.run(load(int(port), bodies, int(clients), float(duration), server))


def check_response(port: int, x: Any, onnx: Path, name: str) -> str:
    """One tritonclient binary request: labels and probabilities as in-process ORT's."""
    import numpy as np
    import tritonclient.http as th

    client = th.InferenceServerClient(f"127.0.0.1:{port}")
    tensor = th.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    outputs = [th.InferRequestedOutput(o, binary_data=True) for o in ("label", "probabilities")]
    result = client.infer(MODEL, [tensor], outputs=outputs)
    client.close()
    session = ort_session(onnx)
    labels, probs = session.run(["label", "probabilities"], {session.get_inputs()[0].name: x})
    got, want = [v.decode() for v in result.as_numpy("label")], [str(v) for v in labels]
    if got != want:
        bad = sum(a != b for a, b in zip(got, want, strict=True))
        raise SystemExit(f"served labels differ from in-process ORT on {bad} of {len(want)} rows")
    if not np.allclose(result.as_numpy("probabilities"), probs, atol=1e-6):
        raise SystemExit("served probabilities differ from in-process ORT")
    return f"{len(got)} labels and probabilities equal to in-process ORT (tritonclient request)"


def measure(onnx: Path, store: Path, rows: Path, args: argparse.Namespace, pins: list) -> Json:
    server_cpus, client_cpus = pins
    port = serving.free_port()
    argv = ["taskset", "-c", server_cpus] if server_cpus else []
    argv += [str(serving.MC_BIN / "modelcrate"), "serve", MODEL, "--store", str(store)]
    argv += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    base, logfile = f"http://127.0.0.1:{port}", serving.RUNDIR / "binary-server.log"
    baseline = [str(onnx), str(rows), str(args.duration)]
    out: Json = {"in_process": [child(["--baseline", *baseline], server_cpus)], "served": {}}
    t0 = time.monotonic()
    with logfile.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None or time.monotonic() - t0 > serving.READY_TIMEOUT_S:
                raise SystemExit(f"server not ready (rc {proc.poll()}); see {logfile}")
            try:
                if serving.http("GET", base + "/readyz", timeout=1.0)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.02)
        out["metadata"] = meta = json.loads(serving.http("GET", f"{base}/v2/models/{MODEL}")[1])
        name = meta["inputs"][0]["name"]
        out["check"] = check_response(port, batches(rows)[0], onnx, name)
        serving.log(f"served: {out['check']}")
        tree = serving.process_tree(proc.pid)
        out["server_thread_cpus"] = {p: thread_cpus(p) for p in tree}
        pids = ",".join(str(p) for p in tree)
        for clients in args.concurrency:
            argv = ["--client", str(port), str(rows), str(clients), str(args.duration), name, pids]
            r = out["served"][str(clients)] = child(argv, client_cpus)
            out["in_process"].append(child(["--baseline", *baseline], server_cpus))
            before, after = (b["rows_per_s"] for b in out["in_process"][-2:])
            r["in_process_rows_per_s"] = ref = (before + after) / 2
            r["in_process_spread"] = round(abs(before - after) / ref, 3)
            r["x_in_process"] = round(r["rows_per_s"] / ref, 3)
            cpu_ref = sum(b["rows_per_cpu_s"] for b in out["in_process"][-2:]) / 2
            r["x_in_process_per_cpu_s"] = round((r["rows_per_cpu_s"] or 0) / cpu_ref, 3)
            serving.log(
                f"{clients} client(s): {r['rows_per_s']:,.0f} rows/s = {r['x_in_process']:.2f}x "
                f"in process ({before:,.0f} / {after:,.0f}), p50 {r['p50_ms']} ms, p99 "
                f"{r['p99_ms']} ms, errors {r['errors']}, client CPU "
                f"{r['client_cpu_share']:.0%}, server CPU {r['server_cpu_share']:.0%}"
            )
        return out
    finally:
        serving.stop(proc)


# --------------------------------------------------------------------------- report


def markdown(res: Json) -> str:
    m, best = res["machine"], res["best"]
    lines = [
        "# V2 binary tensors: modelcrate serve vs in-process ONNX Runtime",
        "",
        f"`{res['command']}` on {m['cpu']} ({m['cpus']} CPUs), {m['os']}, Python {m['python']}, "
        f"onnxruntime {res['versions']['onnxruntime']}; {res['started']}; load average "
        f"{res['loadavg_before']} before, {res['loadavg_after']} after. Model: "
        f"{serving.MODEL_TITLES[MODEL]} (crate `{MODEL}`, ONNX). {ROWS} float32 training rows per "
        f"request or `run`; {res['duration_s']:g} s per measure after a {WARMUP_S:g} s warm-up. "
        f"Server and in-process CPUs: {res['server_cpus']}; client CPU: {res['client_cpus']}.",
        "",
        "In process: `InferenceSession.run` back to back with the server's session options, "
        "measured before and after each served run (the reference is their mean; ± half "
        "their difference: how much the machine drifted). "
        f"Served check: {res['check']}.",
        "",
        "| clients | served rows/s | in-process rows/s | x in-process | x per CPU-s | p50 | p99 "
        "| errors | client CPU | server CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c, r in res["served"].items():
        lines.append(
            f"| {c} | {r['rows_per_s']:,.0f} | {r['in_process_rows_per_s']:,.0f} "
            f"(±{r['in_process_spread'] / 2:.0%}) | "
            f"{r['x_in_process']:.2f}x | {r['x_in_process_per_cpu_s']:.2f}x | {r['p50_ms']} ms | "
            f"{r['p99_ms']} ms | {r['errors']} | {r['client_cpu_share']:.0%} | "
            f"{r['server_cpu_share']:.0%} |"
        )
    verdict = "met" if res["target"]["met"] else "**not met**"
    threads = {"in process": res["in_process"][0]["thread_cpus"]}
    threads |= {f"server pid {p}": t for p, t in res["server_thread_cpus"].items()}
    lines += [
        "",
        "x per CPU-s: served rows per server CPU-second over in-process rows per CPU-second. "
        "Client CPU: the load client's CPU time / wall time on its own CPU (near 100 % would "
        "mean the client limits the rate). Server CPU: the server's CPU time / wall time. "
        "Threads per allowed-CPU list (ONNX Runtime may pin its intra-op threads itself, even "
        f"outside the taskset mask): {json.dumps(threads)}.",
        "",
        "## Target",
        "",
        f"- V2 binary tensors, {ROWS} rows per request: ≥ {TARGET:.2f}x in-process ONNX "
        f"Runtime rows/s, got {best['x_in_process']:.2f}x (best: {best['clients']} "
        f"client(s)): {verdict}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    if Path(sys.prefix).resolve() != PYTHON.parent.parent.resolve() and PYTHON.exists():
        os.execv(str(PYTHON), [str(PYTHON), __file__, *sys.argv[1:]])
    modes = {"--baseline": baseline_mode, "--client": client_mode}
    if len(sys.argv) > 1 and sys.argv[1] in modes:
        print(json.dumps(modes[sys.argv[1]](*sys.argv[2:])))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=10, help="seconds per measure (default 10)")
    ap.add_argument("--concurrency", default="1,2,4", help="concurrent clients (default 1,2,4)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and client to CPUs")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for binary.json/binary.md")
    args = ap.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]

    import numpy as np
    from sklearn.datasets import make_classification

    from modelcrate.crate.store import Store

    started, load0 = time.strftime("%Y-%m-%d %H:%M:%S %Z"), os.getloadavg()
    serving.RUNDIR.mkdir(parents=True, exist_ok=True)
    store, models = serving.RUNDIR / "store", serving.RUNDIR / "models" / "models.json"
    if not models.is_file():
        serving.train_models()
    if not Store(store).list(MODEL):
        serving.build_crates(json.loads(models.read_text(encoding="utf-8")), store)
    onnx = Store(store).resolve(MODEL) / "model" / "model.onnx"
    rows = serving.RUNDIR / "binary-rows.npy"
    x, _ = make_classification(n_samples=5000, n_features=30, random_state=0)  # as train.py
    np.save(rows, x.astype(np.float32))
    cpus = sorted(os.sched_getaffinity(0))
    pins = [None, None]
    if not args.no_pin and len(cpus) >= 2:
        pins = [",".join(str(c) for c in cpus[:-1]), str(cpus[-1])]

    res = measure(onnx, store, rows, args, pins)
    best_c, best = max(res["served"].items(), key=lambda kv: kv[1]["x_in_process"])
    pkgs = ["modelcrate", "onnxruntime", "numpy", "fastapi", "starlette", "uvicorn", "tritonclient"]
    results: Json = {
        "command": " ".join(["python benchmarks/serving/binary.py", *sys.argv[1:]]),
        "started": started,
        "loadavg_before": [round(v, 2) for v in load0],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "machine": serving.machine_info(),
        "versions": serving.package_versions(PYTHON, pkgs),
        "model": {"name": MODEL, "title": serving.MODEL_TITLES[MODEL], "onnx": str(onnx)},
        "rows_per_request": ROWS,
        "duration_s": args.duration,
        "warmup_s": WARMUP_S,
        "server_cpus": pins[0] or "all",
        "client_cpus": pins[1] or "all",
        "client": "asyncio raw HTTP/1.1 keep-alive, one connection per client, one process",
        **res,
        "best": {"clients": int(best_c), "x_in_process": best["x_in_process"]},
        "target": {"x_in_process": TARGET, "met": best["x_in_process"] >= TARGET},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "binary.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    md = markdown(results)
    (args.out / "binary.md").write_text(md, encoding="utf-8")
    print(md)


if __name__ == "__main__":
    main()
