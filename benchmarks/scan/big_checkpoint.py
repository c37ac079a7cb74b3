#!/usr/bin/env python3
"""Time and memory of scanning one ~1 GB PyTorch checkpoint: modelcrate vs picklescan.

Standard library only (torch runs in the repo's .venv, in a subprocess, to create the file)::

    python benchmarks/scan/big_checkpoint.py [--skip-install] [--runs 5] [--out DIR]

Creates ``benchmarks/.work/big_checkpoint/model.pt`` once (``torch.save`` of a transformer-like
state_dict, ~1 GB), then runs ``picklescan -p FILE`` and ``modelcrate scan FILE`` as fresh
processes, interleaved, ``--runs`` times each after one warm-up, and records wall time (process
start included) and peak RSS. modelscan and fickling run once each for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The sibling module, importable because of the sys.path line above.
from harness import (
    HERE,
    MODELCRATE,
    MODELCRATE_PY,
    VENVS,
    WORK,
    Json,
    install_peers,
    machine_info,
    package_versions,
    read_requirements,
    requirement_name,
    run_process,
    short,
)

CKPT_DIR = WORK / "big_checkpoint"
CKPT = CKPT_DIR / "model.pt"
GNU_TIME = Path("/usr/bin/time")

# A Llama-like layout at hidden size 1024: embeddings + LAYERS x (4 attention + 3 MLP matrices,
# 2 norms) + final norm + lm_head; ~0.98 GB of float32 in 130 tensors.
SPEC = {"hidden": 1024, "ffn": 2816, "vocab": 32000, "layers": 14, "seed": 0}

CREATE = r"""
import json, os, sys, torch
spec = json.loads(sys.argv[2])
torch.manual_seed(spec["seed"])
h, f, v = spec["hidden"], spec["ffn"], spec["vocab"]
sd = {"model.embed_tokens.weight": torch.randn(v, h)}
for i in range(spec["layers"]):
    p = f"model.layers.{i}."
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        sd[p + f"self_attn.{name}.weight"] = torch.randn(h, h)
    sd[p + "mlp.gate_proj.weight"] = torch.randn(f, h)
    sd[p + "mlp.up_proj.weight"] = torch.randn(f, h)
    sd[p + "mlp.down_proj.weight"] = torch.randn(h, f)
    sd[p + "input_layernorm.weight"] = torch.ones(h)
    sd[p + "post_attention_layernorm.weight"] = torch.ones(h)
sd["model.norm.weight"] = torch.ones(h)
sd["lm_head.weight"] = torch.randn(v, h)
sd["step"] = torch.tensor(1000, dtype=torch.int64)
tmp = sys.argv[1] + ".tmp"
torch.save(sd, tmp)
os.replace(tmp, sys.argv[1])
print(json.dumps({"tensors": len(sd), "torch": torch.__version__}))
"""


def ensure_checkpoint() -> Json:
    """Create the checkpoint unless one made from the same SPEC is cached."""
    meta_path = CKPT_DIR / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("spec") == SPEC and CKPT.stat().st_size == meta.get("bytes"):
            return dict(meta)
    except (OSError, ValueError):
        pass
    CKPT_DIR.mkdir(parents=True, exist_ok=True)
    print(f"creating {CKPT} with torch.save (once) ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(MODELCRATE_PY), "-c", CREATE, str(CKPT), json.dumps(SPEC)],
        check=False,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise SystemExit(f"creating the checkpoint failed: {proc.stderr.strip()[-2000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    meta = {
        "spec": SPEC,
        "bytes": CKPT.stat().st_size,
        "tensors": info["tensors"],
        "torch": info["torch"],
        "create_s": round(time.perf_counter() - t0, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


@dataclass(frozen=True)
class Measured:
    rc: int | None
    secs: float
    peak_rss_kib: int | None
    timed_out: bool
    tail: str


RUSAGE_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "sys.stderr.write(f'\\nMaximum resident set size (kbytes): {kib}\\n')\n"
    "sys.exit(rc)\n"
)


def measure(argv: list[str], timeout: float) -> Measured:
    """One fresh process; peak RSS from GNU time -v, else a getrusage(CHILDREN) wrapper."""
    if GNU_TIME.is_file():
        wrapped = [str(GNU_TIME), "-v", *argv]
    else:
        wrapped = [sys.executable, "-c", RUSAGE_WRAPPER, *argv]
    run = run_process(wrapped, timeout)
    shutil.rmtree(run.scratch, ignore_errors=True)
    rss: int | None = None
    for line in run.stderr.splitlines():
        if "Maximum resident set size (kbytes):" in line:
            try:
                rss = int(line.rsplit(":", 1)[1])
            except ValueError:
                rss = None
    # GNU time reports the tool's own exit status as its own.
    tail = short((run.stdout + " " + run.stderr.split("\tCommand being timed")[0])[-400:], 200)
    return Measured(run.rc, run.secs, rss, run.timed_out, tail)


def stats(ms: list[Measured]) -> Json:
    secs = [m.secs for m in ms]
    rss = [m.peak_rss_kib for m in ms if m.peak_rss_kib is not None]
    return {
        "runs": len(ms),
        "rc": sorted({m.rc for m in ms}, key=lambda x: -1 if x is None else x),
        "timed_out": any(m.timed_out for m in ms),
        "secs_best": round(min(secs), 4),
        "secs_median": round(statistics.median(secs), 4),
        "secs_all": [round(s, 4) for s in secs],
        "peak_rss_mib_max": round(max(rss) / 1024, 1) if rss else None,
        "peak_rss_mib_median": round(statistics.median(rss) / 1024, 1) if rss else None,
        "output_tail": ms[-1].tail if ms else "",
    }


def in_process_seconds(timeout: float) -> float | None:
    """modelcrate's own scan time (its JSON ``seconds``), to separate start-up from work."""
    run = run_process([str(MODELCRATE), "scan", str(CKPT), "--format", "json"], timeout)
    shutil.rmtree(run.scratch, ignore_errors=True)
    try:
        return float(json.loads(run.stdout)["seconds"])
    except (ValueError, KeyError, TypeError):
        return None


WARM = r"""
import json, sys, time
from modelcrate.scan import scan
scan(sys.argv[1])  # first call: lazy imports of the scanner modules
best = float("inf")
for _ in range(5):
    t = time.perf_counter()
    scan(sys.argv[1])
    best = min(best, time.perf_counter() - t)
print(json.dumps(best))
"""


def warm_in_process_seconds(timeout: float) -> float | None:
    """Best of 5 ``modelcrate.scan.scan(FILE)`` calls in one process after a first call."""
    run = run_process([str(MODELCRATE_PY), "-c", WARM, str(CKPT)], timeout)
    shutil.rmtree(run.scratch, ignore_errors=True)
    try:
        return round(float(json.loads(run.stdout.strip().splitlines()[-1])), 4)
    except (ValueError, IndexError):
        return None


def render(res: Json) -> str:
    m: Json = res["machine"]
    ck: Json = res["checkpoint"]
    timed: dict[str, Json] = res["timed"]
    ref: dict[str, Json] = res["reference"]
    out = [
        "# Big checkpoint: scan time and memory",
        "",
        f"Generated by `benchmarks/scan/big_checkpoint.py` on {m['date']}: {m['nproc']} CPUs, "
        f"Python {m['python']}, load average {m['loadavg_at_start']} at start.",
        f"File: `{res['file']}`, {int(ck['bytes']) / 1e9:.2f} GB ({ck['tensors']} tensors, "
        f"torch.save zip, torch {ck['torch']}). Page cache warm (the file was written or "
        "read before); one untimed warm-up run per tool, then the tools alternate.",
        "",
        "| tool | command | runs | best s | median s | peak RSS MiB (max) | exit codes |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in {**timed, **ref}.items():
        out.append(
            f"| {name} | `{s['command']}` | {s['runs']} | {s['secs_best']} | {s['secs_median']} "
            f"| {s['peak_rss_mib_max']} | {s['rc']}{' (timed out)' if s['timed_out'] else ''} |"
        )
    out += [
        "",
        f"modelcrate's own scan time inside the process (JSON `seconds`): "
        f"{res['modelcrate_in_process_s']} s (this includes the lazy imports of its scanner "
        "modules); the rest of its wall time is Python start-up and imports. The same scan "
        "repeated in one warm process (`modelcrate.scan.scan(FILE)`, best of 5): "
        f"{res['modelcrate_warm_in_process_s']} s.",
        "",
        "## Checks",
        "",
    ]
    for k, v in dict(res["checks"]).items():
        out.append(f"- {k}: {v}")
    out += ["", f"Versions: {json.dumps(res['versions'])}", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per tool")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per process")
    ap.add_argument("--skip-install", action="store_true", help="do not create peer venvs")
    ap.add_argument("--out", type=Path, default=HERE, help="where big_checkpoint.json/.md go")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    reqs = read_requirements()
    install = {} if args.skip_install else install_peers(reqs, log)
    machine = machine_info()
    meta = ensure_checkpoint()
    f = str(CKPT)
    tools = {
        "picklescan": [str(VENVS / "picklescan" / "bin" / "picklescan"), "-p", f],
        "modelcrate": [str(MODELCRATE), "scan", f],
    }
    reference = {
        "modelscan": [str(VENVS / "modelscan" / "bin" / "modelscan"), "-p", f],
        "fickling": [str(VENVS / "fickling" / "bin" / "fickling"), "--check-safety", f],
    }
    missing = [cmd[0] for cmd in tools.values() if not Path(cmd[0]).is_file()]
    if missing:
        log(f"error: not installed: {', '.join(missing)} (drop --skip-install; make install)")
        return 2
    results: dict[str, list[Measured]] = {name: [] for name in tools}
    for name, cmd in tools.items():  # warm-up, untimed
        log(f"warm-up {name}")
        measure(cmd, args.timeout)
    for i in range(max(1, args.runs)):
        order = list(tools.items()) if i % 2 == 0 else list(reversed(tools.items()))
        for name, cmd in order:
            results[name].append(measure(cmd, args.timeout))
            log(f"run {i + 1} {name}: {results[name][-1].secs:.3f}s")
    timed: dict[str, Json] = {
        name: {"command": " ".join(cmd).replace(f, "FILE"), **stats(results[name])}
        for name, cmd in tools.items()
    }
    ref: dict[str, Json] = {}
    for name, cmd in reference.items():
        if not Path(cmd[0]).is_file():
            continue
        log(f"reference {name}")
        ref[name] = {
            "command": " ".join(cmd).replace(f, "FILE"),
            **stats([measure(cmd, args.timeout)]),
        }
    mc, ps = timed["modelcrate"], timed["picklescan"]
    size_mib = int(meta["bytes"]) / 2**20
    checks = {
        "modelcrate best <= picklescan best": mc["secs_best"] <= ps["secs_best"],
        "modelcrate median <= picklescan median": mc["secs_median"] <= ps["secs_median"],
        "modelcrate exit code 0 (benign file passes)": mc["rc"] == [0],
        "modelcrate peak RSS MiB": mc["peak_rss_mib_max"],
        "modelcrate peak RSS below 10% of the file size": (
            mc["peak_rss_mib_max"] is not None and mc["peak_rss_mib_max"] < 0.1 * size_mib
        ),
    }
    versions: dict[str, dict[str, str]] = {
        venv: package_versions(
            VENVS / venv / "bin" / "python", [requirement_name(r) for r in lines]
        )
        for venv, lines in reqs.items()
    }
    versions["modelcrate"] = package_versions(MODELCRATE_PY, ["modelcrate", "torch"])
    res: Json = {
        "machine": machine | {"loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "file": str(CKPT),
        "checkpoint": meta,
        "peak_rss_method": "/usr/bin/time -v" if GNU_TIME.is_file() else "getrusage(CHILDREN)",
        "install": install,
        "timed": timed,
        "reference": ref,
        "modelcrate_in_process_s": in_process_seconds(args.timeout),
        "modelcrate_warm_in_process_s": warm_in_process_seconds(args.timeout),
        "checks": checks,
        "versions": versions,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "big_checkpoint.json").write_text(json.dumps(res, indent=1) + "\n", "utf-8")
    (args.out / "big_checkpoint.md").write_text(render(res), encoding="utf-8")
    log(f"wrote {args.out / 'big_checkpoint.json'} and {args.out / 'big_checkpoint.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
