"""Allowlisted globals that act or allocate (issue 9, item 2), in the scanner and the loader.

Each sample only uses globals that were (or are) on the allowlist, the way an attacker would:
a lookup whose result BUILD then modifies (``logging.getLogger("")`` + ``{"disabled": 1}``),
a constructor that keeps a reference to a module-level object and writes through it
(``ChainMap``), constructors whose arguments allocate or compute without bound
(``bytearray(10**12)``, ``list(range(10**10))``, ``Fraction("1e999999999")``), and the
variants of each class. For every sample the scanner must fail the default gate and the
restricted unpickler must refuse it before it runs; benign neighbours of the same shapes pass
both.
"""

from __future__ import annotations

import pytest

from modelcrate.scan.findings import Severity
from tests.scan.gatecheck import load_in_child, scan_blocks
from tests.scan.picklegen import P, call, glob, lit, rules, scan_bytes, symbols, worst

PROTO = P.PROTO2


def _s(body: bytes) -> bytes:
    return PROTO + body + P.STOP


def _range(n: int) -> bytes:
    return call(glob("builtins", "range"), lit(n))


DTYPE_STATE = lit((3, ">", None, None, None, -1, -1, 0))

# name -> pickle; every one must be blocked by the scan and refused by the loader
ATTACKS: dict[str, bytes] = {
    # -- a looked-up object modified by BUILD / SETITEM ----------------------------------------
    "getLogger_build_disabled": _s(
        call(glob("logging", "getLogger"), lit("")) + lit({"disabled": 1}) + P.BUILD
    ),
    "dtype_singleton_build": _s(call(glob("numpy", "dtype"), lit("f8")) + DTYPE_STATE + P.BUILD),
    "layout_singleton_build": _s(
        call(glob("torch.serialization", "_get_layout"), lit("torch.strided"))
        + lit({"x": 1})
        + P.BUILD
    ),
    "enum_member_build": _s(call(glob("uuid", "SafeUUID"), lit(0)) + lit({"x": 1}) + P.BUILD),
    "enum_member_via_newobj": _s(
        glob("uuid", "SafeUUID") + lit((0,)) + P.NEWOBJ + lit({"x": 1}) + P.BUILD
    ),
    "tensor_setitem": _s(
        call(
            glob("torch._utils", "_rebuild_meta_tensor_no_storage"),
            glob("torch", "float32"),
            lit((2,)),
            lit((1,)),
            lit(False),
        )
        + lit(0)
        + lit(1)
        + P.SETITEM
    ),
    # -- a module-level object kept by a constructor that writes through it --------------------
    "chainmap_module_dict": _s(
        call(glob("collections", "ChainMap"), glob("sklearn.metrics._scorer", "_SCORERS"))
        + lit("accuracy")
        + lit(None)
        + P.SETITEM
    ),
    "chainmap_keeps_a_lookup": _s(
        call(glob("collections", "ChainMap"), call(glob("numpy", "dtype"), lit("f8")))
    ),
    "chainmap_build_maps_lookup": _s(
        glob("collections", "ChainMap")
        + P.EMPTY_TUPLE
        + P.NEWOBJ
        + P.MARK
        + lit("maps")
        + P.MARK
        + call(glob("torch.serialization", "_get_layout"), lit("torch.strided"))
        + P.LIST
        + P.DICT
        + P.BUILD
    ),
    "partial_keeps_a_lookup": _s(
        call(
            glob("functools", "partial"),
            glob("numpy", "log1p"),
            call(glob("uuid", "SafeUUID"), lit(0)),
        )
    ),
    # -- constructors that allocate or compute without bound ------------------------------------
    "bytearray_1e12": _s(call(glob("builtins", "bytearray"), lit(10**12))),
    "bytes_1e12": _s(call(glob("builtins", "bytes"), lit(10**12))),
    "list_range_1e10": _s(call(glob("builtins", "list"), _range(10**10))),
    "tuple_range_1e10": _s(call(glob("builtins", "tuple"), _range(10**10))),
    "deque_range_1e10": _s(call(glob("collections", "deque"), _range(10**10))),
    "counter_range_1e10": _s(call(glob("collections", "Counter"), _range(10**10))),
    "torch_size_range": _s(call(glob("torch", "Size"), _range(10**10))),
    "fraction_exponent": _s(call(glob("fractions", "Fraction"), lit("1e999999999"))),
    "fraction_negative_exponent": _s(call(glob("fractions", "Fraction"), lit("1e-99999999"))),
    "decimal_exponent": _s(call(glob("decimal", "Decimal"), lit("1E999999999"))),
    "decimal_tuple_exponent": _s(call(glob("decimal", "Decimal"), lit((0, (1,), 999999999)))),
    "int_digits": _s(call(glob("builtins", "int"), lit("9" * 5000))),
    "numpy_reconstruct_shape": _s(
        call(
            glob("numpy.core.multiarray", "_reconstruct"),
            glob("numpy", "ndarray"),
            lit((10**6, 10**6)),
            lit(b"b"),
        )
    ),
    "copyreg_base_allocates": _s(
        call(
            glob("copyreg", "_reconstructor"),
            glob("collections", "OrderedDict"),
            glob("builtins", "bytearray"),
            lit(10**12),
        )
    ),
    "newobj_ndarray_shape": _s(glob("numpy", "ndarray") + lit((10**6, 10**6)) + P.NEWOBJ),
    "allocation_budget": _s(
        P.MARK
        + b"".join(call(glob("builtins", "list"), _range(1 << 20)) for _ in range(5))
        + P.TUPLE
    ),
    "codec_by_name": _s(call(glob("builtins", "str"), lit(b"x"), lit("rot13"))),
    # a lazy sequence stored for whatever iterates it later (numpy, pandas, the model)
    "bare_range_1e12": _s(_range(10**12)),
    # bounds hold for arguments bound now and used later, and for keyword arguments
    "partial_binds_allocation": _s(
        call(glob("functools", "partial"), glob("builtins", "bytearray"), lit(10**12))
    ),
    "partial_state_binds_allocation": _s(
        call(glob("functools", "partial"), glob("builtins", "bytearray"))
        + P.MARK
        + glob("builtins", "bytearray")
        + lit((10**12,))
        + lit(None)
        + lit(None)
        + P.TUPLE
        + P.BUILD
    ),
    "newobj_ex_keyword_exponent": _s(
        glob("decimal", "Decimal") + P.EMPTY_TUPLE + lit({"value": "1e999999999"}) + P.NEWOBJ_EX
    ),
    # -- allowlisted names used in ways their libraries never write ----------------------------
    "ufunc_called": _s(call(glob("numpy", "add"), lit(1), lit(2))),
    "layer_init_called": _s(
        call(glob("torch.nn.modules.linear", "Linear"), lit(100_000), lit(100_000))
    ),
    "storage_class_called": _s(call(glob("torch", "FloatStorage"), lit(10**9))),
}

# benign neighbours: the same globals used the way their libraries write them
BENIGN: dict[str, bytes] = {
    "dtype_copy_build": _s(
        call(glob("numpy", "dtype"), lit("f8"), lit(False), lit(True)) + DTYPE_STATE + P.BUILD
    ),
    "chainmap_literal_setitem": _s(
        call(glob("collections", "ChainMap"), lit({"a": 1})) + lit("b") + lit(2) + P.SETITEM
    ),
    "ordered_dict_setitems": _s(
        glob("collections", "OrderedDict")
        + P.EMPTY_TUPLE
        + P.REDUCE
        + P.MARK
        + lit("a")
        + lit(1)
        + P.SETITEMS
    ),
    "list_small_range": _s(call(glob("builtins", "list"), _range(10))),
    "bytearray_from_bytes": _s(call(glob("builtins", "bytearray"), lit(b"abc"))),
    "fraction_and_decimal": _s(
        call(glob("fractions", "Fraction"), lit("3/4"))
        + call(glob("decimal", "Decimal"), lit("1.50"))
        + P.TUPLE2
    ),
    "enum_member_lookup": _s(call(glob("uuid", "SafeUUID"), lit(0))),
    "partial_of_a_ufunc": _s(call(glob("functools", "partial"), glob("numpy", "log1p"))),
}


@pytest.fixture(scope="module")
def loaded() -> dict[str, object]:
    return load_in_child({**ATTACKS, **BENIGN})


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_is_blocked_by_the_scan(name: str) -> None:
    assert scan_blocks(ATTACKS[name]), [
        (f.severity.name, f.rule_id, f.message) for f in scan_bytes(ATTACKS[name])
    ]


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_is_refused_by_the_restricted_unpickler(
    name: str, loaded: dict[str, object]
) -> None:
    outcome = str(loaded[name])
    assert outcome.startswith("refused"), outcome
    assert "nothing was executed" in outcome or "was not made" in outcome


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_benign_neighbour_passes_both(name: str, loaded: dict[str, object]) -> None:
    findings = scan_bytes(BENIGN[name])
    assert not scan_blocks(BENIGN[name]), [(f.severity.name, f.message) for f in findings]
    assert loaded[name] == "loaded"


def test_process_state_is_untouched(loaded: dict[str, object]) -> None:
    state = loaded["__state__"]
    assert state == {"root_logger_disabled": False, "float64_byteorder": "="}


def test_getlogger_is_not_admitted_and_reports_what_it_reaches() -> None:
    findings = scan_bytes(ATTACKS["getLogger_build_disabled"])
    assert "logging.getLogger" in symbols(findings, Severity.CRITICAL)


def test_lookups_modified_by_build_are_attribute_injection() -> None:
    for name in ("dtype_singleton_build", "layout_singleton_build", "enum_member_build"):
        findings = scan_bytes(ATTACKS[name])
        assert "pickle.attribute-injection" in rules(findings, Severity.CRITICAL), name


def test_allocation_findings_name_the_bound() -> None:
    for name, words in (
        ("bytearray_1e12", "allocates 1000000000000 bytes"),
        ("list_range_1e10", "a range of 10000000000 items"),
        ("fraction_exponent", "exponent over"),
        ("int_digits", "5000-character number"),
    ):
        messages = [f.message for f in scan_bytes(ATTACKS[name]) if f.rule_id == "pickle.call"]
        assert any(words in m for m in messages), (name, messages)


def test_scanner_and_unpickler_agree_on_every_sample(loaded: dict[str, object]) -> None:
    for name, data in {**ATTACKS, **BENIGN}.items():
        assert scan_blocks(data) == (loaded[name] != "loaded"), (name, loaded[name])


def test_worst_is_reported_once_per_sample_not_per_opcode() -> None:
    findings = scan_bytes(ATTACKS["allocation_budget"])
    budget = [f for f in findings if "per stream" in f.message]
    assert len(budget) == 1
    assert worst(findings) == Severity.HIGH
