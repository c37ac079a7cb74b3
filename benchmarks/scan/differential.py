"""Long differential-fuzzing campaigns: the scanner against the real loaders.

Usage, from the repository root, with the project's virtual environment (torch, joblib, numpy,
pandas and lz4 installed; ``make install``)::

    .venv/bin/python benchmarks/scan/differential.py --minutes 30 --seed 1
    .venv/bin/python benchmarks/scan/differential.py --max-mutants 300 --seed 20260510 \
        --save-all --no-minimize --out /tmp/ci   # record the CI campaign's misses

It imports this checkout's ``src/`` and ``tests/`` (not an installed modelcrate), runs every seed
and then mutants until the time or count runs out, and writes ``differential.json`` and
``differential.md`` (``--out``, default this folder): mutants tried, loader executions and
outcomes per loader, scanner misses (the target is 0) grouped by signature with a minimal
recipe each, and false alarms on benign mutants that every loader opens cleanly, grouped the
same way. ``--save-regressions`` writes one recipe per miss group into
``tests/scan/regressions/`` (status ``open``: an expected failure until the scanner is fixed).
The harness itself is described in ``tests/scan/differential/__init__.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.scan.differential.campaign import (  # noqa: E402
    Campaign,
    Outcome,
    replay,
    save_recipe,
)
from tests.scan.differential.classes import describe, hint_class  # noqa: E402
from tests.scan.differential.regressions import FOLDER, load  # noqa: E402
from tests.scan.differential.runner import LoaderPool  # noqa: E402


def _versions() -> dict[str, str]:
    import joblib
    import numpy
    import pandas
    import torch

    import modelcrate

    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "joblib": joblib.__version__,
        "modelcrate": str(Path(modelcrate.__file__).parent),
        "commit": commit,
    }


def _signature(out: Outcome) -> str:
    family = out.recipe.seed_id.replace("+evil", "")
    return f"{hint_class(out)} | {family} | scan:{out.scan.fmt}"


def _fa_signature(out: Outcome) -> str:
    family = out.recipe.seed_id.replace("+evil", "")
    rules = ",".join(sorted({f.split(" ", 1)[1] for f in out.scan.findings if f[:1] in "HC"}))
    return f"{family} | {rules or out.scan.fmt}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--minutes", type=float, default=None, help="time budget for mutants")
    ap.add_argument("--max-mutants", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1, help="campaign seed")
    ap.add_argument("--start-index", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--save-regressions", action="store_true", help="one recipe per miss group")
    ap.add_argument("--save-all", action="store_true", help="every miss, as found (CI campaign)")
    ap.add_argument("--no-minimize", action="store_true", help="keep recipes as found")
    ap.add_argument("--max-minimize", type=int, default=60, help="miss groups to minimize")
    ap.add_argument("--regressions", type=Path, default=FOLDER, help="where recipes are saved")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.minutes is None and args.max_mutants is None:
        args.minutes = 10.0

    started = time.time()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="modelcrate-diff-"))
    known = {r.recipe.key: r for r in load()}
    groups: dict[str, list[Outcome]] = defaultdict(list)
    fa_groups: dict[str, list[Outcome]] = defaultdict(list)

    def progress(out: Outcome) -> None:
        if out.miss:
            sig = _signature(out)
            if not groups[sig] and not args.quiet:
                print(f"miss  {out.recipe.key}: {sig}", flush=True)
            groups[sig].append(out)

    with LoaderPool(work) as pool:
        camp = Campaign(pool, work, args.seed)
        camp.run_seeds()
        for out in camp.stats.seed_misses:
            groups[_signature(out)].append(out)
        budget = args.minutes * 60 if args.minutes is not None else None
        stats = camp.run(
            max_mutants=args.max_mutants,
            budget_s=budget,
            start_index=args.start_index,
            on_outcome=progress,
        )
        for out in [*stats.seed_false_alarms, *stats.false_alarms]:
            fa_groups[_fa_signature(out)].append(out)

        miss_report = []
        for n, (sig, outs) in enumerate(sorted(groups.items(), key=lambda kv: -len(kv[1]))):
            first = min(outs, key=lambda o: (len(o.recipe.steps), o.size))
            recipe = first.recipe
            minimized = recipe
            if not args.no_minimize and n < args.max_minimize and len(recipe.steps) > 1:
                minimized = camp.minimize(recipe)
            sample = replay(minimized)
            final = camp.evaluate(sample, minimized) if minimized is not recipe else first
            entry = {
                "signature": sig,
                "class": hint_class(final),
                "count": len(outs),
                "keys": [o.recipe.key for o in outs[:5]],
                "example": final.summary(),
                "description": describe(final),
                "known": minimized.key in known,
            }
            miss_report.append(entry)
            if args.save_regressions and final.miss and minimized.key not in known:
                path = save_recipe(args.regressions, final, hint_class(final), describe(final))
                entry["saved"] = str(path)
        if args.save_all:
            for outs in groups.values():
                for out in outs:
                    if out.recipe.key not in known:
                        save_recipe(args.regressions, out, hint_class(out), describe(out))

    fa_report = [
        {
            "signature": sig,
            "count": len(outs),
            "keys": [o.recipe.key for o in outs[:5]],
            "example": min(outs, key=lambda o: (len(o.recipe.steps), o.size)).summary(),
        }
        for sig, outs in sorted(fa_groups.items(), key=lambda kv: -len(kv[1]))
    ]
    per_loader = {k: dict(v) for k, v in sorted(stats.per_loader.items())}
    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "versions": _versions(),
        "network_isolated": pool.network_isolated,
        "wall_seconds": round(time.time() - started, 1),
        "seeds": stats.seeds_run,
        "mutants": stats.mutants,
        "loader_executions": stats.executions,
        "per_loader": per_loader,
        "per_mutator": dict(sorted(stats.per_mutator.items())),
        "mutants_reaching_a_callable": stats.reached_mutants,
        "clean_benign_mutants": stats.clean_benign_mutants,
        "misses": sum(len(v) for v in groups.values()),
        "miss_groups": miss_report,
        "misses_by_class": dict(
            Counter(e["class"] for e in miss_report for _ in range(int(e["count"])))  # type: ignore[call-overload]
        ),
        "false_alarms": sum(len(v) for v in fa_groups.values()),
        "false_alarm_groups": fa_report,
        "scan_errors": [o.summary() for o in stats.scan_errors],
        "scan_seconds_total": round(stats.scan_seconds, 2),
        "slowest_scan": list(stats.slowest_scan),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "differential.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "differential.md").write_text(render_md(result))
    if not args.quiet:
        print(
            f"{stats.mutants} mutants, {stats.executions} loader executions, "
            f"{result['misses']} misses in {len(miss_report)} groups, "
            f"{result['false_alarms']} false alarms; {args.out / 'differential.md'}"
        )
    return 1 if result["misses"] else 0


def render_md(r: dict[str, object]) -> str:
    lines = [
        "# Differential fuzzing: scanner vs loaders",
        "",
        f"Campaign seed {r['args']['seed']}, {r['wall_seconds']} s wall, "  # type: ignore[index]
        f"versions {json.dumps(r['versions'])}; network isolated: {r['network_isolated']}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| seeds (unmutated samples) | {r['seeds']} |",
        f"| mutants tried | {r['mutants']} |",
        f"| loader executions | {r['loader_executions']} |",
        f"| mutants on which some loader reached a non-allowlisted callable | "
        f"{r['mutants_reaching_a_callable']} |",
        f"| benign mutants every loader opens as it opens the seed | {r['clean_benign_mutants']} |",
        f"| **scanner misses** (target 0) | **{r['misses']}** |",
        f"| false alarms | {r['false_alarms']} |",
        f"| scanner errors / timeouts | {len(r['scan_errors'])} |",  # type: ignore[arg-type]
        f"| scan time, total | {r['scan_seconds_total']} s |",
        "",
        "## Per loader",
        "",
        "| loader | ok | error | timeout | crash | reached a callable |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in r["per_loader"].items():  # type: ignore[attr-defined]
        lines.append(
            f"| {name} | {c.get('ok', 0)} | {c.get('error', 0)} | {c.get('timeout', 0)} | "
            f"{c.get('crash', 0)} | {c.get('reached', 0)} |"
        )
    lines += ["", "## Misses by class", ""]
    for k, v in sorted(r["misses_by_class"].items()):  # type: ignore[attr-defined]
        lines.append(f"- {k}: {v}")
    lines += [
        "",
        "## Miss groups (one minimal example each; replay with the recipe in the JSON)",
        "",
        "| class | mutants | seed family, scan format | example | what it is |",
        "|---|---|---|---|---|",
    ]
    for g in r["miss_groups"]:  # type: ignore[attr-defined]
        _, family, fmt = (x.strip() for x in str(g["signature"]).split("|"))
        desc = str(g["description"]).replace("|", "/")[:400]
        lines.append(
            f"| {g['class']} | {g['count']} | {family}, {fmt} | `{g['example']['key']}` | {desc} |"
        )
    lines.append("")
    lines += [
        "## False-alarm groups",
        "",
        "Benign mutants that every loader opening the seed still opens, reaching nothing outside",
        "the allowlist, and that the scan stops (reported, not failures):",
        "",
    ]
    for g in r["false_alarm_groups"]:  # type: ignore[attr-defined]
        ex = g["example"]
        lines.append(
            f"- {g['count']} x `{g['signature']}`: e.g. `{ex['key']}` steps "
            f"`{[s for s, _ in ex['recipe']['steps']]}`"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
