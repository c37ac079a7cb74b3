"""Talk to the loader server (:mod:`.loader_server`): start it sandboxed, send files, read results.

The server runs in its own process (inside a new network namespace when ``unshare -rn`` works),
with one thread for OpenMP/MKL, a private working directory and TMPDIR; every load is a fresh
fork of it (see the server's docstring for the limits and the audit hook).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SERVER = Path(__file__).with_name("loader_server.py")
LOADERS = ("pickle", "pickle_py", "torch", "joblib", "numpy", "pandas")


@dataclass(frozen=True)
class LoaderResult:
    loader: str
    status: str  # ok | error | timeout | crash
    error: str
    globals: tuple[tuple[str, str], ...]  # every pickle.find_class, in order
    imports: tuple[str, ...]
    telling: tuple[str, ...]  # process, socket, native-library, exec events

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _parse(loader: str, raw: dict[str, object]) -> LoaderResult:
    events = raw.get("events") or []
    assert isinstance(events, list)
    globs: list[tuple[str, str]] = []
    imports: list[str] = []
    telling: list[str] = []
    for ev in events:
        if ev[0] == "pickle.find_class":
            globs.append((ev[1], ev[2]))
        elif ev[0] == "import":
            imports.append(ev[1])
        else:
            telling.append(f"{ev[0]} {ev[1]}")
    return LoaderResult(
        loader,
        str(raw.get("status")),
        str(raw.get("error", "")),
        tuple(globs),
        tuple(imports),
        tuple(telling),
    )


def _sandbox_prefix() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, check=False)
    return [unshare, "-rn"] if probe.returncode == 0 else []


class LoaderPool:
    """One loader server; :meth:`run` loads one file with each requested loader."""

    def __init__(
        self,
        workdir: Path,
        *,
        timeout: float = 10.0,
        cpu_s: int = 5,
        mem_extra: int = 2 << 30,
        start_timeout: float = 300.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.timeout = timeout
        self.cpu_s = cpu_s
        self.mem_extra = mem_extra
        self.start_timeout = start_timeout
        self.network_isolated = False
        self.executions = 0
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LoaderPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        sandbox = self.workdir / f"sandbox-{self.restarts}"
        sandbox.mkdir(parents=True, exist_ok=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "VIRTUAL_ENV", "PYTHONHASHSEED")
        }
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        env.update(TMPDIR=str(sandbox), PYTHONDONTWRITEBYTECODE="1")
        prefix = _sandbox_prefix()
        self.network_isolated = bool(prefix)
        self._proc = subprocess.Popen(
            [*prefix, sys.executable, str(SERVER), str(sandbox)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=sandbox,
            env=env,
        )
        line = self._readline(self.start_timeout)
        if not line or not json.loads(line).get("ready"):
            self.close()
            raise RuntimeError("loader server did not start")

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def _readline(self, timeout: float) -> bytes:
        assert self._proc is not None
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        buf = bytearray()
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                return b""
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            buf += chunk
        return bytes(buf)

    def run(self, path: Path, loaders: tuple[str, ...] = LOADERS) -> dict[str, LoaderResult]:
        if self._proc is None or self._proc.poll() is not None:
            self.restarts += 1
            self.close()
            self.start()
        assert self._proc is not None
        assert self._proc.stdin is not None
        req = {
            "path": str(Path(path).resolve()),
            "loaders": list(loaders),
            "timeout": self.timeout,
            "cpu_s": self.cpu_s,
            "mem_extra": self.mem_extra,
        }
        self._proc.stdin.write(json.dumps(req).encode() + b"\n")
        self._proc.stdin.flush()
        line = self._readline(self.timeout * len(loaders) + 30)
        if not line:
            # the server itself died or hung: restart it, report the loads as crashed
            self.close()
            self.restarts += 1
            self.start()
            return {
                name: LoaderResult(name, "crash", "loader server died", (), (), ())
                for name in loaders
            }
        self.executions += len(loaders)
        results = json.loads(line)["results"]
        return {name: _parse(name, results[name]) for name in loaders}
