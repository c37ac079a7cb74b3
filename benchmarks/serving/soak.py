#!/usr/bin/env python3
"""Soak test: one real ``modelcrate serve`` under steady mixed traffic; errors and memory growth.

    python benchmarks/serving/soak.py [--duration 600] [--crate DIR] [--concurrency 8]
                                      [--out DIR] [--max-rss-growth 5] [--workers 1]

Runs in modelcrate's ``.venv`` (re-executes itself there). Without ``--crate`` it builds the
test-suite's ``churn`` crate (a scikit-learn Pipeline: two float columns and a categorical
string column, tests/serve/crates.py) in a temporary folder. The server starts on a free
loopback port; N clients (asyncio, raw HTTP/1.1, one keep-alive connection each) send, in a
fixed rotation, a typed ``/predict`` of one record, a ``/predict`` of a list of 50 records, a V2
JSON infer of 10 rows, invalid requests that must be refused (422 on ``/predict``, 400/404 on
V2) and ``GET /metrics``. Every answer is checked: its status, and for the valid requests its
body, which must equal (floats within 1e-4) the answer the same request got before the load.

The server's RSS (VmRSS, summed over its process tree) is sampled every second. The first 10 %
of the run (at least 2 s) is warm-up; the verdict compares the RSS at the start of the steady
state with the RSS at the end (each the median of a short window: 5 % of the run, 1-10 s).

Pass iff: no unexpected status, connection error or wrong answer; RSS growth within
``--max-rss-growth`` percent; no traceback in the server's log; and the server, stopped with
SIGTERM, exits 0. Writes ``soak.json`` and ``soak.md`` into ``--out`` (default: next to this
file); exits 1 on fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import run as serving  # noqa: E402  (run.py: free ports, process trees, RSS, machine info)

Json = dict[str, Any]
PYTHON = serving.MC_BIN / "python"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
LIST_ROWS = 50
V2_ROWS = 10
REL_TOL, ABS_TOL = 1e-4, 1e-6
V2_DATATYPES = {
    "float32": "FP32",
    "float64": "FP64",
    "int64": "INT64",
    "int32": "INT32",
    "bool": "BOOL",
    "string": "BYTES",
}


def log(msg: str) -> None:
    print(f"[soak] {msg}", flush=True)


# --------------------------------------------------------------------------- the traffic


@dataclass
class Kind:
    """One kind of request: its bytes on the wire, what it must answer, and what it got."""

    name: str
    method: str
    path: str
    body: bytes | None
    expect: frozenset[int]
    check_body: bool = False  # the body must equal the reference answer (valid requests)
    must_contain: bytes = b""
    reference: Any = None
    wire: bytes = b""
    count: int = 0
    unexpected: Counter[int] = field(default_factory=Counter)
    wrong: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))

    def build(self, port: int) -> None:
        head = f"{self.method} {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        if self.body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
        self.wire = (head + "\r\n").encode() + (self.body or b"")


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _value(column: Json, rng: random.Random) -> Any:
    dtype = column["dtype"]
    if dtype == "string":
        return rng.choice(column.get("categories") or ["a", "b"])
    if dtype == "bool":
        return rng.random() < 0.5
    if dtype.startswith(("int", "uint")):
        return rng.randint(0, 9)
    return round(rng.uniform(0.0, 80.0), 3)


def traffic(signature: Json, model: str) -> list[Kind]:
    """The request kinds, from the crate's signature (synthetic but valid values)."""
    rng = random.Random(0)
    columns = signature["inputs"]
    names = [c["name"] for c in columns]

    def record() -> Json:
        return {c["name"]: _value(c, rng) for c in columns}

    rows = [record() for _ in range(V2_ROWS)]
    if signature.get("tensor_input"):
        dtype = V2_DATATYPES[signature.get("tensor_dtype", "float32")]
        data = [[r[n] for n in names] for r in rows]
        inputs = [
            {"name": signature["tensor_name"], "shape": [V2_ROWS, len(names)], "datatype": dtype}
            | {"data": data}
        ]
        bad_shape = {**inputs[0], "shape": [V2_ROWS, len(names) + 1]}
    else:
        inputs = [
            {
                "name": c["name"],
                "shape": [V2_ROWS, 1],
                "datatype": V2_DATATYPES[c["dtype"]],
                "data": [[r[c["name"]]] for r in rows],
            }
            for c in columns
        ]
        bad_shape = {**inputs[0], "shape": [V2_ROWS, 2]}
    wrong_type = record()
    wrong_type[names[0]] = [] if columns[0]["dtype"] == "string" else "not a number"
    json_ok = frozenset({200})
    infer = f"/v2/models/{model}/infer"
    return [
        Kind("predict_one", "POST", "/predict", _dumps(record()), json_ok, check_body=True),
        Kind(
            "predict_50",
            "POST",
            "/predict",
            _dumps([record() for _ in range(LIST_ROWS)]),
            json_ok,
            check_body=True,
        ),
        Kind("v2_infer_10", "POST", infer, _dumps({"inputs": inputs}), json_ok, check_body=True),
        Kind("metrics", "GET", "/metrics", None, json_ok, must_contain=b"modelcrate_"),
        Kind("bad_predict_field", "POST", "/predict", _dumps({"nope": 1}), frozenset({422})),
        Kind("bad_predict_type", "POST", "/predict", _dumps(wrong_type), frozenset({422})),
        Kind("bad_predict_json", "POST", "/predict", b'{"a": ', frozenset({422})),
        Kind("bad_v2_shape", "POST", infer, _dumps({"inputs": [bad_shape]}), frozenset({400})),
        Kind(
            "bad_v2_model",
            "POST",
            "/v2/models/no-such-model/infer",
            _dumps({"inputs": inputs}),
            frozenset({404}),
        ),
    ]


# 17 valid requests (8 single records, 3 lists of 50, 5 V2, 1 /metrics) in every 20; the other 3
# are invalid, the five invalid kinds taking turns.
VALID = [
    "predict_one",
    "v2_infer_10",
    "predict_one",
    "predict_50",
    "predict_one",
    "v2_infer_10",
    "predict_one",
    "metrics",
    "predict_one",
    "v2_infer_10",
    "predict_50",
    "predict_one",
    "v2_infer_10",
    "predict_one",
    "predict_50",
    "predict_one",
    "v2_infer_10",
]
INVALID = ["bad_predict_field", "bad_predict_type", "bad_predict_json", "bad_v2_shape"]
INVALID += ["bad_v2_model"]


def schedule() -> list[str]:
    """100 requests: five times the 17 valid ones and 3 invalid ones (each invalid kind 3x)."""
    out: list[str] = []
    for r in range(5):
        bad = [INVALID[(3 * r + i) % len(INVALID)] for i in range(3)]
        out += VALID[:6] + bad[:1] + VALID[6:12] + bad[1:2] + VALID[12:] + bad[2:]
    return out


def same(a: Any, b: Any) -> bool:
    """Equal JSON documents, floats within REL_TOL/ABS_TOL (batching may reorder sums)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, float | int) and isinstance(b, float | int):
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# --------------------------------------------------------------------------- the clients


class Stats:
    def __init__(self) -> None:
        self.connection_errors: Counter[str] = Counter()
        self.requests = 0
        self.steady_requests = 0
        self.first_failures: list[str] = []

    def note(self, text: str) -> None:
        if len(self.first_failures) < 20:
            self.first_failures.append(text)


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: bytes
) -> tuple[int, bytes, bool]:
    """One request on a keep-alive connection: (status, body, server wants to close)."""
    writer.write(wire)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, close = 0, False, False
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif key == b"connection" and value.strip().lower() == b"close":
            close = True
    if not chunked:
        return status, await reader.readexactly(length), close
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, bytes(body), close
        body += chunk[:-2]


def verify(kind: Kind, status: int, body: bytes) -> str | None:
    """None if the answer is what this kind must answer, else what is wrong."""
    if status not in kind.expect:
        return f"status {status}: {body[:200]!r}"
    if kind.must_contain and kind.must_contain not in body:
        return f"body lacks {kind.must_contain!r}: {body[:200]!r}"
    if kind.check_body:
        try:
            doc = json.loads(body)
        except ValueError:
            return f"not JSON: {body[:200]!r}"
        if kind.reference is not None and not same(doc, kind.reference):
            return f"answer differs from the reference: {body[:200]!r}"
    return None


@dataclass
class Clock:
    start: float
    steady_at: float
    stop_at: float


@dataclass
class Load:
    """What the clients share."""

    port: int
    kinds: dict[str, Kind]
    plan: list[str]
    clock: Clock
    stats: Stats


async def client(index: int, load: Load) -> None:
    port, kinds, plan, clock, stats = load.port, load.kinds, load.plan, load.clock, load.stats
    i = index * 7  # clients start at different places in the rotation
    reader = writer = None
    while time.monotonic() < clock.stop_at:
        kind = kinds[plan[i % len(plan)]]
        i += 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            t0 = time.perf_counter()
            status, body, close = await asyncio.wait_for(
                exchange(reader, writer, kind.wire), REQUEST_TIMEOUT_S
            )
            kind.latencies.append(time.perf_counter() - t0)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
        ) as exc:
            stats.connection_errors[type(exc).__name__] += 1
            stats.note(f"{kind.name}: {type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.1)
            continue
        kind.count += 1
        stats.requests += 1
        if time.monotonic() >= clock.steady_at:
            stats.steady_requests += 1
        problem = verify(kind, status, body)
        if problem is not None:
            if status in kind.expect:
                kind.wrong += 1
            else:
                kind.unexpected[status] += 1
            stats.note(f"{kind.name}: {problem}")
        if close:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def rss_of(pid: int) -> tuple[int, int]:
    """(VmRSS of the server process, VmRSS summed over its process tree), KiB."""
    tree = serving.process_tree(pid)
    return serving.rss_kib(pid), sum(serving.rss_kib(p) for p in tree)


async def sampler(pid: int, clock: Clock, samples: list[tuple[float, int, int]]) -> None:
    while True:
        now = time.monotonic()
        samples.append((round(now - clock.start, 2), *rss_of(pid)))
        if now >= clock.stop_at:
            return
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - now)))


async def drive(
    port: int, pid: int, kinds: list[Kind], args: argparse.Namespace
) -> tuple[Stats, list[tuple[float, int, int]], Clock]:
    by_name = {k.name: k for k in kinds}
    for k in kinds:  # the reference answers, one request each before the load
        k.build(port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            status, body, _ = await exchange(reader, writer, k.wire)
        finally:
            writer.close()
        if status not in k.expect:
            raise SystemExit(f"{k.name}: {k.method} {k.path} answered {status}: {body[:300]!r}")
        if k.check_body:
            k.reference = json.loads(body)
    now = time.monotonic()
    warmup = max(2.0, args.duration * 0.10)
    clock = Clock(now, now + warmup, now + args.duration)
    stats, samples = Stats(), list[tuple[float, int, int]]()
    load = Load(port, by_name, schedule(), clock, stats)
    tasks = [client(i, load) for i in range(args.concurrency)]
    await asyncio.gather(sampler(pid, clock, samples), *tasks)
    return stats, samples, clock


# --------------------------------------------------------------------------- the server


def build_crate(root: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from tests.serve import crates

    return crates.mixed(root).crate_dir


@contextmanager
def server(
    crate: Path, workers: int, logfile: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = serving.free_port()
    argv = [sys.executable, "-m", "modelcrate", "serve", str(crate), "--port", str(port)]
    argv += ["--no-access-log", "--log-level", "warning", "--workers", str(workers)]
    with logfile.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}:\n{logfile.read_text()}")
            if time.monotonic() - t0 > READY_TIMEOUT_S:
                raise SystemExit(f"server not ready in {READY_TIMEOUT_S:g} s")
            try:
                if serving.http("GET", f"http://127.0.0.1:{port}/readyz", timeout=1.0)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        log(f"server ready on port {port} in {time.monotonic() - t0:.1f} s (pid {proc.pid})")
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop(proc: subprocess.Popen[bytes]) -> tuple[int | None, float]:
    """SIGTERM, then wait: (exit code, seconds to exit); (None, ...) if it had to be killed."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT_S), time.monotonic() - t0
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None, time.monotonic() - t0


# --------------------------------------------------------------------------- the report


def window_median(samples: list[tuple[float, int, int]], lo: float, hi: float) -> int:
    values = [tree for t, _, tree in samples if lo <= t <= hi]
    if not values:  # a window shorter than the sampling: the sample nearest to it
        values = [min(samples, key=lambda s: abs(s[0] - lo))[2]]
    return int(statistics.median(values))


def slope_kib_per_min(points: list[tuple[float, int]]) -> float | None:
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 60, 1)


def percentile(values: array[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3, 2)


def report(
    args: argparse.Namespace,
    *,
    kinds: list[Kind],
    stats: Stats,
    samples: list[tuple[float, int, int]],
    clock: Clock,
    exit_code: int | None,
    stop_s: float,
    server_log: str,
    crate: str,
) -> Json:
    duration = clock.stop_at - clock.start
    warmup = clock.steady_at - clock.start
    window = max(1.0, min(10.0, duration * 0.05))
    rss_start = window_median(samples, warmup, warmup + window)
    rss_end = window_median(samples, duration - window, duration + 1)
    growth = (rss_end - rss_start) / rss_start * 100 if rss_start else math.inf
    steady = [(t, tree) for t, _, tree in samples if t >= warmup]
    unexpected = sum(sum(k.unexpected.values()) for k in kinds)
    wrong = sum(k.wrong for k in kinds)
    conn = sum(stats.connection_errors.values())
    errors = unexpected + wrong + conn
    tracebacks = server_log.count("Traceback (most recent call last)")
    reasons = []
    if errors:
        reasons.append(
            f"{errors} errors ({unexpected} unexpected statuses, {conn} connection errors, "
            f"{wrong} wrong answers)"
        )
    if growth > args.max_rss_growth:
        reasons.append(f"RSS grew {growth:.1f} % (limit {args.max_rss_growth:g} %)")
    if tracebacks:
        reasons.append(f"{tracebacks} tracebacks in the server log")
    if exit_code != 0:
        reasons.append(f"server exit code after SIGTERM: {exit_code} (want 0)")
    return {
        "command": " ".join(["python benchmarks/serving/soak.py", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() - duration)),
        "machine": serving.machine_info(),
        "crate": crate,
        "duration_s": round(duration, 1),
        "warmup_s": round(warmup, 1),
        "rss_window_s": round(window, 1),
        "concurrency": args.concurrency,
        "workers": args.workers,
        "requests": stats.requests,
        "steady_requests": stats.steady_requests,
        "req_per_s": round(stats.requests / duration, 1),
        "steady_req_per_s": round(stats.steady_requests / (duration - warmup), 1),
        "errors": errors,
        "unexpected_statuses": unexpected,
        "wrong_answers": wrong,
        "connection_errors": dict(stats.connection_errors),
        "first_failures": stats.first_failures,
        "kinds": {
            k.name: {
                "request": f"{k.method} {k.path}",
                "expect": sorted(k.expect),
                "count": k.count,
                "unexpected": {str(s): n for s, n in k.unexpected.items()},
                "wrong_answers": k.wrong,
                "p50_ms": percentile(k.latencies, 0.50),
                "p99_ms": percentile(k.latencies, 0.99),
            }
            for k in kinds
        },
        "rss_start_kib": rss_start,
        "rss_end_kib": rss_end,
        "rss_max_kib": max(s[2] for s in samples),
        "rss_growth_pct": round(growth, 2),
        "rss_slope_kib_per_min": slope_kib_per_min(steady),
        "max_rss_growth_pct": args.max_rss_growth,
        "server_exit_code": exit_code,
        "server_stop_s": round(stop_s, 2),
        "server_log_tracebacks": tracebacks,
        "server_log_tail": server_log.splitlines()[-20:],
        "verdict": "fail" if reasons else "pass",
        "fail_reasons": reasons,
        "rss_samples": [list(s) for s in samples],  # [t s, server KiB, process tree KiB]
    }


def dump(result: Json) -> str:
    """Indented JSON, with one RSS sample a line (600 of them in a default run)."""
    doc = dict(result)
    samples = doc.pop("rss_samples")
    rows = ",\n    ".join(json.dumps(s) for s in samples)
    return json.dumps(doc, indent=2)[:-2] + f',\n  "rss_samples": [\n    {rows}\n  ]\n}}\n'


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def markdown(r: Json) -> str:
    m = r["machine"]
    verdict = "**pass**" if r["verdict"] == "pass" else "**FAIL**: " + "; ".join(r["fail_reasons"])
    lines = [
        "# Soak test: modelcrate serve under steady mixed traffic",
        "",
        f"`{r['command']}` on {m['cpu']} ({m['cpus']} CPUs), {m['os']}, Python {m['python']}; "
        f"{r['started']}. Crate: {r['crate']}. {r['concurrency']} keep-alive clients (asyncio, "
        f"raw HTTP/1.1) in the same loop as the RSS sampler; {r['workers']} server worker(s); "
        f"{r['duration_s']:g} s, of which {r['warmup_s']:g} s warm-up.",
        "",
        f"Verdict: {verdict}.",
        "",
        "| requests | req/s | steady req/s | errors | RSS start | RSS end | growth | RSS max "
        "| slope | exit |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['requests']:,} | {r['req_per_s']:,.0f} | {r['steady_req_per_s']:,.0f} | "
        f"{r['errors']} | {mib(r['rss_start_kib'])} | {mib(r['rss_end_kib'])} | "
        f"{r['rss_growth_pct']:+.2f} % | {mib(r['rss_max_kib'])} | "
        f"{r['rss_slope_kib_per_min']} KiB/min | {r['server_exit_code']} "
        f"({r['server_stop_s']:g} s) |",
        "",
        "| request kind | request | must answer | count | unexpected | wrong | p50 | p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, k in r["kinds"].items():
        lines.append(
            f"| {name} | `{k['request']}` | {', '.join(map(str, k['expect']))} | {k['count']:,} "
            f"| {sum(k['unexpected'].values())} | {k['wrong_answers']} | {k['p50_ms']} ms "
            f"| {k['p99_ms']} ms |"
        )
    lines += [
        "",
        f"RSS: VmRSS summed over the server's process tree, sampled every second; start = "
        f"median over the {r['rss_window_s']:g} s after the warm-up, end = median over the last "
        f"{r['rss_window_s']:g} s; slope: least squares over the steady state. Limit: "
        f"{r['max_rss_growth_pct']:g} % growth. Errors: unexpected statuses, connection errors "
        f"and wrong answers (a valid request's body must equal, floats within {REL_TOL:g}, its "
        "answer before the load). Connection errors: "
        f"{json.dumps(r['connection_errors'])}. Tracebacks in the server log: "
        f"{r['server_log_tracebacks']}. Stopped with SIGTERM.",
        "",
    ]
    if r["first_failures"]:
        lines += ["First failures:", "", *[f"- `{f}`" for f in r["first_failures"]], ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main() -> int:
    if Path(sys.prefix).resolve() != PYTHON.parent.parent.resolve() and PYTHON.exists():
        os.execv(str(PYTHON), [str(PYTHON), __file__, *sys.argv[1:]])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    ap.add_argument("--crate", type=Path, help="crate folder (default: build the churn crate)")
    ap.add_argument("--concurrency", type=int, default=8, help="keep-alive clients (default 8)")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for soak.json/soak.md")
    ap.add_argument(
        "--max-rss-growth", type=float, default=5.0, help="RSS growth limit, percent (default 5)"
    )
    args = ap.parse_args()
    if args.duration < 4 or args.concurrency < 1:
        ap.error("--duration must be at least 4 s and --concurrency at least 1")

    with tempfile.TemporaryDirectory(prefix="modelcrate-soak-") as tmp:
        crate = args.crate.resolve() if args.crate else None
        if crate is None:
            log("building the churn crate (tests/serve/crates.py)")
            crate = build_crate(Path(tmp))
        signature = json.loads((crate / "signature.json").read_text(encoding="utf-8"))
        logfile = Path(tmp) / "server.log"
        with server(crate, args.workers, logfile) as (proc, port):
            index = json.loads(serving.http("GET", f"http://127.0.0.1:{port}/")[1])
            kinds = traffic(signature, str(index["name"]))
            log(f"{args.concurrency} clients for {args.duration:g} s against {crate}")
            stats, samples, clock = asyncio.run(drive(port, proc.pid, kinds, args))
            exit_code, stop_s = stop(proc)
        result = report(
            args,
            kinds=kinds,
            stats=stats,
            samples=samples,
            clock=clock,
            exit_code=exit_code,
            stop_s=stop_s,
            server_log=logfile.read_text(errors="replace"),
            crate="churn (tests/serve/crates.py, built)" if args.crate is None else str(crate),
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(dump(result), encoding="utf-8")
    (args.out / "soak.md").write_text(markdown(result), encoding="utf-8")
    log(
        f"{result['requests']:,} requests, {result['req_per_s']:,.0f} req/s, "
        f"{result['errors']} errors, RSS {result['rss_start_kib'] / 1024:.1f} -> "
        f"{result['rss_end_kib'] / 1024:.1f} MiB ({result['rss_growth_pct']:+.2f} %), "
        f"exit {result['server_exit_code']}: {result['verdict'].upper()}"
        + (f" ({'; '.join(result['fail_reasons'])})" if result["fail_reasons"] else "")
    )
    log(f"wrote {args.out / 'soak.json'} and {args.out / 'soak.md'}")
    return 0 if result["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
