"""Verdicts for pickle globals: the allowlist tiers, every dangerous category, dotted names,
Python 2 names, the policy, and "a substring is not a match".

These tests only classify names; nothing named here is imported or unpickled.
"""

from __future__ import annotations

import time

import pytest

from modelcrate.scan.findings import Severity
from modelcrate.scan.pickle_allowlist import (
    ARG_CALLABLES,
    HF_ALLOWED,
    ML_LIBS_ALLOWED,
    NUMPY_ALLOWED,
    STDLIB_ALLOWED,
    TORCH_ALLOWED,
)
from modelcrate.scan.pickle_denylist import DANGEROUS_NAMES
from modelcrate.scan.pickle_globals import (
    ARGS_CHECKED,
    GlobalVerdict,
    check_reconstruct_args,
    classify_global,
    normalize,
)
from modelcrate.scan.policy import Policy

NO_POLICY = Policy()


def verdict(full: str, policy: Policy = NO_POLICY) -> GlobalVerdict:
    """Classify ``"module:qualname"`` (a colon separates module and qualname)."""
    module, _, name = full.partition(":")
    return classify_global(module, name, policy)


# ------------------------------------------------------------------------ allowlist tiers

ALLOWED = [
    # tier 1: torch
    "collections:OrderedDict",
    "collections:Counter",
    "torch._utils:_rebuild_tensor_v2",
    "torch._utils:_rebuild_parameter",
    "torch._utils:_rebuild_parameter_with_state",
    "torch._utils:_rebuild_qtensor",
    "torch._tensor:_rebuild_from_type_v2",
    "torch:FloatStorage",
    "torch:BFloat16Storage",
    "torch.storage:UntypedStorage",
    "torch:Size",
    "torch:device",
    "torch:float32",
    "torch:float8_e4m3fn",
    "torch:per_tensor_affine",
    "torch.nn.parameter:Parameter",
    "torch.serialization:_get_layout",
    "torch.cuda:FloatTensor",
    "_codecs:encode",
    "builtins:bytearray",
    "builtins:set",
    "builtins:complex",
    "torch.nn.modules.container:Sequential",
    "torch.nn.modules.linear:Linear",
    "torch.nn.modules.conv:Conv2d",
    "torch.nn.modules.activation:ReLU",
    "torch.nn.modules.batchnorm:BatchNorm2d",
    "torch.nn.modules.rnn:LSTM",
    "torch.nn.modules.sparse:Embedding",
    "torch.nn.modules.dropout:Dropout",
    "torch.nn.modules.normalization:LayerNorm",
    "torch.nn.modules.transformer:TransformerEncoderLayer",
    # tier 2: numpy, both spellings
    "numpy.core.multiarray:_reconstruct",
    "numpy._core.multiarray:_reconstruct",
    "numpy.core.multiarray:scalar",
    "numpy._core.multiarray:scalar",
    "numpy.core.numeric:_frombuffer",
    "numpy._core.numeric:_frombuffer",
    "numpy:ndarray",
    "numpy:dtype",
    "numpy:float64",
    "numpy.dtypes:Float64DType",
    "numpy.random._pickle:__randomstate_ctor",
    "numpy.random._pickle:__generator_ctor",
    "numpy.random._pickle:__bit_generator_ctor",
    "numpy.random._mt19937:MT19937",
    "numpy.random._pcg64:PCG64",
    "numpy.random.mtrand:RandomState",
    "numpy.random._generator:Generator",
    "numpy:log1p",
    "numpy:exp",
    "numpy:sqrt",
    # tier 3: sklearn (rule and exact), scipy, joblib, xgboost, lightgbm
    "sklearn.linear_model._logistic:LogisticRegression",
    "sklearn.ensemble._forest:RandomForestClassifier",
    "sklearn.tree._tree:Tree",
    "sklearn.ensemble._hist_gradient_boosting.binning:_BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor:TreePredictor",
    "sklearn._loss.loss:HalfBinomialLoss",
    "sklearn._loss._loss:CyHalfBinomialLoss",
    "sklearn.utils._bunch:Bunch",
    "sklearn.compose._column_transformer:ColumnTransformer",
    "sklearn.pipeline:Pipeline",
    "sklearn.preprocessing._function_transformer:FunctionTransformer",
    "sklearn.neighbors._kd_tree:newObj",
    "sklearn.metrics._dist_metrics:EuclideanDistance64",
    "scipy.sparse._csr:csr_matrix",
    "scipy.sparse.csr:csr_matrix",
    "scipy.sparse._coo:coo_array",
    "joblib.numpy_pickle:NumpyArrayWrapper",
    "xgboost.sklearn:XGBClassifier",
    "xgboost.core:Booster",
    "lightgbm.sklearn:LGBMClassifier",
    "lightgbm.basic:Booster",
    # stdlib value types
    "datetime:datetime",
    "datetime:timezone",
    "decimal:Decimal",
    "collections:defaultdict",
    "collections:deque",
    "argparse:Namespace",
    "pathlib:PurePosixPath",
    "pathlib:PosixPath",
    "pathlib:WindowsPath",
    "uuid:UUID",
    "builtins:slice",
    "builtins:range",
    "builtins:frozenset",
    "builtins:object",
    "copyreg:_reconstructor",
    "copyreg:__newobj__",
    "functools:partial",  # only with an allowlisted target: see arg_callables
    # Hugging Face Trainer side files
    "transformers.training_args:TrainingArguments",
    "transformers.training_args:OptimizerNames",
    "transformers.trainer_utils:IntervalStrategy",
    "transformers.trainer_utils:SaveStrategy",
    "accelerate.state:PartialState",
    "accelerate.utils.dataclasses:DistributedType",
    "trl.trainer.sft_config:SFTConfig",
    "sentence_transformers.training_args:SentenceTransformerTrainingArguments",
    "tokenizers:Tokenizer",
]


@pytest.mark.parametrize("full", ALLOWED)
def test_allowlisted_tiers(full: str) -> None:
    v = verdict(full)
    assert (v.severity, v.category) == (Severity.INFO, "allowlisted"), v.reason


def test_arg_callables_recorded_for_callables_that_call_arguments() -> None:
    assert verdict("copyreg:_reconstructor").arg_callables == (0, 1)
    assert verdict("copy_reg:_reconstructor").arg_callables == (0, 1)
    assert verdict("copyreg:__newobj__").arg_callables == (0,)
    assert verdict("functools:partial").arg_callables == (0,)
    assert verdict("torch._tensor:_rebuild_from_type_v2").arg_callables == (0, 1)
    assert verdict("numpy.random._pickle:__randomstate_ctor").arg_callables == (0, 1)
    assert verdict("sklearn.neighbors._ball_tree:newObj").arg_callables == (0,)
    assert verdict("_codecs:encode").arg_callables == (ARGS_CHECKED,)
    assert verdict("collections:OrderedDict").arg_callables == ()
    for name in ARG_CALLABLES:
        module, _, qual = name.rpartition(".")
        assert classify_global(module, qual, NO_POLICY).severity == Severity.INFO, name


# ------------------------------------------------------------------ dangerous categories

DANGEROUS = [
    # process execution
    ("os:system", "process execution"),
    ("posix:system", "process execution"),
    ("nt:system", "process execution"),
    ("subprocess:Popen", "process execution"),
    ("subprocess:run", "process execution"),
    ("pty:spawn", "process execution"),
    ("commands:getoutput", "process execution"),
    ("multiprocessing.util:spawnv_passfds", "process execution"),
    ("asyncio.unix_events:_UnixSubprocessTransport._start", "process execution"),
    ("uuid:_get_command_stdout", "process execution"),
    ("_osx_support:_read_output", "process execution"),
    ("_aix_support:_read_cmd_output", "process execution"),
    ("webbrowser:open", "process execution"),
    ("platform:popen", "process execution"),
    ("torch.utils.collect_env:run", "code execution"),
    # code execution
    ("builtins:eval", "code execution"),
    ("builtins:exec", "code execution"),
    ("builtins:compile", "code execution"),
    ("builtins:breakpoint", "code execution"),
    ("builtins:input", "code execution"),
    ("builtins:apply", "code execution"),
    ("builtins:execfile", "code execution"),
    ("runpy:_run_code", "code execution"),
    ("timeit:timeit", "code execution"),
    ("cProfile:run", "code execution"),
    ("profile:runctx", "code execution"),
    ("trace:Trace.run", "code execution"),
    ("pdb:run", "code execution"),
    ("bdb:Bdb.run", "code execution"),
    ("code:InteractiveInterpreter.runcode", "code execution"),
    ("doctest:debug_script", "code execution"),
    ("idlelib.pyshell:ModifiedInterpreter.runcode", "code execution"),
    ("lib2to3.pgen2.grammar:Grammar.loads", "code execution"),
    ("pydoc:pipepager", "code execution"),
    ("types:CodeType", "code execution"),
    ("types:FunctionType", "code execution"),
    ("marshal:loads", "code execution"),
    ("numpy.testing._private.utils:runstring", "code execution"),
    ("numpy.f2py.crackfortran:getlincoef", "code execution"),
    ("torch._inductor.codecache:compile_file", "code execution"),
    ("torch._dynamo.guards:GuardBuilder.get", "code execution"),
    ("torch.fx.experimental.symbolic_shapes:ShapeEnv.evaluate_guards_expression", "code"),
    ("torch.jit.unsupported_tensor_ops:execWrapper", "code execution"),
    ("torch.utils.bottleneck.__main__:run_cprofile", "code execution"),
    ("torch.jit:load", "code execution"),
    ("mlflow.projects.backend.local:_run_entry_point", "code execution"),
    ("test.support.script_helper:assert_python_ok", "code execution"),
    ("builtins:type", "dynamic class"),
    ("collections:namedtuple", "dynamic class"),
    # import machinery
    ("builtins:__import__", "import machinery"),
    ("importlib:import_module", "import machinery"),
    ("importlib.util:find_spec", "import machinery"),
    ("importlib.util:module_from_spec", "import machinery"),
    ("pkgutil:resolve_name", "import machinery"),
    ("inspect:getattr_static", "import machinery"),
    ("_frozen_importlib:_load", "import machinery"),
    ("torch.hub:load", "import machinery"),
    ("torch.package:PackageImporter", "import machinery"),
    ("transformers.models.auto.auto_factory:getattribute_from_module", "import machinery"),
    # attribute resolvers / call gadgets
    ("builtins:getattr", "attribute resolver"),
    ("builtins:setattr", "attribute resolver"),
    ("builtins:delattr", "attribute resolver"),
    ("builtins:vars", "attribute resolver"),
    ("builtins:globals", "attribute resolver"),
    ("builtins:locals", "attribute resolver"),
    ("operator:attrgetter", "attribute resolver"),
    ("_operator:methodcaller", "attribute resolver"),
    ("operator:itemgetter", "attribute resolver"),
    ("functools:reduce", "attribute resolver"),
    ("string:Formatter", "attribute resolver"),
    ("pydoc:locate", "code execution"),
    # pickle recursion
    ("pickle:loads", "pickle recursion"),
    ("_pickle:loads", "pickle recursion"),
    ("cPickle:loads", "pickle recursion"),
    ("dill:loads", "pickle recursion"),
    ("cloudpickle.cloudpickle:_make_function", "pickle recursion"),
    ("joblib:load", "pickle recursion"),
    ("torch:load", "pickle recursion"),
    ("torch.serialization:load", "pickle recursion"),
    ("torch.storage:_load_from_bytes", "pickle recursion"),
    ("torch.utils._config_module:ConfigModule.load_config", "code execution"),
    ("torch.utils.data.datapipes.utils.decoder:basichandlers", "pickle recursion"),
    ("numpy:load", "pickle recursion"),
    ("numpy.lib.npyio:load", "pickle recursion"),
    ("pandas:read_pickle", "pickle recursion"),
    ("shelve:open", "pickle recursion"),
    # network
    ("socket:create_connection", "network"),
    ("ssl:get_server_certificate", "network"),
    ("urllib.request:urlopen", "network"),
    ("urllib2:urlopen", "network"),
    ("http.client:HTTPSConnection", "network"),
    ("httplib:HTTPSConnection", "network"),
    ("requests.api:get", "network"),
    ("aiohttp.client:ClientSession", "network"),
    ("smtplib:SMTP", "network"),
    ("imaplib:IMAP4_stream", "network"),
    ("ftplib:FTP", "network"),
    ("xmlrpc.client:ServerProxy", "network"),
    ("pandas.io.parsers.readers:read_csv", "network"),
    ("pandas:read_csv", "network"),
    # filesystem
    ("builtins:open", "filesystem"),
    ("io:open", "filesystem"),
    ("_io:FileIO", "filesystem"),
    ("shutil:rmtree", "filesystem"),
    ("shutil:copy", "filesystem"),
    ("tempfile:mktemp", "filesystem"),
    ("logging:FileHandler", "filesystem"),
    ("logging.config:listen", "filesystem"),
    ("distutils.file_util:write_file", "filesystem"),
    ("tarfile:open", "filesystem"),
    ("zipfile:ZipFile", "filesystem"),
    ("glob:glob", "filesystem"),
    ("sqlite3:connect", "filesystem"),
    ("numpy:fromfile", "filesystem"),
    ("numpy:memmap", "filesystem"),
    # FFI
    ("ctypes:CDLL", "foreign function"),
    ("_ctypes:dlopen", "foreign function"),
    ("mmap:mmap", "foreign function"),
    ("numpy.ctypeslib:load_library", "foreign function"),
    # package installation
    ("pip:main", "package installation"),
    ("pip._internal.cli.main:main", "package installation"),
    ("ensurepip:_run_pip", "package installation"),
    ("venv:create", "package installation"),
    # interpreter state
    ("sys:modules", "interpreter or process state"),
    ("gc:get_objects", "interpreter or process state"),
    ("signal:signal", "interpreter or process state"),
    ("threading:Thread", "interpreter or process state"),
    ("atexit:register", "interpreter or process state"),
    ("weakref:finalize", "interpreter or process state"),
    # scanner deactivation
    ("picklescan.scanner:scan_pickle_bytes", "scanner deactivation"),
    ("modelscan.modelscan:ModelScan", "scanner deactivation"),
    ("fickling.analysis:check_safety", "scanner deactivation"),
    ("modelaudit.core:scan_model_directory_or_file", "scanner deactivation"),
    ("modelcrate.scan.pickle_globals:classify_global", "scanner deactivation"),
]


@pytest.mark.parametrize(("full", "category"), DANGEROUS)
def test_dangerous_categories(full: str, category: str) -> None:
    v = verdict(full)
    assert (v.severity, v.category) == (Severity.CRITICAL, "dangerous"), v.reason
    assert category in v.reason


def test_dangerous_wins_over_the_policy_and_the_policy_cannot_admit_it() -> None:
    trusting = Policy(allow_globals=frozenset({"torch.*", "pickle.loads", "functools.reduce"}))
    for full in ("torch:load", "torch.jit:load", "pickle:loads", "functools:reduce"):
        assert verdict(full, trusting).severity == Severity.CRITICAL, full


def test_exact_allow_and_deny_lists_are_disjoint() -> None:
    allowed = TORCH_ALLOWED | NUMPY_ALLOWED | ML_LIBS_ALLOWED | STDLIB_ALLOWED | HF_ALLOWED
    assert not {a.lower() for a in allowed} & set(DANGEROUS_NAMES)


# -------------------------------------------------------------------------- dotted names


@pytest.mark.parametrize(
    "full",
    [
        "shutil:os.system",  # modelcrate's own corpus p15
        "pathlib:os.system",  # benign module, attribute reaches os
        "numpy:__builtins__",  # modelscan #330
        "numpy:core.multiarray.__builtins__",
        "builtins:print.__class__.__base__.__subclasses__",
        "torch:jit.load",  # a dangerous module reached as an attribute
        "torch:serialization.load",
        "numpy:testing._private.utils.runstring",
        "collections:OrderedDict.__init__.__globals__",
        "sklearn.pipeline:Pipeline.__reduce__",
        "pathlib:Path.write_text",
        "numpy:prod.a.__class__",
        "torch:os",
    ],
)
def test_dotted_names_reaching_dangerous_attributes_are_critical(full: str) -> None:
    v = verdict(full)
    assert (v.severity, v.category) == (Severity.CRITICAL, "dangerous"), v.reason


@pytest.mark.parametrize(
    "full",
    [
        "numpy:prod.a",  # modelscan #85: a BUILD-planted attribute of an allowlisted function
        "collections:OrderedDict.fromkeys",
        "sklearn.pipeline:Pipeline.fit",
        "torch.nn.modules.linear:Linear.forward",
    ],
)
def test_dotted_names_off_allowlisted_objects_are_unknown(full: str) -> None:
    v = verdict(full)
    assert (v.severity, v.category) == (Severity.HIGH, "unknown"), v.reason
    assert "dotted name" in v.reason


def test_dotted_names_need_an_exact_policy_entry() -> None:
    prefix = Policy(allow_globals=frozenset({"mypkg.*"}))
    exact = Policy(allow_globals=frozenset({"mypkg.Net.Inner"}))
    assert verdict("mypkg:Net", prefix).category == "policy"
    assert verdict("mypkg:Net.Inner", prefix).severity == Severity.HIGH
    assert verdict("mypkg:Net.Inner", exact).category == "policy"
    assert verdict("mypkg:Net.os.system", prefix).severity == Severity.CRITICAL


# ----------------------------------------------------------------------- py2 -> py3 names


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (("__builtin__", "eval"), ("builtins", "eval")),
        (("__builtin__", "set"), ("builtins", "set")),
        (("__builtin__", "xrange"), ("builtins", "range")),
        (("__builtin__", "unicode"), ("builtins", "str")),
        (("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")),
        (("cPickle", "loads"), ("pickle", "loads")),
        (("commands", "getoutput"), ("subprocess", "getoutput")),
        (("exceptions", "ValueError"), ("builtins", "ValueError")),
        (("numpy", "ndarray"), ("numpy", "ndarray")),
    ],
)
def test_py2_names_are_normalized(raw: tuple[str, str], expected: tuple[str, str]) -> None:
    assert normalize(*raw) == expected


def test_py2_spellings_classify_like_py3() -> None:
    assert verdict("__builtin__:eval").severity == Severity.CRITICAL
    assert verdict("__builtin__:getattr").severity == Severity.CRITICAL
    assert verdict("__builtin__:set").severity == Severity.INFO
    assert verdict("__builtin__:object").severity == Severity.INFO
    assert verdict("__builtin__:xrange").severity == Severity.INFO
    assert verdict("copy_reg:_reconstructor").severity == Severity.INFO
    assert verdict("commands:getoutput").severity == Severity.CRITICAL


# ----------------------------------------------------------------------- policy and unknown


def test_policy_allow_admits_unknown_globals_as_policy() -> None:
    policy = Policy(allow_globals=frozenset({"mypkg.models.Net", "ultralytics.nn.*"}))
    v = verdict("mypkg.models:Net", policy)
    assert (v.severity, v.category) == (Severity.INFO, "policy")
    assert verdict("ultralytics.nn.modules.block:C2f", policy).category == "policy"
    assert verdict("mypkg.models:Other", policy).severity == Severity.HIGH


def test_unknown_globals_are_high_with_an_actionable_reason() -> None:
    for full in ("mypkg.models:Net", "__main__:Net", "ultralytics.nn.modules.block:C2f"):
        v = verdict(full)
        assert (v.severity, v.category) == (Severity.HIGH, "unknown"), full
        assert "policy file" in v.reason


def test_substring_is_not_a_match() -> None:
    # modelscan matches names by substring: these would be CRITICAL there.
    for full in (
        "builtins:getattribute_evil",
        "builtins:evaluate",
        "builtins:openness",
        "mymodule:exec_helpers",
        "oscar:system_info",
        "codecs_extra:encode",
        "torchvision.models:overloaded",  # "load" inside a word, not a loader family
        "numpy_extras:testing",
    ):
        v = verdict(full)
        assert (v.severity, v.category) == (Severity.HIGH, "unknown"), (full, v.reason)
    # and a module prefix only matches whole components: "code" is not "codecs"
    assert verdict("codecs:lookup").severity == Severity.HIGH
    assert verdict("code:interact").severity == Severity.CRITICAL


def test_sklearn_list_admits_classes_but_never_functions_or_denied_modules() -> None:
    assert verdict("sklearn.svm._classes:SVC").severity == Severity.INFO
    assert verdict("sklearn.decomposition._pca:PCA").severity == Severity.INFO
    for full in (
        "sklearn.datasets:fetch_openml",  # reaches the network
        "sklearn.datasets._openml:Request",
        "sklearn.callback._transport:Client",  # multiprocessing.connection.Client
        "sklearn.datasets._base:NamedTemporaryFile",
        "sklearn.utils._testing:TempMemmap",
        "sklearn.utils.parallel:Parallel",
        "sklearn.utils.metaestimators:ABCMeta",  # a metaclass builds classes
        "sklearn.utils.discovery:Path",
        "sklearn.linear_model.tests.test_base:Helper",
        "sklearn.pipeline:make_pipeline",
        "sklearn.metrics._scorer:_SCORERS",  # a registry dict the CamelCase rule admitted
        "sklearn.neighbors._base:VALID_METRICS",
    ):
        assert verdict(full).severity >= Severity.HIGH, full


def test_malformed_names_are_high() -> None:
    for full in (
        "os :system",
        "numpy:nd array",
        ":system",
        "numpy:",
        "numpy:a..b",
        "\uff4f\uff53:system",
    ):
        v = verdict(full)
        assert v.severity >= Severity.HIGH, full
    assert "malformed" in verdict("numpy:nd array").reason


def test_case_insensitive_module_match_for_dangerous_roots() -> None:
    assert verdict("OS:system").severity == Severity.CRITICAL
    assert verdict("Subprocess:Popen").severity == Severity.CRITICAL
    # attribute names are case-sensitive: pathlib.PosixPath is not posixpath
    assert verdict("pathlib:PosixPath").severity == Severity.INFO


# -------------------------------------------------------------------- argument-checked calls


def checked(module: str, name: str, args: list[object]) -> Severity | None:
    v = check_reconstruct_args(module, name, args)
    return None if v is None else v.severity


def test_ufunc_reconstructor_imports_by_name_and_is_checked_by_argument() -> None:
    for module in ("numpy.core", "numpy._core"):
        v = classify_global(module, "_ufunc_reconstruct", NO_POLICY)
        assert v.severity == Severity.CRITICAL
        assert ARGS_CHECKED in v.arg_callables
        name = "_ufunc_reconstruct"
        assert checked(module, name, ["numpy", "log1p"]) == Severity.INFO
        assert checked(module, name, ["os", "system"]) == Severity.CRITICAL
        assert checked(module, name, ["mypkg", "f"]) == Severity.HIGH
        assert checked(module, name, [object(), "log1p"]) == Severity.CRITICAL
        assert checked(module, name, ["numpy"]) == Severity.CRITICAL


def test_codecs_encode_is_checked_by_codec_name() -> None:
    for enc in ("latin1", "latin-1", "utf-8"):
        assert checked("_codecs", "encode", ["\x00", enc]) == Severity.INFO
    assert checked("_codecs", "encode", ["\x00"]) == Severity.INFO
    for odd in ("rot13", "base64", object()):
        assert checked("_codecs", "encode", ["x", odd]) == Severity.HIGH
    assert checked("numpy", "ndarray", []) is None


def test_classification_is_fast() -> None:
    names = [tuple(full.partition(":")[::2]) for full, _ in DANGEROUS] + [
        tuple(full.partition(":")[::2]) for full in ALLOWED
    ]
    policy = Policy(allow_globals=frozenset({"mypkg.*"}))
    start = time.perf_counter()
    for _ in range(50):
        for module, name in names:
            classify_global(module, name, policy)
            classify_global(module + "x", name, policy)  # cache misses too
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"{len(names) * 100} classifications took {elapsed:.2f}s"


def test_torchscript_dialect_admits_only_torchscript_internals() -> None:
    ts_class = classify_global("__torch__.model", "Net", None)
    assert ts_class.severity is Severity.HIGH  # Python's unpickler would import it
    admitted = classify_global("__torch__.model", "Net", None, dialect="torchscript")
    assert (admitted.severity, admitted.category) == (Severity.INFO, "allowlisted")
    builder = classify_global("torch.jit._pickle", "build_intlist", None, dialect="torchscript")
    assert builder.severity is Severity.INFO
    # the dialect admits nothing else: a payload stays what it is
    assert (
        classify_global("os", "system", None, dialect="torchscript").severity is Severity.CRITICAL
    )
    other = classify_global("torch.jit._pickle", "not_a_builder", None, dialect="torchscript")
    assert other.severity is not Severity.INFO
