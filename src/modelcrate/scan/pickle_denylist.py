"""The pickle denylist: globals that are known to run code or reach the system.

Data only; :mod:`modelcrate.scan.pickle_globals` decides. This is the union of the anchor
scanners' lists (THREATS.md section 3) and the "never allow" list of section 5. It only
sharpens the *reason* and raises unknown (HIGH) to CRITICAL: anything not allowlisted already
fails the gate, so a gap here is never a bypass.

Module trees and exact names are keyed in lowercase and looked up with the lowercased
normalized name, so ``OS.system`` (importable on a case-insensitive file system) is still
caught. Attribute components (:data:`DANGEROUS_COMPONENTS`, :data:`DANGEROUS_LEAVES`) are
compared exactly, as ``getattr`` does. Matching is by whole dotted component (module ``code``
never matches ``codecs``) and exact name; never by substring.
"""

from __future__ import annotations

# reason prefixes, one per category
CODE = "code execution"
PROCESS = "process execution"
IMPORT = "import machinery"
RESOLVER = "attribute resolver / call gadget"
NESTED = "pickle recursion (nested deserialization the scan cannot see)"
NETWORK = "network access"
FILES = "filesystem access"
FFI = "foreign function interface / raw memory"
DEACTIVATE = "scanner deactivation"
INSTALL = "package installation"
DYNAMIC = "dynamic class or code creation"
STATE = "interpreter or process state"


def _tree(reason: str, modules: str) -> dict[str, str]:
    return dict.fromkeys(modules.lower().split(), reason)


# Whole module trees: the module and every submodule (``torch.jit`` covers ``torch.jit.x``).
DANGEROUS_MODULES: dict[str, str] = {
    **_tree(PROCESS, "os posix nt subprocess _posixsubprocess pty commands popen2 _winapi"),
    **_tree(PROCESS, "multiprocessing _multiprocessing concurrent asyncio platform"),
    **_tree(PROCESS, "webbrowser antigravity"),
    **_tree(STATE, "sys signal threading _thread atexit gc faulthandler sched weakref _weakref"),
    **_tree(STATE, "resource fcntl termios tty msvcrt winreg _winreg pwd grp spwd getpass"),
    **_tree(STATE, "readline rlcompleter"),
    **_tree(CODE, "runpy code codeop marshal types compileall py_compile _interpreters"),
    **_tree(CODE, "_xxsubinterpreters interpreters timeit cprofile profile _lsprof trace"),
    **_tree(CODE, "pdb bdb doctest idlelib lib2to3 pydoc _pyrepl unittest test tkinter turtle"),
    **_tree(CODE, "numpy.testing numpy.f2py numpy.distutils torch.jit torch._inductor"),
    **_tree(CODE, "torch._dynamo torch.fx torch.compiler torch.utils.collect_env"),
    **_tree(CODE, "torch.utils.bottleneck torch.utils.cpp_extension torch.testing._internal"),
    **_tree(CODE, "torch.utils._config_module torch._export torch.export"),
    **_tree(CODE, "transformers.dynamic_module_utils mlflow hydra.utils hydra._internal"),
    **_tree(IMPORT, "importlib _frozen_importlib _frozen_importlib_external _imp imp"),
    **_tree(IMPORT, "zipimport site sitecustomize usercustomize pkgutil inspect modulefinder"),
    **_tree(IMPORT, "pkg_resources importlib_metadata importlib_resources torch.package"),
    **_tree(IMPORT, "torch.hub torch.ops torch.classes torch.library torch._ops"),
    **_tree(RESOLVER, "operator _operator functools"),
    **_tree(NESTED, "pickle _pickle cpickle dill cloudpickle shelve pickletools"),
    **_tree(NESTED, "joblib.externals joblib.parallel joblib._parallel_backends joblib.pool"),
    **_tree(NESTED, "joblib.memory joblib._store_backends joblib.executor numpy.lib.format"),
    **_tree(NESTED, "numpy.lib.npyio numpy.lib._npyio_impl torch.utils.data.datapipes"),
    **_tree(NETWORK, "socket _socket ssl _ssl socketserver select selectors http httplib"),
    **_tree(NETWORK, "urllib urllib2 urllib3 requests httpx aiohttp ftplib poplib imaplib"),
    **_tree(NETWORK, "smtplib nntplib telnetlib xmlrpc wsgiref huggingface_hub"),
    **_tree(NETWORK, "torch.distributed.rpc torch.distributed.elastic torch.utils.model_zoo"),
    **_tree(NETWORK, "numpy.lib._datasource transformers.utils.hub pandas.io datasets.load"),
    **_tree(NETWORK, "torchvision.datasets torchaudio.datasets keras.utils.file_utils"),
    **_tree(FILES, "shutil tempfile glob fileinput filecmp linecache tarfile zipfile gzip"),
    **_tree(FILES, "bz2 lzma dbm sqlite3 _sqlite3 logging wave aifc sunau imghdr sndhdr"),
    **_tree(FILES, "mimetypes netrc mailbox mailcap uu binhex posixpath ntpath genericpath"),
    **_tree(FILES, "xml distutils _distutils_hack"),
    **_tree(PROCESS, "uuid _osx_support _aix_support"),  # hidden subprocess calls
    **_tree(FFI, "ctypes _ctypes cffi mmap numpy.ctypeslib"),
    **_tree(INSTALL, "pip ensurepip venv setuptools conda"),
    **_tree(DEACTIVATE, "fickling picklescan modelscan model_unpickler saferpickle modelaudit"),
    **_tree(DEACTIVATE, "modelcrate"),
}

# Module roots that, as an *attribute* in a dotted name (``pathlib`` + ``os.system``), reach a
# dangerous module: any qualname component equal to one of these is CRITICAL.
DANGEROUS_COMPONENTS = frozenset(
    {
        "os", "posix", "nt", "sys", "subprocess", "builtins", "__builtin__", "importlib",
        "_imp", "imp", "pickle", "_pickle", "cPickle", "dill", "cloudpickle", "marshal",
        "ctypes", "_ctypes", "socket", "_socket", "shutil", "pty", "runpy", "code", "codeop",
        "types", "inspect", "pkgutil", "pydoc", "webbrowser", "operator", "_operator",
        "functools", "gc", "posixpath", "ntpath", "io", "_io", "multiprocessing", "threading",
        "_thread", "signal", "asyncio", "urllib", "requests", "http", "ssl", "platform",
        "tempfile", "jit", "hub",
    }
)  # fmt: skip

# Dunder attributes that walk to interpreter internals (``numpy.__builtins__``, ...).
# Any other dunder component that is not allowlisted exactly is CRITICAL too.
DANGEROUS_DUNDERS = frozenset(
    {
        "__builtins__", "__globals__", "__subclasses__", "__class__", "__init__", "__base__",
        "__bases__", "__mro__", "__dict__", "__getattribute__", "__getattr__", "__import__",
        "__loader__", "__spec__", "__code__", "__closure__", "__func__", "__self__",
        "__reduce__", "__reduce_ex__", "__setstate__", "__call__", "__del__", "__new__",
    }
)  # fmt: skip

_BUILTINS = (
    "getattr setattr delattr __import__ eval exec compile open globals locals vars type "
    "breakpoint input raw_input apply execfile reload file dir help exit quit license credits "
    "copyright"
)

# Exact ``module.qualname`` entries (lowercase), where the module as a whole is not denied.
DANGEROUS_NAMES: dict[str, str] = {
    **{f"builtins.{n}": CODE for n in _BUILTINS.split()},
    "builtins.type": DYNAMIC,
    "builtins.getattr": RESOLVER,
    "builtins.setattr": RESOLVER,
    "builtins.delattr": RESOLVER,
    "builtins.vars": RESOLVER,
    "builtins.globals": RESOLVER,
    "builtins.locals": RESOLVER,
    "builtins.dir": RESOLVER,
    "builtins.__import__": IMPORT,
    "builtins.reload": IMPORT,
    "builtins.open": FILES,
    "builtins.file": FILES,
    "builtins.help": PROCESS,  # pydoc pager: a subprocess
    "builtins.license": FILES,
    "builtins.credits": FILES,
    "builtins.copyright": FILES,
    "builtins.exit": STATE,
    "builtins.quit": STATE,
    "io.open": FILES,
    "io.open_code": FILES,
    "io.fileio": FILES,
    "_io.open": FILES,
    "_io.open_code": FILES,
    "_io.fileio": FILES,
    "codecs.open": FILES,
    "codecs.encodedfile": FILES,
    "copyreg.add_extension": NESTED,
    "copyreg.remove_extension": NESTED,
    "copyreg.pickle": NESTED,
    "copyreg.constructor": NESTED,
    "collections.namedtuple": DYNAMIC,
    "dataclasses.make_dataclass": DYNAMIC,
    "typing.namedtuple": DYNAMIC,
    "typing.typeddict": DYNAMIC,
    "abc.abcmeta": DYNAMIC,
    "enum.enummeta": DYNAMIC,
    "enum.enumtype": DYNAMIC,
    "string.formatter": RESOLVER,
    "torch.load": NESTED,
    "torch.save": FILES,
    "torch.from_file": FILES,
    "torch.compile": CODE,
    "torch.serialization.load": NESTED,
    "torch.serialization._load": NESTED,
    "torch.serialization._legacy_load": NESTED,
    "torch.serialization.save": FILES,
    "torch.storage._load_from_bytes": NESTED,
    "torch.utils.data.datapipes.utils.decoder.basichandlers": NESTED,
    "joblib.load": NESTED,
    "joblib.dump": FILES,
    "joblib.numpy_pickle.load": NESTED,
    "joblib.numpy_pickle.dump": FILES,
    "joblib.numpy_pickle.load_temporary_memmap": NESTED,
    "joblib.parallel": PROCESS,
    "joblib.memory": FILES,
    "joblib.numpy_pickle_compat.ndarraywrapper": NESTED,  # np.load(side file, allow_pickle)
    "joblib.numpy_pickle_compat.zndarraywrapper": NESTED,
    "joblib.numpy_pickle_compat.load_compatibility": NESTED,
    "numpy.load": NESTED,
    "numpy.loadtxt": FILES,
    "numpy.genfromtxt": FILES,
    "numpy.fromfile": FILES,
    "numpy.fromregex": FILES,
    "numpy.save": FILES,
    "numpy.savez": FILES,
    "numpy.savez_compressed": FILES,
    "numpy.savetxt": FILES,
    "numpy.memmap": FILES,
    "numpy.datasource": NETWORK,
    "numpy._core.multiarray.fromfile": FILES,
    "numpy.core.multiarray.fromfile": FILES,
    "numpy._core.memmap.memmap": FILES,
    "numpy.core.memmap.memmap": FILES,
    "numpy._core.records.fromfile": FILES,
    "numpy.rec.fromfile": FILES,
    "pandas.read_pickle": NESTED,
    "pandas.read_csv": NETWORK,
    "pandas.read_json": NETWORK,
    "pandas.read_html": NETWORK,
    "pandas.read_parquet": NETWORK,
    "pandas.read_excel": NETWORK,
    "pandas.read_sql": NETWORK,
    "pandas.read_table": NETWORK,
    "transformers.models.auto.auto_factory.getattribute_from_module": IMPORT,
    "keras.config.enable_unsafe_deserialization": CODE,
    "keras.src.saving.serialization_lib.enable_unsafe_deserialization": CODE,
}

# Any module, last qualname component (or any component of a dotted name): loaders, importers
# and shells whose name says what they do. ``numpy.lib.npyio.load`` and
# ``somepkg.utils.from_pretrained`` are caught without listing every spelling.
DANGEROUS_LEAVES: dict[str, str] = {
    "load": NESTED,
    "loads": NESTED,
    "load_model": NESTED,
    "read_pickle": NESTED,
    "unpickle": NESTED,
    "from_pretrained": NETWORK,
    "hf_hub_download": NETWORK,
    "snapshot_download": NETWORK,
    "urlopen": NETWORK,
    "urlretrieve": NETWORK,
    "create_connection": NETWORK,
    "getattribute_from_module": IMPORT,
    "get_class_from_dynamic_module": IMPORT,
    "import_module": IMPORT,
    "__import__": IMPORT,
    "load_library": FFI,
    "load_url": NETWORK,
    "get_file": NETWORK,
    "fromfile": FILES,
    "from_file": FILES,
    "memmap": FILES,
    "loadtxt": FILES,
    "genfromtxt": FILES,
    "fromregex": FILES,
    "loadmat": FILES,
    "get_class": IMPORT,
    "get_method": IMPORT,
    "get_object": IMPORT,
    "instantiate": IMPORT,
    "exec_module": IMPORT,
    "load_module": IMPORT,
    "run_path": CODE,
    "run_module": CODE,
    "_run_code": CODE,
    "execfile": CODE,
    "system": PROCESS,
    "popen": PROCESS,
    "spawnv_passfds": PROCESS,
    "check_output": PROCESS,
    "getoutput": PROCESS,
    "getstatusoutput": PROCESS,
    "format_map": RESOLVER,
    "attrgetter": RESOLVER,
    "methodcaller": RESOLVER,
    "itemgetter": RESOLVER,
    "resolve_name": IMPORT,
    "locate": IMPORT,
    "getattr_static": RESOLVER,
    "write_text": FILES,
    "write_bytes": FILES,
    "read_text": FILES,
    "read_bytes": FILES,
    "rmtree": FILES,
    "unlink": FILES,
}

# Leaf-name families: any component starting or ending like this loads, reads, downloads or
# imports something named by its arguments (``load_url``, ``load_state_dict_from_url``,
# ``read_csv``, ``download_url_to_file``, ``import_class_by_path``, ``restore_from``,
# ``load_from_checkpoint``). Only names not on the allowlist reach this check, and those are
# unknown (HIGH) anyway: the family only names the danger.
DANGEROUS_PREFIXES: tuple[tuple[str, str], ...] = (
    ("load_", NESTED),
    ("loads_", NESTED),
    ("read_", FILES),
    ("download", NETWORK),
    ("fetch_", NETWORK),
    ("hf_hub_", NETWORK),
    ("snapshot_", NETWORK),
    ("import_", IMPORT),
    ("restore_", NESTED),
    ("unpickle", NESTED),
    ("deserialize", NESTED),
    ("from_pretrained", NETWORK),
)
DANGEROUS_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("_load", NESTED),
    ("_loads", NESTED),
    ("_download", NETWORK),
    ("_from_url", NETWORK),
    ("_from_hub", NETWORK),
    ("_from_file", FILES),
    ("_from_path", FILES),
    ("_from_checkpoint", NESTED),
    ("_from_json", NESTED),
    ("_from_yaml", NESTED),
    ("fromfile", FILES),
)

# Callables that import the module and attribute named by their (string) arguments.
IMPORTS_BY_NAME = frozenset({"numpy.core._ufunc_reconstruct", "numpy._core._ufunc_reconstruct"})

# Codec names ``_codecs.encode`` may be given in benign numpy/torch pickles (protocol 2 writes
# array bytes as latin-1 text). Any other codec is looked up (imported) by name.
SAFE_CODECS = frozenset(
    {
        "latin1",
        "latin-1",
        "latin_1",
        "iso-8859-1",
        "iso8859-1",
        "l1",
        "utf-8",
        "utf8",
        "utf_8",
        "ascii",
    }
)
