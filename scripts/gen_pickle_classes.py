#!/usr/bin/env python3
"""Regenerate the scikit-learn and pandas entries of the pickle allowlist by introspection.

Writes ``src/modelcrate/scan/data/sklearn_classes.json`` and ``pandas_globals.json``: the
classes (``module.qualname``, where each is defined, which is what a pickle names) of every
library version given, merged. Each version is installed with ``pip install --no-deps
--target`` into a throw-away folder under ``/tmp`` and introspected in a child interpreter that
has it first on ``sys.path`` (its numpy/scipy come from the running environment, so pick
versions built for the installed numpy). The installed version is always included::

    python scripts/gen_pickle_classes.py --sklearn 1.4.2 1.5.2 1.6.1 1.7.2 1.8.0 \\
        --pandas 2.2.3 3.0.6

Only run this on a trusted machine: introspection imports the libraries. Nothing here is
imported by modelcrate; the data files are read as data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "src" / "modelcrate" / "scan" / "data"
WORK = Path("/tmp/modelcrate-gen")

# scikit-learn modules that fetch data, run processes or only serve tests: never admitted.
SKLEARN_SKIP = (
    "sklearn.datasets",
    "sklearn.callback",
    "sklearn.externals",
    "sklearn.experimental",
    "sklearn.utils._testing",
    "sklearn.utils.estimator_checks",
    "sklearn.utils.parallel",
    "sklearn.utils.discovery",
    "sklearn.utils._show_versions",
    "sklearn.utils._repr_html",
    "sklearn.utils.fixes",
    "sklearn._build_utils",
    "sklearn.conftest",
    "sklearn.__check_build",
    "sklearn._distributor_init",
)
SKIP_COMPONENTS = frozenset({"tests", "conftest", "_testing", "benchmarks"})

# pandas: the data structures, their dtypes, arrays, indexes, block managers and the scalar
# types of pandas._libs. I/O, computation (eval/numexpr), plotting and pyarrow-backed arrays
# (whose reconstructors wrap unvalidated buffers) are not admitted.
PANDAS_MODULES = (
    "pandas.core.frame",
    "pandas.core.series",
    "pandas.core.indexes",
    "pandas.core.arrays",
    "pandas.core.dtypes.dtypes",
    "pandas.core.internals",
    "pandas.core.flags",
    "pandas._libs.tslibs",
    "pandas._libs.interval",
    "pandas._libs.sparse",
    "pandas._libs.arrays",
    "pandas._libs.internals",
    "pandas._libs.missing",
)
PANDAS_ALIASES = ("pandas", "pandas.arrays", "pandas.api.typing", "pandas.offsets")
PANDAS_SKIP_WORDS = ("arrow", "Arrow", "accessor", "Accessor")


def _skipped(name: str, prefixes: tuple[str, ...]) -> bool:
    if any(name == p or name.startswith(p + ".") for p in prefixes):
        return True
    return any(part in SKIP_COMPONENTS for part in name.split("."))


def _modules(package: str, keep: tuple[str, ...], skip: tuple[str, ...]) -> list[object]:
    import importlib
    import pkgutil

    root = importlib.import_module(package)
    found = []
    names = [package] + [
        m.name for m in pkgutil.walk_packages(root.__path__, package + ".", onerror=lambda _: None)
    ]
    for name in names:
        if _skipped(name, skip) or (keep and not _skipped(name, keep)):
            continue
        try:
            found.append(importlib.import_module(name))
        except Exception as exc:  # optional dependency missing: report, keep going
            print(f"  skip {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return found


def _classes(modules: list[object], aliases: tuple[str, ...] = ()) -> dict[str, type]:
    """Classes defined in ``modules``, under the name a pickle writes: ``__module__`` plus
    ``__qualname__``. A class whose ``__module__`` was rewritten to a public alias (pandas 3
    writes ``pandas.DataFrame``) counts when its code lives in one of ``modules``."""
    files = {getattr(mod, "__file__", None) for mod in modules} - {None}
    out: dict[str, type] = {}
    for mod in modules:
        name = mod.__name__  # type: ignore[attr-defined]
        for attr, obj in vars(mod).items():
            if not isinstance(obj, type) or obj.__qualname__ != attr:
                continue
            if obj.__module__ == name:
                out[f"{name}.{attr}"] = obj
            elif obj.__module__ in aliases and _defined_in(obj, files):
                out[f"{obj.__module__}.{attr}"] = obj
    return out


def _defined_in(cls: type, files: set[str]) -> bool:
    """True when the class's code comes from one of ``files`` (extensions ignored, so a
    compiled module matches the ``.pyx`` its Cython functions name)."""
    mods = {_stem(f) for f in files}
    code = _code_files(cls)
    if not code:  # no functions of its own (Int64Dtype): found in a listed module is enough
        return True
    return any(m.endswith(c) or c.endswith(m) for c in map(_stem, code) for m in mods)


def _stem(path: str) -> str:
    head, _, base = path.replace(os.sep, "/").rpartition("/")
    return f"{head}/{base.split('.', 1)[0]}"


def _code_files(cls: type) -> set[str]:
    """Source files of a class's own Python functions (empty for compiled types)."""
    found = set()
    for value in vars(cls).values():
        func = getattr(value, "__func__", value)
        code = getattr(func, "__code__", None)
        if code is not None:
            found.add(code.co_filename)
    return found


def collect_sklearn() -> dict[str, object]:
    import enum

    import sklearn

    classes = _classes(_modules("sklearn", (), SKLEARN_SKIP))
    return {
        "version": sklearn.__version__,
        "classes": sorted(classes),
        "enums": sorted(n for n, c in classes.items() if issubclass(c, enum.Enum)),
    }


def _pandas_samples() -> list[object]:
    import datetime

    import numpy as np
    import pandas as pd

    df = pd.DataFrame(
        {
            "a": [1, 2, 3],
            "b": ["x", "y", "z"],
            "c": pd.Categorical(["u", "v", "u"]),
            "d": pd.date_range("2024-01-01", periods=3),
            "e": [1.5, None, 2.0],
        }
    )
    return [
        df, df["a"], df.set_index(["a", "b"]), df.set_index("d"), df.T,
        pd.Series(pd.interval_range(0, 3)), pd.Series(pd.period_range("2024-01", periods=2)),
        pd.Series(pd.to_timedelta([1, 2], unit="s")), pd.Series(pd.arrays.SparseArray([0, 1])),
        pd.Series([1, None], dtype="Int64"), pd.Series([1.0, None], dtype="Float64"),
        pd.Series(["a", None], dtype="string"), pd.Series([True, None], dtype="boolean"),
        pd.CategoricalIndex(["a", "b"]), pd.RangeIndex(5), pd.Index([1.5]), pd.Index(["a"]),
        pd.date_range("2024", periods=3, freq="D"), pd.date_range("2024", periods=3, freq="MS"),
        pd.date_range("2024", periods=3, freq="B"), pd.date_range("2024", periods=3, freq="W-MON"),
        pd.date_range("2024", periods=3, freq="h", tz="UTC"), pd.timedelta_range("1D", periods=2),
        pd.period_range("2024", periods=2, freq="Q"), pd.interval_range(0, 2),
        pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-01", tz="UTC"), pd.Timedelta("1D"),
        pd.Period("2024-01", freq="M"), pd.NaT, pd.NA, pd.Interval(0, 1),
        pd.offsets.MonthEnd(2), pd.offsets.Day(), pd.Series([pd.Timestamp(0), pd.NaT]),
        pd.Series(pd.array([1, 2], dtype="UInt8")), pd.Series(pd.Categorical([1], ordered=True)),
        pd.MultiIndex.from_product([["a"], [1, 2]]), pd.Series([datetime.date(2024, 1, 1)]),
        pd.DataFrame(np.zeros((2, 2)), columns=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)])),
        pd.Series(np.array([1, 2], dtype="datetime64[s]")), pd.DataFrame({"x": [1]}).astype(
            "Sparse[int]"), pd.Series([1 + 2j]), pd.Series([b"a"]),
    ]  # fmt: skip


def _trace_pickles(samples: list[object]) -> tuple[set[str], set[str], set[str]]:
    """(globals named, globals called, globals instantiated with __new__) over protocols 0-5."""
    import io
    import pickle

    named: set[str] = set()
    called: set[str] = set()
    newed: set[str] = set()
    ids: dict[int, str] = {}

    class Tracer(pickle._Unpickler):  # type: ignore[name-defined,misc]
        dispatch = pickle._Unpickler.dispatch.copy()  # type: ignore[attr-defined]

        def find_class(self, module: str, name: str) -> object:
            obj = super().find_class(module, name)
            named.add(f"{module}.{name}")
            ids[id(obj)] = f"{module}.{name}"
            return obj

        def load_reduce(self) -> None:
            called.add(ids.get(id(self.stack[-2]), "?"))
            pickle._Unpickler.load_reduce(self)  # type: ignore[attr-defined]

        def load_newobj(self) -> None:
            newed.add(ids.get(id(self.stack[-2]), "?"))
            pickle._Unpickler.load_newobj(self)  # type: ignore[attr-defined]

        dispatch[pickle.REDUCE[0]] = load_reduce
        dispatch[pickle.NEWOBJ[0]] = load_newobj

    for obj in samples:
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            Tracer(io.BytesIO(pickle.dumps(obj, protocol=proto))).load()
    return named, called, newed


def collect_pandas() -> dict[str, object]:
    import pandas as pd

    classes = {
        n
        for n in _classes(_modules("pandas", PANDAS_MODULES, ()), PANDAS_ALIASES)
        if not any(w in n for w in PANDAS_SKIP_WORDS)
    }
    named, called, _ = _trace_pickles(_pandas_samples())
    pandas_named = {
        n for n in named if n.startswith("pandas.") and not any(w in n for w in PANDAS_SKIP_WORDS)
    }
    missing = sorted(n for n in pandas_named if n not in classes and "pyx_unpickle" not in n)
    return {
        "version": pd.__version__,
        "classes": sorted(classes),
        # observed called, plus every date offset and dtype: they all pickle as cls(*args)
        "called": sorted(
            n
            for n in classes
            if n in called or n.startswith("pandas._libs.tslibs.offsets.") or n.endswith("Dtype")
        ),
        "functions": sorted(n for n in pandas_named if n not in classes and _is_function(n)),
        "values": sorted(n for n in pandas_named if n not in classes and not _is_function(n)),
        "named_outside_modules": missing,
    }


def _is_function(full: str) -> bool:
    import importlib

    module, _, name = full.rpartition(".")
    return callable(getattr(importlib.import_module(module), name))


def _run_child(package: str, version: str) -> dict[str, object]:
    target = WORK / f"{package}-{version}"
    if not target.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary", ":all:",
             "--target", str(target), f"{'scikit-learn' if package == 'sklearn' else package}=="
             f"{version}"],
            check=True,
        )  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run(
        [sys.executable, __file__, "--collect", package],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    sys.stderr.write(out.stderr)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def _merge(results: list[dict[str, object]], keys: tuple[str, ...]) -> dict[str, object]:
    merged: dict[str, object] = {
        "generated_by": "scripts/gen_pickle_classes.py",
        "versions": sorted({str(r["version"]) for r in results}),
    }
    for key in keys:
        merged[key] = sorted({n for r in results for n in r[key]})  # type: ignore[attr-defined]
    return merged


def _write(name: str, data: dict[str, object]) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"wrote {path} ({', '.join(data['versions'])})")  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collect", choices=("sklearn", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument("--sklearn", nargs="*", default=[], metavar="VERSION")
    parser.add_argument("--pandas", nargs="*", default=[], metavar="VERSION")
    args = parser.parse_args()
    if args.collect:
        data = collect_sklearn() if args.collect == "sklearn" else collect_pandas()
        print(json.dumps(data))
        return
    sk = [collect_sklearn()] + [_run_child("sklearn", v) for v in args.sklearn]
    _write("sklearn_classes.json", _merge(sk, ("classes", "enums")))
    pd_ = [collect_pandas()] + [_run_child("pandas", v) for v in args.pandas]
    _write("pandas_globals.json", _merge(pd_, ("classes", "called", "functions", "values")))


if __name__ == "__main__":
    main()
