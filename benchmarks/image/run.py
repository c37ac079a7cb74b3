#!/usr/bin/env python3
"""Image benchmark: size, build times and bytes pushed of ``modelcrate containerize``.

One command, from the repository root, with the project's virtual environment::

    .venv/bin/python benchmarks/image/run.py [--repeat N] [--out DIR] [--no-run]

What it does (all local, no Docker): the offline Debian base with Python (mmdebstrap, cached
under ``$MODELCRATE_TEST_CACHE`` or ``/var/tmp/modelcrate-test-base``) is pushed to a real
``docker-registry`` on loopback; a real ONNX tabular crate (scikit-learn LogisticRegression on
iris, converted to ONNX, locked for onnxruntime) is built; then ``containerize`` runs

1. cold, network: empty image cache and empty pip cache (wheels come from the package index);
2. cold, local: empty image cache, pip's download cache primed by step 1;
3. warm: the same build again, ``--repeat`` times (the image cache holds the wheels layer);
4. first push of the image to the registry (every blob the registry lacks);
5. code-only change: the modelcrate source with one edited file, built ``--repeat`` times,
   then pushed as a second tag (only what changed goes over the wire);
6. unless ``--no-run``: ``podman pull`` of the pushed image and the time until ``/readyz``.

Writes ``results.json`` and ``results.md`` next to this file (``--out DIR`` to change). See
README.md for the goals and how to read the numbers.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # the test plumbing (tests/image) is shared with the benchmark

from tests.image.e2e_env import (  # noqa: E402
    BASE_PACKAGES,
    Podman,
    build_iris_crate,
    ensure_base_layout,
    free_port,
    missing_tools,
    skopeo_copy,
    snapshot_app,
    unique,
    wait_ready,
)
from tests.image.registry_fixture import running_registry  # noqa: E402

sys.path.insert(0, str(HERE))
from report import markdown  # noqa: E402  (the sibling module)

GOAL_ADDED_MB = 150.0  # added layers, uncompressed (installed size), for an ONNX tabular crate
GOAL_WARM_S = 10.0
MB = 1_000_000
Json = dict[str, Any]


def log(message: str) -> None:
    print(f"[bench-image] {message}", file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def layer_stats(blob: bytes) -> Json:
    """Sizes of one gzip layer: compressed, tar, and the bytes of its regular files."""
    raw = gzip.decompress(blob)
    files = 0
    file_bytes = 0
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r|") as tar:
        for member in tar:
            if member.isfile():
                files += 1
                file_bytes += member.size
    return {"compressed": len(blob), "tar": len(raw), "files": files, "file_bytes": file_bytes}


def top_packages(blob: bytes, prefix: str = "opt/modelcrate/site-packages/", n: int = 12) -> Json:
    """The wheels layer's file bytes per top-level entry (package or dist-info), largest first."""
    sizes: dict[str, int] = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r|") as tar:
        for member in tar:
            name = member.name.lstrip("./")
            if member.isfile() and name.startswith(prefix):
                top = name[len(prefix) :].split("/", 1)[0]
                if top.endswith((".dist-info", ".data")):
                    top = top.split("-", 1)[0].lower() + " (metadata)"
                sizes[top] = sizes.get(top, 0) + member.size
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1])
    out = {k: v for k, v in ranked[:n]}
    out["(other)"] = sum(v for _, v in ranked[n:])
    return out


def categories(blob: bytes) -> Json:
    """The wheels layer's file bytes by kind: what a slimmer layer could leave out."""
    kinds = {
        "shared objects (.so)": 0,
        "tests folders": 0,
        "type stubs (.pyi)": 0,
        "C/C++/Cython sources and headers": 0,
        "other files": 0,
    }
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = member.name
            if "/tests/" in name or "/testing/" in name:
                kind = "tests folders"
            elif name.endswith(".pyi"):
                kind = "type stubs (.pyi)"
            elif name.endswith((".c", ".h", ".cpp", ".hpp", ".pyx", ".pxd")):
                kind = "C/C++/Cython sources and headers"
            elif name.endswith(".so") or ".so." in name:
                kind = "shared objects (.so)"
            else:
                kind = "other files"
            kinds[kind] += member.size
    return kinds


def summary(samples: list[float]) -> Json:
    return {
        "median_s": round(statistics.median(samples), 3),
        "min_s": round(min(samples), 3),
        "max_s": round(max(samples), 3),
        "runs": [round(s, 3) for s in samples],
    }


def steps(result: Any) -> Json:
    return {name: round(seconds, 3) for name, seconds in result.steps}


def machine() -> Json:
    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "unknown"

    commit = version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "modelcrate_commit": commit + ("+dirty" if dirty else ""),
        "podman": version(["podman", "--version"]),
        "docker_registry": version(["docker-registry", "--version"]),
        "mmdebstrap": version(["mmdebstrap", "--version"]),
    }


def run_benchmark(work: Path, *, repeat: int, run_container: bool) -> Json:
    from modelcrate.image.containerize import containerize

    out: Json = {"machine": machine(), "goals": {"added_mb": GOAL_ADDED_MB, "warm_s": GOAL_WARM_S}}

    log("base: mmdebstrap Debian bookworm + Python (cached by package list)")
    base, base_s = timed(ensure_base_layout)
    out["base_image"] = {
        "packages": list(BASE_PACKAGES),
        "layout": str(base.path),
        "built_now": base.built,
        "seconds": round(base_s, 2),
    }

    with running_registry(work / "registry") as registry:
        base_ref = f"{registry.host}/pybase:bookworm"
        _, push_base_s = timed(lambda: skopeo_copy(base.ref, f"docker://{base_ref}"))
        out["base_image"]["push_to_registry_s"] = round(push_base_s, 2)

        log("crate: scikit-learn -> ONNX, locked for onnxruntime")
        crate, crate_s = timed(lambda: build_iris_crate(work / "crate"))
        out["crate"] = {"ref": crate.ref, "runtime": "onnxruntime", "build_s": round(crate_s, 2)}

        app = snapshot_app(work / "app").package

        def build(store: Path, tag: str, **kwargs: Any) -> tuple[Any, float]:
            kwargs.setdefault("app_source", app)
            return timed(
                lambda: containerize(
                    crate.ref,
                    store=store,
                    base=base_ref,
                    insecure_registry=True,
                    output=f"oci:{work / 'out'}:{tag}",
                    **kwargs,
                )
            )

        # The crate's own store holds the crate; each cold build gets a copy with no cache.
        pip_cache = work / "pip-cache"
        os.environ["PIP_CACHE_DIR"] = str(pip_cache)

        def fresh_store(name: str) -> Path:
            store = work / name
            shutil.copytree(crate.store_root, store)
            shutil.rmtree(store / "image-cache", ignore_errors=True)
            return store

        log("cold build (empty image cache, empty pip cache: wheels from the index)")
        cold_net, cold_net_s = build(fresh_store("store-cold-net"), "cold-net")
        log(f"  {cold_net_s:.1f} s")
        log("cold build (empty image cache, pip download cache primed)")
        cold_local, cold_local_s = build(fresh_store("store-cold-local"), "cold-local")
        log(f"  {cold_local_s:.1f} s")
        store = work / "store-cold-local"
        warm = []
        for i in range(repeat):
            result, seconds = build(store, f"warm-{i}")
            assert result.wheels_cached, "the warm build re-ran pip"
            warm.append((result, seconds))
        log(f"warm builds: {[round(s, 2) for _, s in warm]} s")
        digests = {cold_net.digest, cold_local.digest, *(r.digest for r, _ in warm)}

        log("first push")
        first, first_s = timed(
            lambda: containerize(
                crate.ref,
                store=store,
                base=base_ref,
                insecure_registry=True,
                push=f"{registry.host}/iris:1",
                app_source=app,
            )
        )

        log("code-only change: rebuild and second push")
        source = snapshot_app(work / "app-changed", edit="benchmark: a code-only change").package
        code = [build(store, f"code-{i}", app_source=source) for i in range(repeat)]
        second, second_s = timed(
            lambda: containerize(
                crate.ref,
                store=store,
                base=base_ref,
                insecure_registry=True,
                push=f"{registry.host}/iris:2",
                app_source=source,
            )
        )
        changed = [
            layer.role
            for layer, before in zip(second.layers, first.layers, strict=True)
            if layer.digest != before.digest
        ]

        image = first.image
        roles = [layer.role for layer in first.layers]
        per_layer = []
        for role, info, layer in zip(roles, first.layers, image.layers, strict=True):
            stats = layer_stats(layer.blob)
            per_layer.append({"role": role, "digest": info.digest, **stats})
        base_layers = [x for x in per_layer if x["role"] == "base"]
        added_layers = [x for x in per_layer if x["role"] != "base"]

        def total(layers: list[Json], key: str) -> int:
            return sum(int(x[key]) for x in layers)

        wheels_blob = next(
            layer.blob for role, layer in zip(roles, image.layers, strict=True) if role == "wheels"
        )
        added_mb = total(added_layers, "tar") / MB
        out["size"] = {
            "base": {k: total(base_layers, k) for k in ("compressed", "tar", "file_bytes")},
            "added": {k: total(added_layers, k) for k in ("compressed", "tar", "file_bytes")},
            "layers": per_layer,
            "wheels_by_package_file_bytes": top_packages(wheels_blob),
            "wheels_by_kind_file_bytes": categories(wheels_blob),
            "added_mb_uncompressed": round(added_mb, 1),
            "added_mb_compressed": round(total(added_layers, "compressed") / MB, 1),
            "goal_met": added_mb <= GOAL_ADDED_MB,
        }
        warm_median = statistics.median(s for _, s in warm)
        out["build"] = {
            "cold_network": {"seconds": round(cold_net_s, 2), "steps": steps(cold_net)},
            "cold_local": {"seconds": round(cold_local_s, 2), "steps": steps(cold_local)},
            "warm": {**summary([s for _, s in warm]), "steps": steps(warm[-1][0])},
            "code_only_rebuild": {**summary([s for _, s in code]), "steps": steps(code[-1][0])},
            "reproducible": len(digests) == 1,
            "digest": first.digest,
            "goal_met": warm_median <= GOAL_WARM_S,
        }
        assert first.pushed is not None
        assert second.pushed is not None
        out["push"] = {
            "first": {
                "seconds": round(first_s, 2),
                "push_step_s": steps(first).get("push"),
                "bytes": first.pushed.bytes_sent,
                "blobs_sent": first.pushed.blobs_sent,
                "blobs_skipped": first.pushed.blobs_skipped,
                "blobs_mounted": getattr(first.pushed, "blobs_mounted", 0),
                "base_uploaded": first.pushed.bytes_sent >= first.base_size,
            },
            "code_only_second": {
                "seconds": round(second_s, 2),
                "push_step_s": steps(second).get("push"),
                "bytes": second.pushed.bytes_sent,
                "blobs_sent": second.pushed.blobs_sent,
                "blobs_skipped": second.pushed.blobs_skipped,
                "blobs_mounted": getattr(second.pushed, "blobs_mounted", 0),
                "layers_changed": changed,
            },
        }

        if run_container:
            out["run"] = pull_and_run(f"{registry.host}/iris:1")
    return out


def pull_and_run(ref: str) -> Json:
    """``podman pull`` the image, run it, time until ``/readyz``; always removes both."""
    podman = Podman()
    try:
        _, pull_s = timed(lambda: podman.pull(ref))
        name = unique("modelcrate-bench")
        port = free_port()
        start = time.perf_counter()
        podman.run_detached(ref, name=name, ports={port: 8080})
        wait_ready(f"http://127.0.0.1:{port}", timeout=120)
        ready_s = time.perf_counter() - start
        size = podman("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip()
        return {
            "pull_s": round(pull_s, 2),
            "start_to_ready_s": round(ready_s, 2),
            "podman_image_size": int(size) if size.isdigit() else size,
        }
    finally:
        problems = podman.cleanup()
        if problems:
            log("cleanup problems: " + "; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=3, help="warm and code-only builds (3)")
    parser.add_argument("--out", type=Path, default=HERE, help="where results.* go (here)")
    parser.add_argument("--no-run", action="store_true", help="skip podman pull + run")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"missing {', '.join(missing)}: run scripts/system-deps.sh", file=sys.stderr)
        return 2
    os.environ.pop("SOURCE_DATE_EPOCH", None)
    work = Path(tempfile.mkdtemp(prefix="modelcrate-bench-image-"))
    try:
        results = run_benchmark(work, repeat=max(1, args.repeat), run_container=not args.no_run)
    finally:
        if args.keep:
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
