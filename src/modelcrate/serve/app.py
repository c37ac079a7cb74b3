"""Building the server of one crate: ``build_app``/``create_app`` give the ASGI app
(``serve.fast.ServingApp``).

``create_app(crate_dir)`` reads and verifies the manifest now (the routes and schemas come from
its signature) and loads the predictor once, in the app's lifespan, followed by a warm-up
prediction. Request bodies are validated straight from bytes by the compiled signature types
and responses are written by orjson: no Pydantic model is built per request. Hot routes never
touch FastAPI (see ``serve.fast``); ``serve.docs_app`` builds the FastAPI app on demand.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from modelcrate.errors import InputError
from modelcrate.serve.limits import Gate, Limits
from modelcrate.serve.metrics import Metrics
from modelcrate.serve.model import ModelInfo, open_predictor, read_model_info
from modelcrate.serve.state import ServingState

if TYPE_CHECKING:
    from modelcrate.runtime import Predictor
    from modelcrate.serve.fast import ServingApp

CRATE_ENV = "MODELCRATE_SERVE_CRATE"  # the crate folder, for `uvicorn --factory` (app factory)


def create_app(crate_dir: Path) -> ServingApp:
    """The service of the crate at ``crate_dir`` (its model is loaded when the app starts)."""
    info = read_model_info(Path(crate_dir))
    return build_app(info, lambda: open_predictor(info))


def create_app_from_env() -> ServingApp:
    """App factory for ``uvicorn --factory modelcrate.serve.app:create_app_from_env``: the crate
    folder from ``$MODELCRATE_SERVE_CRATE``, limits from ``$MODELCRATE_SERVE_LIMITS``."""
    crate = os.environ.get(CRATE_ENV)
    if not crate:
        raise InputError(f"{CRATE_ENV} is not set", hint="run 'modelcrate serve NAME|DIR'")
    return create_app(Path(crate))


def build_app(
    info: ModelInfo, loader: Callable[[], Predictor], limits: Limits | None = None
) -> ServingApp:
    """The app for ``info``; ``loader`` returns the predictor and runs once, at start-up.
    ``limits`` default to those ``modelcrate serve`` set for its workers, else the defaults."""
    from modelcrate.serve.fast import ServingApp

    metrics = Metrics(info)
    gate = Gate(limits if limits is not None else Limits.from_env())
    state = ServingState(info, loader, metrics)
    return ServingApp(state, gate, title=f"{info.name} (modelcrate)")
