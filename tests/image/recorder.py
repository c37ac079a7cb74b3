"""A second host for the credential tests: a tiny HTTP server that records every request it gets
(method, target, ``Host`` and ``Authorization``) and answers with a callback.

It stands in for whatever a registry may point a client at: a token realm on another host or
port (it can forward to a real token service, so the flow still works), blob storage behind a
redirect, an upload ``Location`` elsewhere, or a forward proxy (absolute-URI requests, so that
requests meant for ``registry-1.docker.io`` land here, headers and all, with no network).
"""

from __future__ import annotations

import contextlib
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Seen:
    method: str
    target: str  # the request target as sent: a path, or an absolute URI through a proxy
    host: str | None
    authorization: str | None


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Respond = Callable[[str, str, dict[str, str], bytes], Answer]


@dataclass
class Recorder:
    host: str  # 127.0.0.1:PORT
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def authorizations(self) -> list[str]:
        return [s.authorization for s in self.seen if s.authorization]


def forward_to(base_url: str) -> Respond:
    """Answer by forwarding the request (method, path, body, Content-Type and whatever
    Authorization it got) to ``base_url``: a relay that sees everything passing through."""

    def respond(method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        request = urllib.request.Request(base_url + target, data=body or None, method=method)
        for name in ("content-type", "authorization"):
            if name in headers:
                request.add_header(name.capitalize(), headers[name])
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return Answer(answer.status, {"Content-Type": "application/json"}, answer.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, {"Content-Type": "application/json"}, exc.read())

    return respond


@contextlib.contextmanager
def recording_server(respond: Respond | None = None) -> Iterator[Recorder]:
    """A recorder on a free loopback port, stopped on exit."""
    answer = respond or (lambda *_: Answer())
    state = Recorder("")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.seen.append(
                Seen(self.command, self.path, headers.get("host"), headers.get("authorization"))
            )
            got = answer(self.command, self.path, headers, body)
            self.send_response(got.status)
            for name, value in got.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(got.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(got.body)

        do_GET = do_POST = do_PUT = do_HEAD = do_PATCH = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.host = f"127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, name="recorder", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
