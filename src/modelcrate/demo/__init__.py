"""`make demo`: the main job end to end on embedded defaults.

1. Trains a real scikit-learn pipeline (numeric and categorical columns, on iris, which ships
   with scikit-learn) and writes it as people ship models (joblib), next to other real model
   files and four attack files built from raw bytes (nothing ever loads them).
2. Scans the folder: every benign file passes, every attack is stopped.
3. Builds a crate from the pipeline (scan gate, safe load, ONNX conversion, parity, signature,
   locked dependencies) into a throw-away store.
4. Serves it in a real server process, sends typed ``/predict`` and V2 requests, checks the
   answers against the original model, and stops the server.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from modelcrate.scan import Severity, scan


def _scan_step(folder: Path, attacks: list[str], tmp: str, console: Console) -> bool:
    from modelcrate.cli.render import render_text

    report = scan(folder)
    for fr in report.files:
        fr.path = str(Path(fr.path).relative_to(tmp))
    render_text(report, console, fail_on=Severity.HIGH)
    ok = True
    for fr in report.files:
        name = Path(fr.path).name
        flagged = fr.verdict is not None and fr.verdict >= Severity.HIGH
        right = flagged == (name in attacks)
        ok &= right
        mark = "[green]ok[/green]" if right else "[red]WRONG[/red]"
        console.print(f"{mark} {name}: {'stopped' if flagged else 'admitted'}")
    return ok


def _serve_step(crate_dir: Path, frame: object, model: object, console: Console) -> bool:
    import json

    import pandas as pd

    from modelcrate.demo.service import http, running_server, v2_request

    assert isinstance(frame, pd.DataFrame)
    rows = frame.iloc[[0, 60, 120]].to_dict(orient="records")
    expected = [str(x) for x in model.predict(frame.iloc[[0, 60, 120]])]  # type: ignore[attr-defined]
    signature = json.loads((crate_dir / "signature.json").read_text())
    with running_server(crate_dir) as base:
        console.print(f"server ready at {base}")
        typed = http("POST", f"{base}/predict", rows)
        console.print("[bold]POST /predict[/bold]", typed)
        name = http("GET", f"{base}/v2/models/iris")["name"]
        v2 = http("POST", f"{base}/v2/models/{name}/infer", v2_request(rows, signature))
        console.print(f"[bold]POST /v2/models/{name}/infer[/bold]", v2["outputs"][0])
    labels_typed = [p["label"] for p in typed]
    labels_v2 = [str(x) for x in v2["outputs"][0]["data"]]
    ok = labels_typed == expected == labels_v2
    console.print(
        f"{'[green]ok[/green]' if ok else '[red]WRONG[/red]'} original model {expected}, "
        f"/predict {labels_typed}, V2 {labels_v2}"
    )
    console.print("server stopped")
    return ok


def run(console: Console | None = None) -> int:
    """Run the demo; returns 0 when every step gave the right answer."""
    from modelcrate.crate.build import build
    from modelcrate.crate.store import Store
    from modelcrate.demo.samples import iris_frame, train_pipeline, write_attacks, write_benign

    console = console or Console()
    with tempfile.TemporaryDirectory(prefix="modelcrate-demo-") as tmp:
        folder = Path(tmp) / "downloaded-model"
        folder.mkdir()
        console.rule("1. a real model, as a team would ship it, next to attack files")
        frame, target = iris_frame()
        model = train_pipeline(frame, target)
        console.print(
            f"trained a RandomForest pipeline on iris: accuracy {model.score(frame, target):.3f}"
        )
        benign = write_benign(folder, model)
        attacks = write_attacks(folder)
        console.print(
            f"benign: {', '.join(benign)}\nattacks (built from bytes): {', '.join(attacks)}"
        )

        console.rule("2. modelcrate scan downloaded-model/")
        ok = _scan_step(folder, attacks, tmp, console)

        console.rule("3. modelcrate build downloaded-model/iris_pipeline.joblib --name iris")
        store_root = Path(tmp) / "store"
        os.environ["MODELCRATE_HOME"] = str(store_root)
        built = build(
            folder / "iris_pipeline.joblib",
            name="iris",
            store=Store.default(store_root),
            progress=lambda step: console.print(f"  - {step}"),
        )
        m = built.manifest
        console.print(
            f"crate {m.name}:{m.version[:19]}  flavor {m.flavor} -> {m.runtime.kind}, "
            f"parity {'passed' if m.parity.passed else 'FAILED'} on {m.parity.rows} rows "
            f"(tolerance {m.parity.tolerance:.2g})"
        )

        console.rule("4. modelcrate serve iris, then typed and V2 requests")
        ok &= _serve_step(built.path, frame, model, console)
        console.print(
            "[bold green]demo passed[/bold green]" if ok else "[bold red]demo failed[/bold red]"
        )
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run())
