"""Property tests: arbitrary and mutated pickles never crash, hang or escape as exceptions."""

from __future__ import annotations

import pickle

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Location, Severity
from modelcrate.scan.limits import Limits
from modelcrate.scan.pickle_scan import looks_like_pickle, scan_pickle
from tests.scan.picklegen import install_globals_stub

install_globals_stub()

_LIMITS = Limits(max_pickle_ops=20_000, max_pickles_per_stream=8)
_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        | st.frozensets(st.integers(), max_size=3)
    ),
    max_leaves=12,
)


def _scan(data: bytes) -> ScanContext:
    ctx = ScanContext(limits=_LIMITS)
    fmt = scan_pickle(data, Location("fuzz.pkl"), ctx, 0)
    assert fmt in {"pickle", "joblib", "pytorch-legacy"}
    return ctx


@_SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data: bytes) -> None:
    _scan(data)
    looks_like_pickle(data)
    _scan(b"\x80\x04" + data)


@_SETTINGS
@given(
    _VALUES,
    st.integers(min_value=0, max_value=pickle.HIGHEST_PROTOCOL),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6),
    st.integers(min_value=0),
)
def test_mutated_real_pickles_never_raise(
    value: object, proto: int, flips: list[tuple[int, int]], cut: int
) -> None:
    original = pickle.dumps(value, protocol=proto)
    assert [f for f in _scan(original).findings if f.severity >= Severity.HIGH] == []
    data = bytearray(original)
    for pos, byte in flips:
        data[pos % len(data)] = byte
    mutated = bytes(data[: max(1, cut % (len(data) + 1))])
    ctx = _scan(mutated)
    if mutated != original:
        # a damaged stream is either still complete or reported; never silently dropped
        assert all(f.location.path == "fuzz.pkl" for f in ctx.findings)


@_SETTINGS
@given(st.binary(min_size=1, max_size=60), st.integers(1, 30))
def test_repeated_fragments_stay_bounded(fragment: bytes, times: int) -> None:
    ctx = _scan(b"\x80\x02" + fragment * times)
    assert len(ctx.findings) < 10_000
