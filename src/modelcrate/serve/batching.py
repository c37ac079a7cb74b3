"""Adaptive batching: concurrent requests share one model call.

Each request submits its input arrays (``rows`` rows each) and awaits its own slice of the
outputs. A batch is flushed when

- the runtime is idle: at the end of the current event-loop iteration, so every request that
  arrived together rides along and a lone request never waits (work-conserving);
- it holds ``max_batch_size`` rows;
- ``max_latency_s`` passed since its first request was queued (while the runtime is busy).

Requests are never split: a batch is a run of whole requests (a request larger than
``max_batch_size`` runs alone), and the outputs are cut back along the first axis by each
request's row count, in queue order. Requests whose inputs cannot be stacked (other column
names, widths or dtypes) go to separate batches. A batch the model refuses as bad input is
retried request by request, so one bad request fails alone. Small batches run on the event
loop (a microsecond prediction costs less than a thread hop); batches above ``inline_rows``
run in a worker thread, at most ``max_parallel`` at a time (default: this process's CPUs).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Arrays = Mapping[str, np.ndarray]


@dataclass(eq=False)
class _Item:
    inputs: Arrays
    rows: int
    future: asyncio.Future[Arrays]
    key: tuple[Any, ...]
    queued: float = field(default_factory=time.monotonic)


class BatchError(RuntimeError):
    """The model's outputs do not have one entry per input row of the batch."""


class Batcher:
    """Batches calls of ``run`` (inputs -> outputs, every array one entry per row).

    ``run`` raises what it raises (the caller maps errors); ``is_client_error(exc)`` tells
    whether an exception blames the input, in which case each request of the batch is
    retried alone. ``observe(rows, requests)`` is told the size of every model call.
    """

    def __init__(
        self,
        run: Callable[[Arrays], Arrays],
        *,
        max_batch_size: int = 64,
        max_latency_s: float = 0.002,
        inline_rows: int = 64,
        max_parallel: int | None = None,
        is_client_error: Callable[[BaseException], bool] = lambda _exc: False,
        observe: Callable[[int, int], None] = lambda _rows, _requests: None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_latency_s = max(0.0, max_latency_s)
        self.inline_rows = inline_rows
        # threaded batches at once: more than the CPUs this process may use only adds latency
        self.max_parallel = max(1, max_parallel or _cpus())
        self._is_client_error = is_client_error
        self._observe = observe
        self._queue: list[_Item] = []
        self._queued_rows = 0
        self._running = 0  # batches running in worker threads
        self._soon: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    async def submit(self, inputs: Arrays, rows: int) -> Arrays:
        """Queue one request's inputs; returns its rows of the outputs."""
        return await self.enqueue(inputs, rows)

    def enqueue(self, inputs: Arrays, rows: int) -> asyncio.Future[Arrays]:
        """Queue one request's inputs; the future gets its rows of the outputs (or the error).
        Cancelling the future takes the request out of the queue if its batch has not run."""
        loop = asyncio.get_running_loop()
        key = tuple([(name, arr.shape[1:], arr.dtype) for name, arr in inputs.items()])
        item = _Item(inputs, rows, loop.create_future(), key)
        self._queue.append(item)
        self._queued_rows += rows
        self._schedule(loop)
        return item.future

    # -- scheduling ------------------------------------------------------------------------

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._queue or self._soon is not None:
            return
        idle = self._running == 0
        full = self._queued_rows >= self.max_batch_size
        if (idle or full) and self._running < self.max_parallel:
            self._cancel_timer()
            self._soon = loop.call_soon(self._flush)
        elif self._timer is None:
            waited = time.monotonic() - self._queue[0].queued
            delay = max(0.0, self.max_latency_s - waited)
            self._timer = loop.call_later(delay, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        if self._running < self.max_parallel:
            self._flush()
        # else: the next batch to finish flushes the queue

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _take(self) -> list[_Item]:
        """The next batch: whole requests of one input layout, up to ``max_batch_size`` rows."""
        batch: list[_Item] = []
        rest: list[_Item] = []
        rows = 0
        key = None
        for item in self._queue:
            if item.future.done():  # cancelled while queued (e.g. the request timed out)
                self._queued_rows -= item.rows
                continue
            if key is None:
                key = item.key
            if item.key == key and (not batch or rows + item.rows <= self.max_batch_size):
                batch.append(item)
                rows += item.rows
                self._queued_rows -= item.rows
            else:
                rest.append(item)
        self._queue = rest
        return batch

    def _flush(self) -> None:
        self._soon = None
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        batch = self._take()
        if batch:
            rows = sum(item.rows for item in batch)
            inputs = _stack(batch)
            if rows <= self.inline_rows:
                self._call(batch, inputs, rows)
            else:
                self._running += 1
                future = loop.run_in_executor(None, self.run, inputs)
                future.add_done_callback(lambda f: self._threaded_done(batch, rows, f))
        self._schedule(loop)

    def _threaded_done(self, batch: list[_Item], rows: int, future: asyncio.Future[Arrays]) -> None:
        self._running -= 1
        exc = future.exception()
        if exc is None:
            self._deliver(batch, future.result(), rows)
        else:
            self._failed(batch, exc)
        self._schedule(asyncio.get_running_loop())

    # -- running and delivering -------------------------------------------------------------

    def _call(self, batch: list[_Item], inputs: Arrays, rows: int) -> None:
        try:
            outputs = self.run(inputs)
        except Exception as exc:
            self._failed(batch, exc)
        else:
            self._deliver(batch, outputs, rows)

    def _failed(self, batch: list[_Item], exc: BaseException) -> None:
        if len(batch) > 1 and self._is_client_error(exc):
            for item in batch:  # one bad request must not fail the others
                if not item.future.done():
                    self._call([item], item.inputs, item.rows)
            return
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    def _deliver(self, batch: list[_Item], outputs: Arrays, rows: int) -> None:
        self._observe(rows, len(batch))
        if len(batch) == 1:
            item = batch[0]
            if not item.future.done():
                item.future.set_result(outputs)
            return
        arrays: dict[str, np.ndarray] = {}
        for name, value in outputs.items():
            arr = np.asarray(value)
            if arr.ndim == 0 or arr.shape[0] != rows:
                error = BatchError(
                    f"output {name!r} has shape {list(arr.shape)} for a batch of {rows} rows"
                )
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                return
            arrays[name] = arr
        start = 0
        for item in batch:
            end = start + item.rows
            if not item.future.done():
                item.future.set_result({name: arr[start:end] for name, arr in arrays.items()})
            start = end


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _stack(batch: list[_Item]) -> Arrays:
    if len(batch) == 1:
        return batch[0].inputs
    names = list(batch[0].inputs)
    return {name: np.concatenate([item.inputs[name] for item in batch]) for name in names}
