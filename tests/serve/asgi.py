"""A synchronous in-process client for an ASGI app: httpx over ``ASGITransport``, no socket.

The app's lifespan runs on enter and exit (the model loads and warms up, as under uvicorn),
inside one event loop held by an anyio blocking portal, so tests stay plain functions.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, AbstractContextManager
from functools import partial
from types import TracebackType
from typing import Any

import anyio.from_thread
import httpx


class AppClient:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._portal_cm: AbstractContextManager[anyio.from_thread.BlockingPortal] | None = None
        self._lifespan: AbstractAsyncContextManager[Any] | None = None

    def __enter__(self) -> AppClient:
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self._lifespan = self.app.lifespan()
        self.portal.call(self._lifespan.__aenter__)
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._portal_cm is not None
        assert self._lifespan is not None
        try:
            self.portal.call(self.client.aclose)
            self.portal.call(self._lifespan.__aexit__, None, None, None)
        finally:
            self._portal_cm.__exit__(exc_type, exc, tb)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(partial(self.client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)
