"""`make demo`: the main job end to end on embedded defaults.

Trains real models, writes them the way people ship them (joblib, torch, safetensors), builds a
few attack files from raw bytes (nothing here ever loads them), scans the folder as a user would,
prints the report and checks that every benign file passed and every attack was stopped.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import tempfile
import zipfile
from pathlib import Path

from rich.console import Console

from modelcrate.scan import Severity, scan


def _benign(folder: Path, console: Console) -> list[str]:
    import joblib
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True, as_frame=True)
    pipe = Pipeline(
        [
            ("prep", ColumnTransformer([("num", StandardScaler(), list(x.columns))])),
            ("clf", RandomForestClassifier(n_estimators=20, random_state=0)),
        ]
    ).fit(x, y)
    console.print(f"trained a RandomForest pipeline on iris (accuracy {pipe.score(x, y):.3f})")
    joblib.dump(pipe, folder / "iris_pipeline.joblib", compress=3)
    names = ["iris_pipeline.joblib"]
    weights = np.arange(12, dtype=np.float32).reshape(3, 4)
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, weights.nbytes]}}
    ).encode()
    (folder / "model.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + weights.tobytes()
    )
    names.append("model.safetensors")
    try:
        import torch
    except ImportError:
        console.print("[dim]torch is not installed: skipping the PyTorch checkpoint[/dim]")
    else:
        net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        torch.save(net.state_dict(), folder / "pytorch_model.bin")
        names.append("pytorch_model.bin")
    return names


def _reduce_pickle(module: str, name: str, arg: str) -> bytes:
    """GLOBAL module name; (arg,); REDUCE; STOP -- protocol 2, built byte by byte, never loaded."""
    a = arg.encode()
    return (
        b"\x80\x02c"
        + f"{module}\n{name}\n".encode()
        + b"X"
        + struct.pack("<I", len(a))
        + a
        + b"\x85R."
    )


def _attacks(folder: Path) -> list[str]:
    marker = "/tmp/modelcrate-demo-pwned"
    (folder / "model.pkl").write_bytes(_reduce_pickle("os", "system", f"touch {marker}"))
    # the same payload inside a PyTorch-style zip, named like a checkpoint
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", _reduce_pickle("builtins", "exec", "import os"))
        zf.writestr("archive/version", "3\n")
    (folder / "checkpoint.pt").write_bytes(buf.getvalue())
    # a payload followed by garbage: pickle.load runs the call, then fails
    (folder / "broken.pkl").write_bytes(
        _reduce_pickle("subprocess", "getoutput", "id")[:-1] + b"\xff\xff"
    )
    # an archive member that escapes the extraction folder
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../tmp/evil.sh", "echo pwned")
    (folder / "assets.zip").write_bytes(buf.getvalue())
    return ["model.pkl", "checkpoint.pt", "broken.pkl", "assets.zip"]


def run(console: Console | None = None) -> int:
    """Run the demo; returns 0 when every verdict is what it should be."""
    from modelcrate.cli.render import render_text

    console = console or Console()
    with tempfile.TemporaryDirectory(prefix="modelcrate-demo-") as tmp:
        folder = Path(tmp) / "downloaded-model"
        folder.mkdir()
        console.rule("1. models, as a team would ship them")
        benign = _benign(folder, console)
        attacks = _attacks(folder)
        console.print(
            f"benign: {', '.join(benign)}\nattacks (built from bytes): {', '.join(attacks)}"
        )
        console.rule("2. modelcrate scan downloaded-model/")
        report = scan(folder)
        for fr in report.files:
            fr.path = str(Path(fr.path).relative_to(tmp))
        render_text(report, console, fail_on=Severity.HIGH)
        console.rule("3. check")
        ok = True
        for fr in report.files:
            name = Path(fr.path).name
            flagged = fr.verdict is not None and fr.verdict >= Severity.HIGH
            expected = name in attacks
            mark = "[green]ok[/green]" if flagged == expected else "[red]WRONG[/red]"
            ok &= flagged == expected
            console.print(f"{mark} {name}: {'stopped' if flagged else 'admitted'}")
        console.print(
            "[bold green]demo passed[/bold green]" if ok else "[bold red]demo failed[/bold red]"
        )
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run())
