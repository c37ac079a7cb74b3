"""Raw-socket clients and process measurements for the hostile-client tests.

A hostile client is best written by hand: it sends what it wants when it wants (half a header,
one byte of a body, requests it never reads the answers of). The server's cost is read from
``/proc``: its peak resident memory (``VmHWM``), its resident memory now (``VmRSS``) and the
bytes it read from sockets and files (``rchar``).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` field in KiB (``VmHWM``: peak RSS, ``VmRSS``: RSS now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def bytes_read(pid: int) -> int:
    """Bytes the process has read with read(2)/recv(2) since it started (``rchar``)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise KeyError("rchar")


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def connect(url: str, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port_of(url)), timeout=timeout)
    return sock


def head(path: str, length: int | None, extra: bytes = b"", method: bytes = b"POST") -> bytes:
    """A request line and headers (``content-length`` when ``length`` is given)."""
    out = method + b" " + path.encode() + b" HTTP/1.1\r\nhost: test\r\n"
    out += b"content-type: application/json\r\n" + extra
    if length is not None:
        out += b"content-length: %d\r\n" % length
    return out + b"\r\n"


def request(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return head(path, len(body), extra) + body


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def read_answer(sock: socket.socket, timeout: float) -> Answer | None:
    """One HTTP response from ``sock`` (None on EOF or a reset before a status line)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        top, _, rest = data.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    except ConnectionResetError:
        return None
    return Answer(int(lines[0].split()[1]), headers, rest[:length])


def closed_within(sock: socket.socket, timeout: float) -> bool:
    """True when the server ends the connection (EOF or reset) within ``timeout`` seconds,
    whatever it sends first."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


@contextlib.contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    """A list to put sockets in; all of them closed on exit."""
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            with contextlib.suppress(OSError):
                sock.close()


def v2_binary(inputs: list[tuple[str, str, list[int], bytes]]) -> tuple[bytes, dict[str, str]]:
    """A V2 binary-extension body and its headers (``inference-header-content-length``):
    ``inputs`` are ``(name, datatype, shape, raw bytes)``."""
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": len(raw)},
                }
                for name, datatype, shape, raw in inputs
            ]
        }
    )
    body = header + b"".join(raw for *_, raw in inputs)
    return body, {"inference-header-content-length": str(len(header))}


def traceback_free(log: Path) -> bool:
    return "Traceback" not in log.read_text(errors="replace")
