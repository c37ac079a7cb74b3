"""Fixtures: real crates (built once per session) and in-process apps over them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelcrate.serve import create_app, open_predictor, read_model_info
from modelcrate.serve.fast import ServingApp
from tests.serve import crates
from tests.serve.asgi import AppClient
from tests.serve.crates import Built


def predictor_for(built: Built) -> Any:
    """The crate's real predictor (modelcrate.runtime), as the server loads it."""
    return open_predictor(read_model_info(built.crate_dir))


def make_app(built: Built) -> ServingApp:
    return create_app(built.crate_dir)


@pytest.fixture(scope="session")
def crate_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crates")


@pytest.fixture(scope="session")
def iris(crate_root: Path) -> Built:
    return crates.iris(crate_root)


@pytest.fixture(scope="session")
def churn(crate_root: Path) -> Built:
    return crates.mixed(crate_root)


@pytest.fixture(scope="session")
def houses(crate_root: Path) -> Built:
    return crates.regressor(crate_root)


@pytest.fixture(scope="module")
def iris_client(iris: Built) -> Iterator[AppClient]:
    with AppClient(make_app(iris)) as client:
        yield client


@pytest.fixture(scope="module")
def churn_client(churn: Built) -> Iterator[AppClient]:
    with AppClient(make_app(churn)) as client:
        yield client


@pytest.fixture(scope="module")
def houses_client(houses: Built) -> Iterator[AppClient]:
    with AppClient(make_app(houses)) as client:
        yield client
