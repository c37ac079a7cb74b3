"""The restricted unpickler: benign models load and predict the same; attacks never run.

No scan runs before these loads: the unpickler must refuse on its own ("even if the scanner
were bypassed"). Each attack would create a marker file if any of its code executed.
"""

from __future__ import annotations

import os
import pathlib
import pickle
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelcrate.errors import InputError
from modelcrate.formats import PickleRefusedError, safe_load_joblib, safe_load_pickle
from modelcrate.scan import Policy
from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Location, Severity
from tests.scan.picklegen import P, call, glob, lit

COMPRESSIONS = [0, ("zlib", 3), ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)]


class Exploit:
    """Runs ``os.system`` when unpickled by a plain unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


class Custom:
    """An unknown (not allowlisted) class: refused unless a policy admits it."""

    def __init__(self) -> None:
        self.value = 42


@pytest.fixture(scope="module")
def pipeline() -> tuple[Pipeline, pd.DataFrame]:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {"x": rng.normal(size=60), "y": rng.normal(size=60), "c": rng.choice(["a", "b"], 60)}
    )
    ct = ColumnTransformer(
        [("n", StandardScaler(), ["x", "y"]), ("c", OneHotEncoder(handle_unknown="ignore"), ["c"])]
    )
    model = Pipeline([("ct", ct), ("m", LogisticRegression())]).fit(df, df["x"] > 0)
    return model, df


@pytest.mark.parametrize("compress", COMPRESSIONS, ids=lambda c: str(c[0] if c else "none"))
def test_joblib_every_compression_loads_and_predicts_the_same(
    tmp_path: Path, pipeline: tuple[Pipeline, pd.DataFrame], compress: object
) -> None:
    model, df = pipeline
    path = tmp_path / "model.joblib"
    joblib.dump(model, path, compress=compress)
    loaded = safe_load_joblib(path)
    assert isinstance(loaded, Pipeline)
    np.testing.assert_array_equal(loaded.predict_proba(df), model.predict_proba(df))


def test_plain_pickle_of_trees_and_neighbors_loads(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3))
    y = (x[:, 0] > 0).astype(int)
    for model in (
        RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y),
        KNeighborsClassifier(algorithm="kd_tree").fit(x, y),
    ):
        data = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        loaded = safe_load_pickle(data, path="m.pkl")
        np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))  # type: ignore[attr-defined]
        # the joblib loader reads plain pickles too
        (tmp_path / "m.pkl").write_bytes(data)
        assert type(safe_load_joblib(tmp_path / "m.pkl")) is type(model)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_malicious_pickle_is_refused_at_find_class_and_never_runs(
    tmp_path: Path, protocol: int
) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps(Exploit(marker), protocol=protocol)
    with pytest.raises(PickleRefusedError) as err:
        safe_load_pickle(data, path="evil.pkl")
    assert "os.system" in err.value.message or "posix.system" in err.value.message
    assert "nothing was executed" in err.value.message
    assert err.value.path == "evil.pkl"
    assert err.value.exit_code == 2
    assert not marker.exists()


@pytest.mark.parametrize("compress", [0, ("zlib", 3), ("xz", 3)], ids=str)
def test_malicious_joblib_is_refused_for_every_compression(
    tmp_path: Path, compress: object
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.joblib"
    joblib.dump({"model": Exploit(marker)}, path, compress=compress)
    with pytest.raises(PickleRefusedError, match="system"):
        safe_load_joblib(path)
    assert not marker.exists()


def test_attack_inside_a_joblib_object_array_is_refused(tmp_path: Path) -> None:
    """joblib stores object arrays as a nested pickle after the array header."""
    marker = tmp_path / "pwned"
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = "benign", Exploit(marker)
    path = tmp_path / "arr.joblib"
    joblib.dump(arr, path)
    with pytest.raises(PickleRefusedError, match="system"):
        safe_load_joblib(path)
    assert not marker.exists()


def test_unknown_class_is_refused_unless_the_policy_admits_it() -> None:
    data = pickle.dumps(Custom())
    with pytest.raises(PickleRefusedError, match="not in the allowlist"):
        safe_load_pickle(data, path="c.pkl")
    policy = Policy(allow_globals=frozenset({f"{__name__}.Custom"}))
    loaded = safe_load_pickle(data, path="c.pkl", policy=policy)
    assert isinstance(loaded, Custom)
    assert loaded.value == 42


def test_policy_never_admits_os() -> None:
    policy = Policy(allow_globals=frozenset({"os.*", "os.system"}))
    with pytest.raises(PickleRefusedError):
        safe_load_pickle(pickle.dumps(Exploit(Path("/nonexistent/x"))), path="e", policy=policy)


def test_build_on_a_class_is_refused() -> None:
    """GLOBAL pathlib.PurePath + BUILD {'evil': 1} would set a class attribute."""
    data = glob("pathlib", "PurePath") + b"(S'evil'\nI1\nd" + b"b" + P.STOP
    with pytest.raises(PickleRefusedError, match="BUILD"):
        safe_load_pickle(data, path="b.pkl")
    assert not hasattr(pathlib.PurePath, "evil")


def test_persistent_ids_are_refused() -> None:
    with pytest.raises(PickleRefusedError, match="persistent id"):
        safe_load_pickle(b"P1\n.", path="p.pkl")


def test_codec_arguments_are_checked_at_call_time() -> None:
    benign = P.PROTO2 + call(glob("_codecs", "encode"), lit("abc"), lit("latin1")) + P.STOP
    assert safe_load_pickle(benign, path="ok.pkl") == b"abc"
    odd = P.PROTO2 + call(glob("_codecs", "encode"), lit("abc"), lit("rot13")) + P.STOP
    with pytest.raises(PickleRefusedError, match="codec"):
        safe_load_pickle(odd, path="odd.pkl")


def test_corrupt_stream_is_an_input_error_not_a_crash() -> None:
    good = pickle.dumps({"a": [1, 2, 3]}, protocol=2)
    with pytest.raises(InputError, match="cannot unpickle") as err:
        safe_load_pickle(good[:-5], path="cut.pkl")
    assert not isinstance(err.value, PickleRefusedError)
    assert err.value.hint


def test_forged_joblib_array_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.joblib"
    joblib.dump(np.zeros(4), path, protocol=2)  # no frames: bytes can be spliced
    data = path.read_bytes()
    # the wrapper's shape tuple (4,) is pickled as BININT1 4 + TUPLE1: claim 2**40 elements
    forged = data.replace(b"K\x04\x85", b"\x8a\x06\x00\x00\x00\x00\x00\x01\x85", 1)
    assert forged != data
    path.write_bytes(forged)
    with pytest.raises(PickleRefusedError, match="claims"):
        safe_load_joblib(path)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        safe_load_joblib(tmp_path / "nope.joblib")


# -- the callables model at load time (issue 9, item 2): same rules through the joblib reader


REGISTRY: dict[str, object] = {"kept": "safe"}  # a module-level dict a policy prefix admits


@pytest.mark.parametrize(
    ("name", "data", "why"),
    [
        (
            "dtype_singleton_build",
            P.PROTO2
            + call(glob("numpy", "dtype"), lit("f8"))
            + lit((3, ">", None, None, None, -1, -1, 0))
            + P.BUILD
            + P.STOP,
            "numpy.dtype",
        ),
        (
            "chainmap_keeps_a_lookup",
            P.PROTO2
            + call(glob("collections", "ChainMap"), call(glob("uuid", "SafeUUID"), lit(0)))
            + P.STOP,
            "keep a reference",
        ),
        ("bytearray", P.PROTO2 + call(glob("builtins", "bytearray"), lit(10**12)) + P.STOP, "1e12"),
    ],
)
def test_joblib_reader_applies_the_same_rules(
    tmp_path: Path, name: str, data: bytes, why: str
) -> None:
    path = tmp_path / f"{name}.joblib"
    path.write_bytes(data)
    with pytest.raises(PickleRefusedError, match="nothing was executed") as err:
        safe_load_joblib(path)
    if why != "1e12":
        assert why in err.value.message
    assert np.dtype("f8").byteorder == "="


def test_policy_admits_code_but_not_writes_through_its_module_state() -> None:
    policy = Policy(allow_globals=frozenset({f"{__name__}.*"}))
    data = P.PROTO2 + call(glob("collections", "ChainMap"), glob(__name__, "REGISTRY"))
    data += lit("kept") + lit("evil") + P.SETITEM + P.STOP
    with pytest.raises(PickleRefusedError, match="module-level object"):
        safe_load_pickle(data, path="policy.pkl", policy=policy)
    assert REGISTRY == {"kept": "safe"}
    ctx = ScanContext(policy=policy)  # the scanner, under the same policy, agrees
    ctx.scan_blob(data, Location("policy.pkl"), 0, name="policy.pkl")
    assert max(f.severity for f in ctx.findings) >= Severity.HIGH
    # the policy still admits its classes the way pickles use them
    assert safe_load_pickle(pickle.dumps(Custom()), path="c.pkl", policy=policy).value == 42


def test_a_module_is_never_returned_even_when_the_policy_names_it() -> None:
    policy = Policy(allow_globals=frozenset({"json.*"}))
    with pytest.raises(PickleRefusedError, match="it is a module"):
        safe_load_pickle(P.PROTO2 + glob("json", "decoder") + P.STOP, path="m.pkl", policy=policy)
