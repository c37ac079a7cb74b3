"""The real loaders, each run in a fresh forked child under a PEP 578 audit hook.

Run as a script (``python loader_server.py SANDBOX_DIR``), never imported by the harness: it
imports torch, numpy, pandas and joblib once, loads a small sample of each format so their lazy
imports are done, then answers one JSON request per line on stdin::

    {"path": "/abs/file", "loaders": ["pickle", ...], "timeout": 5.0}

with one JSON line on stdout: ``{"results": {loader: {"status", "error", "events"}}}``.

For every (file, loader) it forks a child that: lowers its limits (address space, CPU time,
file size, no core dumps), moves to an empty working directory with its own TMPDIR, sends its
stdout/stderr to /dev/null, installs the audit hook, runs the loader and reports through a pipe.
The hook records every ``pickle.find_class`` (module, name), every new import and every event in
:data:`TELLING`; events that would start a process, open a socket or load a native library are
refused (the hook raises), so a payload that slips through still cannot act. The parent starts
this server inside a fresh network namespace when ``unshare`` allows it.
"""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time

LOADERS = ("pickle", "pickle_py", "torch", "joblib", "numpy", "pandas")

# audit events that no loader raises on a benign file; BLOCKED ones are also refused (file
# removals, renames and chmod are not here: torch's tar reader and tarfile do them in TMPDIR)
BLOCKED = (
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "subprocess.Popen",
    "socket.connect",
    "socket.bind",
    "socket.getaddrinfo",
    "socket.sendto",
    "ctypes.dlopen",
    "ctypes.dlsym",
    "ctypes.cdata",
    "webbrowser.open",
    "urllib.Request",
)
# "exec" only for code compiled from a string: imports exec every module's code, and a payload
# that calls exec or marshal.loads leaves its pickle.find_class first anyway
TELLING = (*BLOCKED, "exec", "code.__new__", "function.__new__", "sys.settrace")


def _run_loader(loader: str, path: str) -> object:
    if loader == "pickle":
        import pickle

        with open(path, "rb") as fh:
            return pickle.load(fh)
    if loader == "pickle_py":
        import pickle

        with open(path, "rb") as fh:
            return pickle._Unpickler(fh).load()  # type: ignore[attr-defined]
    if loader == "torch":
        import torch

        return torch.load(path, weights_only=False, map_location="cpu")
    if loader == "joblib":
        import joblib

        return joblib.load(path)
    if loader == "numpy":
        import numpy

        res = numpy.load(path, allow_pickle=True)
        if hasattr(res, "files"):
            with res:
                return {k: res[k] for k in res.files}
        return res
    if loader == "pandas":
        import pandas

        return pandas.read_pickle(path)
    raise ValueError(loader)


class Refused(Exception):
    """Raised by the audit hook for an event the sandbox does not allow."""


def _child(loader: str, path: str, work: str, wfd: int, *, cpu_s: int, mem_extra: int) -> None:
    events: list[list[str]] = []
    status = "ok"
    error = ""
    try:
        vm = 0
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    vm = int(line.split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + mem_extra, vm + mem_extra))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.chdir(work)
        os.environ["TMPDIR"] = work
        tempfile.tempdir = work
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)

        watched = set(TELLING)
        blocked = set(BLOCKED)
        limit = 500

        def hook(event: str, args: tuple[object, ...]) -> None:
            if event == "pickle.find_class":
                if len(events) < limit:
                    events.append([event, str(args[0])[:200], str(args[1])[:200]])
            elif event == "import":
                if len(events) < limit:
                    events.append([event, str(args[0])[:200]])
            elif event in watched:
                if event == "exec" and getattr(args[0], "co_filename", "") != "<string>":
                    return
                events.append([event, repr(args)[:200]])
                if event in blocked:
                    raise Refused(f"sandbox refused {event}")

        sys.addaudithook(hook)
        _run_loader(loader, path)
    except BaseException as exc:  # the loader's own error is data
        status = "error"
        error = f"{type(exc).__name__}: {exc}"[:300]
    try:
        os.write(wfd, json.dumps({"status": status, "error": error, "events": events}).encode())
    finally:
        os._exit(0)


def run_one(
    loader: str, path: str, timeout: float, cpu_s: int, mem_extra: int
) -> dict[str, object]:
    work = tempfile.mkdtemp(prefix=f"{loader}-")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(loader, path, work, w, cpu_s=cpu_s, mem_extra=mem_extra)
        os._exit(0)  # not reached
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([r], [], [], left)
        if not ready:
            continue
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(r)
    shutil.rmtree(work, ignore_errors=True)
    if timed_out:
        return {"status": "timeout", "error": f"no answer in {timeout} s", "events": []}
    try:
        return dict(json.loads(b"".join(chunks)))
    except ValueError:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        return {"status": "crash", "error": f"child died (signal {sig})", "events": []}


def _warm(sandbox: str) -> None:
    """Import the loaders and load one small file of each kind, outside any hook."""
    import io
    import pickle

    import joblib
    import numpy
    import pandas
    import torch

    p = os.path.join(sandbox, "warm")
    torch.save({"w": torch.zeros(2)}, p + ".pt")
    torch.load(p + ".pt", weights_only=False)
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf, _use_new_zipfile_serialization=False)
    torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    for comp in (None, "zlib", "gzip", "bz2", "lzma", "xz", "lz4"):
        try:
            joblib.dump({"a": numpy.zeros(3)}, p + ".j", compress=(comp, 1) if comp else 0)
            joblib.load(p + ".j")
        except Exception:
            pass
    numpy.save(p + ".npy", numpy.zeros(2))
    numpy.load(p + ".npy")
    numpy.savez(p + ".npz", a=numpy.zeros(2))
    with numpy.load(p + ".npz") as z:
        z["a"]
    for suffix in (".pkl", ".pkl.gz", ".pkl.bz2", ".pkl.xz", ".pkl.zip", ".pkl.tar", ".tar.gz"):
        pandas.to_pickle(pandas.DataFrame({"a": [1]}), p + suffix)
        pandas.read_pickle(p + suffix)
    pickle.loads(pickle.dumps(numpy.zeros(2)))
    for codec in ("latin-1", "raw_unicode_escape", "ascii", "utf-8", "unicode_escape", "utf-16"):
        "x".encode(codec)


def main() -> None:
    sandbox = sys.argv[1]
    os.chdir(sandbox)
    os.environ["TMPDIR"] = sandbox
    tempfile.tempdir = sandbox
    _warm(sandbox)
    out = sys.stdout
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        results = {}
        for loader in req["loaders"]:
            results[loader] = run_one(
                loader,
                req["path"],
                float(req.get("timeout", 10.0)),
                int(req.get("cpu_s", 5)),
                int(req.get("mem_extra", 2 << 30)),
            )
        out.write(json.dumps({"results": results}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
