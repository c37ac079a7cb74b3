"""One test per pickle technique class of THREATS.md (sections A and B, plus #20, #21, #34, #35).

Every attack sample is built from opcodes in code; nothing here is ever unpickled.
"""

from __future__ import annotations

import base64
import struct

import pytest

from modelcrate.scan.findings import Severity
from tests.scan.picklegen import (
    P,
    binbytes,
    call,
    frame,
    framed,
    get,
    glob,
    inst,
    lit,
    put,
    rules,
    scan_bytes,
    sglob,
    short_binstring,
    string0,
    symbols,
    worst,
)

HIGH = Severity.HIGH
CRITICAL = Severity.CRITICAL


def _reduce_payload(module: str, name: str, *args: object, proto: int = 2) -> bytes:
    ref = sglob(module, name) if proto >= 4 else glob(module, name)
    head = b"\x80" + bytes([proto]) if proto >= 2 else b""
    return head + call(ref, *(lit(a) for a in args)) + P.STOP


def _assert_critical(data: bytes, symbol: str, name: str = "model.pkl") -> None:
    findings = scan_bytes(data, name)
    assert worst(findings) == CRITICAL, [str(f.to_dict()) for f in findings]
    assert symbol in symbols(findings, CRITICAL)


# -- A. callables missing from denylists ---------------------------------------------------------


@pytest.mark.parametrize("proto", [0, 2, 3, 4, 5])
@pytest.mark.parametrize(
    ("module", "name", "expected"),
    [
        ("os", "system", "os.system"),
        ("posix", "system", "posix.system"),
        ("nt", "system", "nt.system"),
        ("subprocess", "run", "subprocess.run"),
        ("builtins", "eval", "builtins.eval"),
        ("__builtin__", "exec", "builtins.exec"),
    ],
)
def test_t01_baseline_reduce(proto: int, module: str, name: str, expected: str) -> None:
    data = _reduce_payload(module, name, "id", proto=proto)
    findings = scan_bytes(data)
    assert expected in symbols(findings, CRITICAL)
    message = next(f.message for f in findings if f.symbol == expected)
    assert "calls it via REDUCE" in message


def test_t02_inst_and_obj_with_pop() -> None:
    _assert_critical(inst("__builtin__", "exec", string0("print(1)")) + P.STOP, "builtins.exec")
    # OBJ whose result is discarded by POP, then an innocent None is returned
    obj = P.MARK + glob("smtplib", "SMTP") + lit("127.0.0.1") + P.OBJ + P.POP + P.NONE + P.STOP
    findings = scan_bytes(P.PROTO2 + obj)
    assert worst(findings) is not None
    assert worst(findings) >= HIGH
    assert "smtplib.SMTP" in symbols(findings)
    assert any("OBJ" in f.message for f in findings if f.symbol == "smtplib.SMTP")


STDLIB_GADGETS = [
    ("runpy", "_run_code"),
    ("timeit", "timeit"),
    ("cProfile", "run"),
    ("profile", "run"),
    ("trace", "Trace.run"),
    ("bdb", "Bdb.run"),
    ("pdb", "run"),
    ("code", "InteractiveInterpreter.runcode"),
    ("doctest", "debug_script"),
    ("idlelib.pyshell", "ModifiedInterpreter.runcode"),
    ("lib2to3.pgen2.grammar", "Grammar.loads"),
    ("ensurepip", "_run_pip"),
    ("pydoc", "pipepager"),
    ("venv", "create"),
    ("pip", "main"),
    ("numpy.testing._private.utils", "runstring"),
    ("numpy.f2py.crackfortran", "getlincoef"),
    ("distutils.file_util", "write_file"),
    ("uuid", "_get_command_stdout"),
    ("_osx_support", "_read_output"),
    ("_aix_support", "_read_cmd_output"),
    ("imaplib", "IMAP4_stream"),
    ("_pyrepl.pager", "pipe_pager"),
    ("test.support.script_helper", "assert_python_ok"),
    ("asyncio.unix_events", "_UnixSubprocessTransport._start"),
    ("multiprocessing.util", "spawnv_passfds"),
    ("ctypes", "CDLL"),
    ("pty", "spawn"),
]


@pytest.mark.parametrize(("module", "name"), STDLIB_GADGETS)
def test_t03_stdlib_code_exec_gadgets(module: str, name: str) -> None:
    findings = scan_bytes(_reduce_payload(module, name, "x", proto=4))
    assert worst(findings) is not None
    assert worst(findings) >= HIGH
    assert f"{module}.{name}" in symbols(findings)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("logging", "FileHandler"),
        ("_io", "FileIO"),
        ("urllib.request", "urlopen"),
        ("ssl", "get_server_certificate"),
        ("requests", "get"),
        ("aiohttp", "ClientSession"),
        ("http.client", "HTTPSConnection"),
        ("socket", "create_connection"),
        ("webbrowser", "open"),
        ("pandas.io.parsers.readers", "read_csv"),
    ],
)
def test_t04_file_and_network_gadgets(module: str, name: str) -> None:
    findings = scan_bytes(_reduce_payload(module, name, "http://x", proto=2))
    assert worst(findings) is not None
    assert worst(findings) >= HIGH
    assert f"{module}.{name}" in symbols(findings)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("torch.utils.collect_env", "run"),
        ("torch.utils.collect_env", "run_and_read_all"),
        ("torch._inductor.codecache", "compile_file"),
        ("torch.utils.bottleneck.__main__", "run_cprofile"),
        ("torch._dynamo.guards", "GuardBuilder.get"),
        ("torch.fx.experimental.symbolic_shapes", "ShapeEnv.evaluate_guards_expression"),
        ("torch.jit.unsupported_tensor_ops", "execWrapper"),
        ("torch.utils._config_module", "ConfigModule.load_config"),
        ("torch.utils.data.datapipes.utils.decoder", "basichandlers"),
        ("torch", "load"),
    ],
)
def test_t05_torch_internal_gadgets(module: str, name: str) -> None:
    findings = scan_bytes(_reduce_payload(module, name, "x", proto=2))
    assert worst(findings) is not None
    assert worst(findings) >= HIGH
    assert f"{module}.{name}" in symbols(findings)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("mlflow.projects.backend.local", "_run_entry_point"),
        ("transformers.models.auto.auto_factory", "getattribute_from_module"),
        ("cloudpickle.cloudpickle", "_make_function"),
        ("cloudpickle.cloudpickle", "_builtin_type"),
    ],
)
def test_t06_third_party_gadgets(module: str, name: str) -> None:
    findings = scan_bytes(_reduce_payload(module, name, "attacker/repo", proto=2))
    assert worst(findings) is not None
    assert worst(findings) >= HIGH


def test_t07_attribute_and_import_resolvers() -> None:
    # (a) pkgutil.resolve_name('os:system')('id'): the call on a computed value is flagged too
    resolved = call(glob("pkgutil", "resolve_name"), lit("os:system"))
    findings = scan_bytes(P.PROTO2 + call(resolved, lit("id")) + P.STOP)
    assert "pkgutil.resolve_name" in symbols(findings, CRITICAL)
    assert any(f.rule_id == "pickle.call" and f.severity >= HIGH for f in findings)
    # (b) importlib.import_module + inspect.getattr_static, 'system' only as a SHORT_BINSTRING
    mod = call(glob("importlib", "import_module"), short_binstring("os"))
    attr = call(glob("inspect", "getattr_static"), mod, short_binstring("system"))
    findings = scan_bytes(P.PROTO2 + call(attr, lit("id")) + P.STOP)
    assert worst(findings) == CRITICAL
    # (c) builtins.__import__ + builtins.getattr
    imp = call(glob("builtins", "__import__"), lit("os"))
    findings = scan_bytes(P.PROTO2 + call(call(glob("builtins", "getattr"), imp, lit("system")),
                                          lit("id")) + P.STOP)  # fmt: skip
    assert {"builtins.__import__", "builtins.getattr"} <= symbols(findings, CRITICAL)
    # (d) _operator.methodcaller on a module object, (e) pydoc.locate
    caller = call(glob("_operator", "methodcaller"), lit("system"), lit("id"))
    located = call(glob("pydoc", "locate"), lit("os"))
    findings = scan_bytes(P.PROTO2 + call(caller, located) + P.STOP)
    assert {"_operator.methodcaller", "pydoc.locate"} <= symbols(findings, HIGH)
    assert worst(findings) == CRITICAL
    # (f) importlib.util.find_spec, (g) types.FunctionType / marshal.loads
    for module, name in [("importlib.util", "find_spec"), ("types", "FunctionType"),
                         ("marshal", "loads")]:  # fmt: skip
        findings = scan_bytes(_reduce_payload(module, name, "x"))
        assert (worst(findings) or Severity.INFO) >= HIGH, (module, name)


def test_t08_names_built_at_runtime() -> None:
    # "os" = ''.join(['o','s']) through builtins.getattr(str, 'join'), then STACK_GLOBAL on it
    join = call(glob("builtins", "getattr"), glob("builtins", "str"), lit("join"))
    name_os = call(join, lit(""), lit(["o", "s"]))
    data = P.PROTO4 + name_os + lit("system") + P.STACK_GLOBAL + P.MARK + lit("id") + P.TUPLE
    data += P.REDUCE + P.STOP
    findings = scan_bytes(data)
    assert "pickle.dynamic-global" in rules(findings, CRITICAL)
    assert worst(findings) == CRITICAL


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("pathlib", "os.system"),
        ("shutil", "os.system"),
        ("numpy", "__builtins__"),
        ("builtins", "print.__class__.__base__.__subclasses__"),
        ("collections", "OrderedDict.__init__.__globals__"),
    ],
)
def test_t09_dotted_attribute_names(module: str, name: str) -> None:
    findings = scan_bytes(_reduce_payload(module, name, "id", proto=4))
    assert worst(findings) is not None
    assert worst(findings) >= HIGH
    assert f"{module}.{name}" in symbols(findings)


def test_t10_build_on_allowlisted_object_and_memo_confusion() -> None:
    body = glob("numpy", "prod") + put(0) + lit({"a": "os"}) + P.BUILD + P.POP
    body += get(0) + lit({"b": "system"}) + P.BUILD + P.POP
    body += glob("numpy", "prod.a") + put(1) + P.POP + glob("numpy", "prod.b") + put(2) + P.POP
    body += get(1) + get(2) + P.STACK_GLOBAL + P.MARK + lit("id") + P.TUPLE + P.REDUCE + P.STOP
    findings = scan_bytes(P.PROTO4 + body)
    assert "pickle.attribute-injection" in rules(findings, CRITICAL)
    assert "pickle.dynamic-global" in rules(findings, CRITICAL)


def test_t11_numpy_builtins_and_build_on_function() -> None:
    # modelscan #330 shape: numpy.size gets attributes, numpy.__builtins__ reaches eval
    body = sglob("numpy", "size") + lit({"__name__": "eval"}) + P.BUILD + P.POP
    body += call(sglob("numpy", "__builtins__"), lit("eval")) + P.STOP
    findings = scan_bytes(P.PROTO4 + body)
    assert "pickle.attribute-injection" in rules(findings, CRITICAL)
    assert "numpy.__builtins__" in symbols(findings, CRITICAL)


def test_t12_nested_pickle_in_pickle() -> None:
    inner = _reduce_payload("os", "system", "id", proto=2)
    for wrap in (
        lit(inner),  # protocol 3+ bytes literal
        call(glob("_codecs", "encode"), lit(inner.decode("latin-1")), lit("latin1")),  # proto 2
        call(glob("base64", "b64decode"), lit(base64.b64encode(inner).decode())),
    ):
        for loader in (("pickle", "loads"), ("_pickle", "loads"),
                       ("torch.storage", "_load_from_bytes")):  # fmt: skip
            findings = scan_bytes(P.PROTO4 + call(glob(*loader), wrap) + P.STOP)
            assert "pickle.nested" in rules(findings, HIGH)
            nested = [f for f in findings if f.location.members]
            assert any(f.symbol == "os.system" and f.severity == CRITICAL for f in nested)


def test_t13_scanner_deactivation() -> None:
    for module, name in [("picklescan.scanner", "scan_pickle_bytes"), ("modelscan", "ModelScan"),
                         ("fickling", "always_check_safety"), ("modelaudit", "scan")]:  # fmt: skip
        findings = scan_bytes(_reduce_payload(module, name, None))
        assert (worst(findings) or Severity.INFO) >= HIGH, module


def test_t14_long_tail_gadgets_are_not_admitted() -> None:
    # an allowlist-based machine fails closed on gadgets nobody has listed yet
    findings = scan_bytes(_reduce_payload("some_vendor.internal", "Gadget.run", "x", proto=4))
    assert worst(findings) is not None
    assert worst(findings) >= HIGH


# -- B. parser differentials and stream tricks ----------------------------------------------------


def test_t15_broken_stream_after_payload() -> None:
    data = P.PROTO2 + call(glob("os", "system"), lit("id")) + b"\xff\xfe garbage"
    findings = scan_bytes(data)
    assert "os.system" in symbols(findings, CRITICAL)
    malformed = [f for f in findings if f.rule_id == "pickle.malformed"]
    assert malformed
    assert malformed[0].severity >= HIGH
    assert malformed[0].location.offset == len(data) - len(b"\xff\xfe garbage")
    # no STOP at all
    assert "os.system" in symbols(scan_bytes(P.PROTO2 + call(glob("os", "system"), lit("id"))))


def test_t16_frame_boundary_divergence() -> None:
    # memo 1 = "os", 11 = "collections", 2 = "system", 12 = "OrderedDict"
    setup = lit("os") + put(1) + lit("collections") + put(11) + lit("system") + put(2)
    setup += lit("OrderedDict") + put(12) + P.POP + P.POP + P.POP + P.POP
    # a GET whose index line crosses the frame end: pickle.loads reads "11", the C file
    # reader (torch.load on BytesIO) drops the in-frame "1" and reads "1".
    body = P.PROTO4 + frame(len(setup)) + setup
    body += frame(2) + b"g1" + b"1\n" + frame(2) + b"g1" + b"2\n"
    body += P.STACK_GLOBAL + P.EMPTY_TUPLE + P.REDUCE + P.STOP
    findings = scan_bytes(body)
    assert "pickle.frame-violation" in rules(findings, HIGH)
    assert "os.system" in symbols(findings, CRITICAL)
    # BINBYTES that claims more than its frame holds (fickling's recipe)
    payload = call(glob("os", "system"), lit("id")) + P.POP
    head = b"B" + struct.pack("<I", len(payload))
    data = P.PROTO5 + frame(len(head) + 3) + head + payload + P.NONE + P.STOP
    findings = scan_bytes(data)
    assert "pickle.frame-violation" in rules(findings, HIGH)


def test_t17_memo_abuse_in_stack_global_operands() -> None:
    # (a) decoys PUT then POPped, real strings fetched with GET
    data = P.PROTO4 + lit("collections") + put(0) + P.POP + lit("os") + put(0) + P.POP
    data += lit("system") + put(1) + P.POP + get(0) + get(1) + P.STACK_GLOBAL
    data += P.MARK + lit("id") + P.TUPLE + P.REDUCE + P.STOP
    assert "os.system" in symbols(scan_bytes(data), CRITICAL)
    # (b) GET of a key that was never stored: malformed, what came before is still reported
    data = P.PROTO4 + call(sglob("os", "system"), lit("id")) + get(9) + P.STOP
    findings = scan_bytes(data)
    assert "os.system" in symbols(findings, CRITICAL)
    assert "pickle.malformed" in rules(findings, HIGH)
    # (c) an int from the memo as an operand
    data = P.PROTO4 + lit(7) + put(0) + P.POP + get(0) + lit("system") + P.STACK_GLOBAL + P.STOP
    assert "pickle.dynamic-global" in rules(scan_bytes(data), CRITICAL)
    # (d) STRING / BINSTRING / SHORT_BINSTRING operands are strings to the loader
    for s_mod, s_name in [(string0("os"), string0("system")),
                          (b"T" + struct.pack("<i", 2) + b"os", short_binstring("system")),
                          (short_binstring("os"), short_binstring("system"))]:  # fmt: skip
        data = P.PROTO4 + s_mod + s_name + P.STACK_GLOBAL + P.STOP
        assert "os.system" in symbols(scan_bytes(data), CRITICAL)
    # (e) STACK_GLOBAL as the third opcode, no PROTO
    data = lit("os") + lit("system") + P.STACK_GLOBAL + P.STOP
    assert "os.system" in symbols(scan_bytes(data), CRITICAL)


def test_t18_multiple_concatenated_pickles() -> None:
    benign = P.PROTO2 + lit({"weights": [1, 2, 3]}) + P.STOP
    evil = _reduce_payload("os", "system", "id", proto=4)
    findings = scan_bytes(benign + evil)
    assert "os.system" in symbols(findings, CRITICAL)
    assert "pickle.multiple-streams" in rules(findings)


def test_t19_billion_laughs_expansion() -> None:
    body = P.PROTO2 + P.EMPTY_LIST + put(0)
    for level in range(1, 40):
        body += P.MARK + get(level - 1) * 10 + P.LIST + put(level)
    body += P.STOP
    findings = scan_bytes(body)
    assert "pickle.expansion" in rules(findings, HIGH)


# -- C. legacy torch ------------------------------------------------------------------------------

_MAGIC = 0x1950A86A20F9469CFC6C


def _legacy(first: bytes, obj: bytes, keys: bytes = b"") -> bytes:
    sys_info = lit({"protocol_version": 1001, "little_endian": True})
    keys = keys or P.PROTO2 + lit(["0"]) + P.STOP
    storages = struct.pack("<q", 4) + b"\x00" * 16
    return (first + P.PROTO2 + lit(1001) + P.STOP + P.PROTO2 + sys_info + P.STOP + obj + keys
            + storages)  # fmt: skip


def test_t20_legacy_stacked_pickles_payload_in_object_pickle() -> None:
    magic = P.PROTO2 + lit(_MAGIC) + P.STOP
    evil = _reduce_payload("os", "system", "id")
    findings = scan_bytes(_legacy(magic, evil), "model.pt")
    assert "os.system" in symbols(findings, CRITICAL)
    # the storage-keys pickle (5th) is scanned as well
    keys_evil = _reduce_payload("subprocess", "run", "id")
    benign_obj = P.PROTO2 + lit({"w": 1}) + P.STOP
    findings = scan_bytes(_legacy(magic, benign_obj, keys_evil), "model.pt")
    assert "subprocess.run" in symbols(findings, CRITICAL)


def test_t21_legacy_magic_number_from_reduce() -> None:
    magic = P.PROTO2 + call(glob("builtins", "eval"), lit(hex(_MAGIC))) + P.STOP
    benign_obj = P.PROTO2 + lit({"w": 1}) + P.STOP
    keys_evil = _reduce_payload("os", "system", "id")
    findings = scan_bytes(_legacy(magic, benign_obj, keys_evil), "model.pt")
    assert {"builtins.eval", "os.system"} <= symbols(findings, CRITICAL)


# -- D. joblib ------------------------------------------------------------------------------------


def _wrapper(dtype: str, shape: tuple[int, ...], elsize: int = -1, flags: int = 0) -> bytes:
    """A joblib NumpyArrayWrapper built and BUILT as joblib writes it (protocol 4)."""
    dtype_call = call(sglob("numpy", "dtype"), lit(dtype), lit(False), lit(True))
    dtype_state = lit((3, "<", None, None, None, elsize, -1, flags))
    state = P.MARK + lit("subclass") + sglob("numpy", "ndarray") + lit("shape") + lit(shape)
    state += lit("order") + lit("C") + lit("dtype") + dtype_call + dtype_state + P.BUILD
    state += lit("allow_mmap") + lit(True) + lit("numpy_array_alignment_bytes") + lit(16) + P.DICT
    return (
        sglob("joblib.numpy_pickle", "NumpyArrayWrapper")
        + P.EMPTY_TUPLE
        + P.NEWOBJ
        + state
        + P.BUILD
    )


def test_t34_joblib_inline_array_desync() -> None:
    # the raw array bytes (which start with an invalid opcode) sit in the middle of the stream
    array = b"\xff" * 24
    data = P.PROTO4 + P.EMPTY_DICT + lit("a_weights") + _wrapper("f8", (3,))
    data += bytes([4]) + b"\x00" * 4 + array + P.SETITEM
    data += lit("z_payload") + call(sglob("os", "system"), lit("id")) + P.SETITEM + P.STOP
    findings = scan_bytes(data, "model.joblib")
    assert "os.system" in symbols(findings, CRITICAL)
    assert "pickle.malformed" not in rules(findings)


def test_t35_joblib_object_array_nested_pickle() -> None:
    inner = _reduce_payload("os", "system", "id", proto=4)
    data = P.PROTO4 + P.EMPTY_DICT + lit("obj") + _wrapper("O8", (1,), flags=63) + inner
    data += P.SETITEM + lit("after") + call(sglob("subprocess", "run"), lit("x")) + P.SETITEM
    data += P.STOP
    findings = scan_bytes(data, "model.joblib")
    assert {"os.system", "subprocess.run"} <= symbols(findings, CRITICAL)
    assert "pickle.malformed" not in rules(findings)


def test_framed_helper_matches_protocol_layout() -> None:
    data = framed(lit("x") + P.STOP)
    assert data[:2] == b"\x80\x04"
    assert data[2] == 0x95
    assert binbytes(b"ab") == b"B\x02\x00\x00\x00ab"
