"""Scanning loads nothing: no unpickling, no process, no import of the payload's modules.

Every sample below would, if loaded, run a payload that creates a marker file. The scan runs in a
fresh interpreter with an audit hook (PEP 578) that records every event a load would raise
(``pickle.find_class`` above all), and the test checks the log, the markers and ``sys.modules``.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path


def _s(text: str) -> bytes:
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _long(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _call(module: str, name: str, *args: str, proto: int = 2) -> bytes:
    """GLOBAL module name; MARK args TUPLE; REDUCE; STOP."""
    head = b"\x80" + bytes([proto]) if proto >= 2 else b""
    return head + f"c{module}\n{name}\n".encode() + b"(" + b"".join(_s(a) for a in args) + b"tR."


def build_samples(folder: Path, marker_dir: Path) -> list[Path]:
    def m(tag: str) -> str:
        return str(marker_dir / tag)

    samples: dict[str, bytes] = {
        "os_system.pkl": _call("os", "system", f"touch {m('os')}"),
        "posix_system_p0.pkl": _call("posix", "system", f"touch {m('posix')}", proto=0),
        "exec.pkl": _call("builtins", "exec", f"open({m('exec')!r}, 'w')"),
        "eval_py2.pkl": _call("__builtin__", "eval", f"open({m('eval')!r}, 'w')"),
        "runpy.pkl": _call("runpy", "_run_code", f"open({m('runpy')!r}, 'w')"),
        "webbrowser.pkl": _call("webbrowser", "open", "file:///nonexistent"),
        "subprocess.bin": _call("subprocess", "getoutput", f"touch {m('sub')}"),
        "broken.pkl": _call("os", "system", f"touch {m('broken')}")[:-1] + b"\xff\xfe",
        "nested.pkl": b"\x80\x02c_pickle\nloads\nC"
        + bytes([len(inner := _call("os", "system", f"touch {m('nested')}"))])
        + inner
        + b"\x85R.",
        "stack_global.pkl": b"\x80\x04"
        + b"\x8c\x02os\x94\x8c\x06system\x94\x93"
        + _s(f"touch {m('sg')}")
        + b"\x85R.",
    }
    # allowlisted globals that act or allocate (issue 9, item 2): the scan refuses them
    # without running them, so none of these allocates or computes anything while scanning
    samples.update(
        {
            "getlogger_build.pkl": _call("logging", "getLogger", "")[:-1]
            + b"}" + _s("disabled") + b"K\x01sb.",
            "chainmap_registry.pkl": b"\x80\x02ccollections\nChainMap\n"
            + b"csklearn.metrics._scorer\n_SCORERS\n\x85R" + _s("accuracy") + b"Ns.",
            "bytearray_1e12.pkl": b"\x80\x02cbuiltins\nbytearray\n" + _long(10**12) + b"\x85R.",
            "list_range.pkl": b"\x80\x02cbuiltins\nlist\ncbuiltins\nrange\n"
            + _long(10**10) + b"\x85R\x85R.",
            "fraction_exponent.pkl": _call("fractions", "Fraction", "1e999999999"),
        }
    )  # fmt: skip
    out = []
    for name, data in samples.items():
        p = folder / name
        p.write_bytes(data)
        out.append(p)
    evil = samples["os_system.pkl"]
    (folder / "model.joblib").write_bytes(zlib.compress(evil))
    out.append(folder / "model.joblib")
    (folder / "model.pkl.gz").write_bytes(gzip.compress(evil))
    out.append(folder / "model.pkl.gz")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", evil)
        zf.writestr("archive/data.txt", samples["exec.pkl"])
        zf.writestr("archive/version", "3\n")
    (folder / "pytorch_model.bin").write_bytes(buf.getvalue())
    out.append(folder / "pytorch_model.bin")
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + evil
    (folder / "emb.npy").write_bytes(npy)
    out.append(folder / "emb.npy")
    lam = {"class_name": "Lambda", "config": {"function": {"class_name": "__lambda__"}}}
    cfg = {"class_name": "Sequential", "config": {"layers": [lam]}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("config.json", json.dumps(cfg))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.8.0"}))
    (folder / "model.keras").write_bytes(buf.getvalue())
    out.append(folder / "model.keras")
    # benign, for contrast: a real pickle of plain data must also be scanned without loading it
    (folder / "plain.pkl").write_bytes(pickle.dumps({"a": [1, 2.0, "x"]}, protocol=5))
    out.append(folder / "plain.pkl")
    return out


HARNESS = r"""
import json, sys
events = []
WATCH = {"pickle.find_class", "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn",
         "os.fork", "os.spawn", "socket.connect", "ctypes.dlopen", "webbrowser.open"}
def hook(event, args):
    if event in WATCH:
        events.append([event, repr(args)[:200]])
sys.addaudithook(hook)
before = set(sys.modules)
from modelcrate.scan import scan
report = scan(sys.argv[1])
new = sorted(set(sys.modules) - before)
verdicts = {f.path: (f.verdict.name if f.verdict is not None else "NONE") for f in report.files}
print(json.dumps({"events": events, "new_modules": new, "verdicts": verdicts}))
"""


def test_scanning_every_sample_has_no_side_effect(tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    folder.mkdir()
    markers = tmp_path / "markers"
    markers.mkdir()
    samples = build_samples(folder, markers)
    proc = subprocess.run(
        [sys.executable, "-c", HARNESS, str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result = json.loads(proc.stdout)
    assert result["events"] == []
    assert list(markers.iterdir()) == []
    payload_modules = {"runpy", "webbrowser", "subprocess", "pty", "code", "timeit", "pdb", "torch"}
    assert payload_modules.isdisjoint(result["new_modules"])
    verdicts = result["verdicts"]
    assert len(verdicts) == len(samples)
    for path, verdict in verdicts.items():
        expected = {"NONE", "INFO", "LOW"} if path.endswith("plain.pkl") else {"HIGH", "CRITICAL"}
        assert verdict in expected, (path, verdict)
