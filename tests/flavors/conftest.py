"""Small real training data for the flavor tests (seeded, built in memory)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session")
def mixed() -> tuple[pd.DataFrame, np.ndarray]:
    """Numeric columns (with missing values) and a categorical string column; string labels."""
    rng = np.random.default_rng(7)
    n = 240
    df = pd.DataFrame(
        {
            "age": rng.normal(40, 12, n),
            "income": rng.lognormal(10, 0.5, n),
            "city": rng.choice(["paris", "lyon", "nice", "lille"], n),
        }
    )
    df.loc[rng.random(n) < 0.08, "age"] = np.nan
    score = (df["age"].fillna(40) - 40) / 12 + (df["city"] == "paris") * 1.5
    y = np.where(score + rng.normal(0, 0.5, n) > 0.3, "churn", "stay")
    return df, y


@pytest.fixture(scope="session")
def numeric() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x`` [n, 4], a 3-class target and a regression target."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(240, 4))
    cls = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 0.8).astype(int)
    reg = x @ np.array([3.0, -2.0, 1.0, 0.5]) + rng.normal(0, 0.1, 240) + 10
    return x, cls, reg


@pytest.fixture(autouse=True, scope="session")
def _one_openmp_thread() -> Iterator[None]:
    """OpenMP spin-waits make HistGradientBoosting/LightGBM fits seconds slow on a busy
    2-core machine; one thread keeps these tiny fits in milliseconds."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield
