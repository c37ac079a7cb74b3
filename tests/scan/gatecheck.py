"""Run pickles through the scanner and the restricted unpickler, and compare the verdicts.

The scanner and ``modelcrate.formats`` share one model of what a pickle may do; these helpers
check that they agree: the scan's worst finding is HIGH or above exactly when the restricted
unpickler refuses the stream. Attack samples are loaded in a child process with a memory cap
and a time limit, so a regression shows up as a failed test, not as a test run that allocates
a terabyte or computes ``10**999999999``. The child also reports whether process state the
samples try to change (the root logger, numpy's float64 dtype, library registries) changed.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import modelcrate
from modelcrate.scan.findings import Severity
from tests.scan.picklegen import scan_bytes, worst

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(modelcrate.__file__).resolve().parents[1]  # the modelcrate these tests imported

_CHILD = textwrap.dedent(
    """
    import base64, json, logging, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    from modelcrate.errors import InputError
    from modelcrate.formats import PickleRefusedError, safe_load_pickle
    samples = json.loads(sys.stdin.read())
    out = {}
    for name, data in samples.items():
        try:
            safe_load_pickle(base64.b64decode(data), path=name)
            out[name] = "loaded"
        except PickleRefusedError as exc:
            out[name] = "refused: " + exc.message
        except InputError as exc:
            out[name] = "error: " + exc.message
        except MemoryError:
            out[name] = "memory"
    import numpy
    out["__state__"] = {
        "root_logger_disabled": logging.getLogger("").disabled,
        "float64_byteorder": numpy.dtype("f8").byteorder,
    }
    print(json.dumps(out))
    """
)


def load_in_child(samples: dict[str, bytes], timeout: float = 240) -> dict[str, object]:
    """``safe_load_pickle`` every sample in a fresh, memory-capped interpreter."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(ROOT)]))
    payload = json.dumps({k: base64.b64encode(v).decode() for k, v in samples.items()})
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=payload,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def scan_blocks(data: bytes, name: str = "model.pkl") -> bool:
    """True when the scan's worst finding fails the default gate (HIGH)."""
    found = worst(scan_bytes(data, name))
    return found is not None and found >= Severity.HIGH
