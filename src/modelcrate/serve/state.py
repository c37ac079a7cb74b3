"""The one model a server process holds: loaded at start, warmed up, then shared by every route.

Readiness is earned, not assumed: ``ready`` turns True only after a warm-up prediction through
the same conversion path as real requests succeeded. Every route predicts through the adaptive
batcher (``serve.batching``) unless ``max_batch_size`` is 1: batches of a few rows run inline on
the event loop (microseconds; a thread hop would cost more than the work), larger ones in a
worker thread so that one big request does not stall the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from modelcrate.serve.batching import Batcher, BatchError
from modelcrate.serve.codec import Codec, PredictionFailed, predict_arrays

if TYPE_CHECKING:
    from modelcrate.runtime import Predictor
    from modelcrate.serve.metrics import Metrics
    from modelcrate.serve.model import ModelInfo

log = logging.getLogger("modelcrate.serve")

INLINE_ROWS = 64  # up to this many rows, predict on the event loop


class NotReady(RuntimeError):
    """The model is not loaded, or its warm-up prediction failed."""


class ServingState:
    """Model identity, codec and predictor; mutated only by :meth:`load` at start-up."""

    def __init__(self, info: ModelInfo, loader: Callable[[], Predictor], metrics: Metrics) -> None:
        self.info = info
        self.codec = Codec(info.signature, info.name)
        self.metrics = metrics
        self._loader = loader
        self.predictor: Predictor | None = None
        self.ready = False
        self.reason = "the model is loading"
        self.load_seconds: float | None = None
        self.batcher: Batcher | None = None

    def load(self) -> None:
        """Load the predictor once, then warm it up. A load failure raises (the server must not
        start); a warm-up failure leaves the server up but not ready, with the reason."""
        started = time.perf_counter()
        self.predictor = self._loader()
        if not self.codec.fast_path:  # every request needs the validators: compile them now
            _ = self.codec.schema
        try:
            inputs = self.codec.warmup_inputs()
            outputs = predict_arrays(self.predictor, inputs)
            self.codec.to_predictions(outputs, 1)
        except PredictionFailed as exc:
            self.ready = False
            self.reason = f"warm-up prediction failed: {exc}"
            log.error("model %s is not ready: %s", self.info.name, self.reason)
        else:
            self.ready = True
            self.reason = "ready"
        self.load_seconds = time.perf_counter() - started
        self.metrics.set_ready(self.ready)
        if self.info.max_batch_size > 1:
            predictor = self.predictor
            self.batcher = Batcher(
                lambda inputs: predict_arrays(predictor, dict(inputs)),
                max_batch_size=self.info.max_batch_size,
                max_latency_s=self.info.max_latency_ms / 1000,
                inline_rows=INLINE_ROWS,
                is_client_error=lambda exc: isinstance(exc, PredictionFailed) and exc.client_error,
                observe=self.metrics.observe_batch,
            )

    def unload(self) -> None:
        self.ready = False
        self.reason = "the server is shutting down"
        self.metrics.set_ready(False)
        self.predictor = None

    async def predict(self, inputs: dict[str, np.ndarray], rows: int) -> Mapping[str, Any]:
        """Run the model on converted inputs; raises :class:`NotReady` or ``PredictionFailed``."""
        predictor = self.predictor
        if not self.ready or predictor is None:
            raise NotReady(self.reason)
        if self.batcher is not None:
            try:
                outputs = await self.batcher.submit(inputs, rows)
            except BatchError as exc:
                raise PredictionFailed(str(exc)) from None
        elif rows <= INLINE_ROWS:
            outputs = predict_arrays(predictor, inputs)
            self.metrics.observe_batch(rows, 1)
        else:
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(None, predict_arrays, predictor, inputs)
            self.metrics.observe_batch(rows, 1)
        self.metrics.observe_rows(rows)
        return outputs
