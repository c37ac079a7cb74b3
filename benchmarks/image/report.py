"""The Markdown page of the image benchmark (``results.md``) from its results dict."""

from __future__ import annotations

from typing import Any

MB = 1_000_000
Json = dict[str, Any]


def mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


def markdown(r: Json) -> str:
    size, build, push = r["size"], r["build"], r["push"]
    ok = {True: "yes", False: "**no**"}
    lines = [
        "# Image benchmark: `modelcrate containerize`",
        "",
        f"Machine: {r['machine']['platform']}, {r['machine']['cpus']} CPUs, Python "
        f"{r['machine']['python']}, modelcrate {r['machine']['modelcrate_commit']}. "
        f"Crate: `{r['crate']['ref']}` (scikit-learn LogisticRegression -> ONNX, onnxruntime). "
        f"Base: Debian bookworm by mmdebstrap ({', '.join(r['base_image']['packages'])}). "
        "MB = 10^6 bytes.",
        "",
        "## Goals",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        f"| added layers <= {r['goals']['added_mb']:.0f} MB (uncompressed) | "
        f"{size['added_mb_uncompressed']} MB ({size['added_mb_compressed']} MB compressed) | "
        f"{ok[size['goal_met']]} |",
        f"| warm build <= {r['goals']['warm_s']:.0f} s | {build['warm']['median_s']} s (median "
        f"of {len(build['warm']['runs'])}) | {ok[build['goal_met']]} |",
        "",
        "## Size",
        "",
        "| layer | compressed | uncompressed tar | files | file bytes |",
        "|---|---:|---:|---:|---:|",
    ]
    for layer in size["layers"]:
        lines.append(
            f"| {layer['role']} | {mb(layer['compressed'])} | {mb(layer['tar'])} | "
            f"{layer['files']} | {mb(layer['file_bytes'])} |"
        )
    lines += [
        f"| **base total** | {mb(size['base']['compressed'])} | {mb(size['base']['tar'])} | | "
        f"{mb(size['base']['file_bytes'])} |",
        f"| **added total** | {mb(size['added']['compressed'])} | {mb(size['added']['tar'])} | | "
        f"{mb(size['added']['file_bytes'])} |",
        "",
        "Largest entries of the wheels layer (file bytes):",
        "",
        "| package | size |",
        "|---|---:|",
    ]
    for name, n in size["wheels_by_package_file_bytes"].items():
        lines.append(f"| {name} | {mb(n)} |")
    lines += [
        "",
        "The wheels layer by kind of file (file bytes):",
        "",
        "| kind | size |",
        "|---|---:|",
    ]
    for name, n in size["wheels_by_kind_file_bytes"].items():
        lines.append(f"| {name} | {mb(n)} |")
    lines += [
        "",
        "## Build time",
        "",
        "| build | seconds | of which |",
        "|---|---:|---|",
    ]

    def of_which(steps: Json) -> str:
        big = sorted(steps.items(), key=lambda kv: -kv[1])[:3]
        return ", ".join(f"{k} {v:.2f}" for k, v in big)

    rows = [
        ("cold: empty caches, wheels from the index", build["cold_network"]["seconds"],
         build["cold_network"]["steps"]),
        ("cold: empty image cache, pip cache primed", build["cold_local"]["seconds"],
         build["cold_local"]["steps"]),
        ("warm (median)", build["warm"]["median_s"], build["warm"]["steps"]),
        ("code-only change (median)", build["code_only_rebuild"]["median_s"],
         build["code_only_rebuild"]["steps"]),
    ]  # fmt: skip
    for label, seconds, st in rows:
        lines.append(f"| {label} | {seconds} | {of_which(st)} |")
    lines += [
        "",
        f"Every build of the same inputs gave the same digest: {ok[build['reproducible']]} "
        f"(`{build['digest']}`).",
        "",
        "## Push",
        "",
        "| push | bytes sent | blobs sent | skipped (HEAD) | mounted | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, key in (
        ("first push (new repository)", "first"),
        ("second push after a code-only change", "code_only_second"),
    ):
        one = push[key]
        lines.append(
            f"| {label} | {one['bytes']:,} B | {one['blobs_sent']} | {one['blobs_skipped']} | "
            f"{one['blobs_mounted']} | {one['push_step_s']} |"
        )
    base_note = (
        "the first push uploaded the base layer too (it lives under another repository)"
        if push["first"]["base_uploaded"]
        else "the base layer was not uploaded again: the registry mounted it from the base's "
        "repository"
    )
    lines += [
        "",
        "Layers changed by the code-only change: "
        + ", ".join(push["code_only_second"]["layers_changed"])
        + f"; {base_note}.",
    ]
    if "run" in r:
        run = r["run"]
        size_note = (
            f"; podman reports the image as {mb(run['podman_image_size'])}"
            if isinstance(run["podman_image_size"], int)
            else ""
        )
        lines += [
            "",
            "## Run",
            "",
            f"`podman pull` from the loopback registry {run['pull_s']} s; `podman run` to a ready "
            f"`/readyz` {run['start_to_ready_s']} s{size_note}.",
        ]
    return "\n".join(lines) + "\n"
