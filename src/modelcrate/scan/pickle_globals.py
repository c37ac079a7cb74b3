"""Verdicts for pickle globals and config targets: allowlisted, dangerous, unknown, or policy.

The pickle machine calls :func:`classify_global` for every ``GLOBAL``/``INST``/``STACK_GLOBAL``
it resolves, the restricted unpickler for every ``find_class``, and the config scanner (through
:func:`classify_target`) for every Hydra/NeMo ``_target_`` and Lightning ``class_path``: one
classifier for every callable a model file can name. The decision is pure and cheap (a few set
lookups); nothing named here is ever imported. Order of the checks, first match wins:

1. exact known-dangerous ``module.qualname`` -> CRITICAL;
2. exact allowlist (:mod:`modelcrate.scan.pickle_allowlist`: fixed tiers, plus the
   scikit-learn classes and pandas globals of its data files) -> INFO, with the entry's
   :class:`~modelcrate.scan.callables.Spec` (how it may be used: :mod:`pickle_specs`);
3. numpy's ufunc reconstructor, which imports by name -> CRITICAL until its constant
   arguments are checked with :func:`check_reconstruct_args`;
4. a name that is not a plain dotted identifier -> HIGH;
5. a dangerous module tree, reached through the module or through the leading attribute
   components of a dotted name (``torch`` + ``jit.load``) -> CRITICAL;
6. a dunder component, a component naming a dangerous module (``pathlib`` + ``os.system``) or
   a loader/downloader/reader/shell leaf name (``*.load``, ``*.from_pretrained``,
   ``*.fromfile``, ``*.load_library``, ``*.system``) -> CRITICAL;
7. the user's policy -> INFO (never reached for anything above: dangerous wins);
8. anything else -> HIGH ("unknown"): unknown code is not admitted by default.

Dotted qualnames are resolved by pickle as a ``getattr`` chain, so they are admitted only when
the exact dotted name is allowlisted (or listed exactly in the policy). A config target has no
module/qualname split: Hydra's ``_locate`` imports the first component and walks attributes,
importing submodules as it goes, so :func:`classify_target` judges every split and keeps the
worst, except that one exactly allowlisted split makes the unknown readings of the others moot.

Decisions worth knowing:

* an allowlisted name is not a blank cheque: its spec says whether it may be called or only
  referenced, what it returns and which argument bounds hold (``bytearray(10**12)``,
  ``Fraction("1e999999999")`` and ``logging.getLogger`` are refused by the pickle machine and
  the restricted unpickler alike; see :mod:`modelcrate.scan.callables`);
* ``functools.partial`` is allowlisted with ``arg_callables=(0,)``: a partial is only called by
  the application later, and it is exactly as safe as its target, which the pickle machine
  must find allowlisted (``partial(os.system, ...)`` still reports ``os.system`` as CRITICAL).
  The rest of ``functools`` (``reduce`` calls at load time) is denied.
* ``torch.storage._load_from_bytes`` (how ``pickle.dumps`` of a tensor stores its storage) is
  CRITICAL by name; the pickle machine judges a call of it by what it deserializes when that
  is a literal the scan fully analysed (see :data:`NESTED_LITERAL_LOADERS`). ``pickle.loads``
  of a literal stays CRITICAL: no library's save call writes it.
* numpy's ``_ufunc_reconstruct`` (numpy < 2 pickles of ufuncs) and ``_codecs.encode`` carry
  :data:`ARGS_CHECKED`: the machine passes their constant arguments to
  :func:`check_reconstruct_args`.
* ``builtins.getattr`` stays CRITICAL even though Python's opt-in ``pickle_by_enum_name``
  uses it for enum members: a static scan cannot prove its first argument is inert.
"""

from __future__ import annotations

import functools
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections.abc import Sequence
from dataclasses import dataclass

from modelcrate.scan.callables import Spec
from modelcrate.scan.findings import Severity
from modelcrate.scan.pickle_allowlist import (
    ARG_CALLABLES,
    ARGS_CHECKED,
    HF_ALLOWED,
    ML_LIBS_ALLOWED,
    NUMPY_ALLOWED,
    PANDAS_ALLOWED,
    SKLEARN_CLASSES,
    SKLEARN_PYX,
    STDLIB_ALLOWED,
    TORCH_ALLOWED,
)
from modelcrate.scan.pickle_denylist import (
    DANGEROUS_COMPONENTS,
    DANGEROUS_DUNDERS,
    DANGEROUS_LEAVES,
    DANGEROUS_MODULES,
    DANGEROUS_NAMES,
    DANGEROUS_PREFIXES,
    DANGEROUS_SUFFIXES,
    IMPORTS_BY_NAME,
    RESOLVER,
    SAFE_CODECS,
)
from modelcrate.scan.pickle_specs import SPECS
from modelcrate.scan.policy import Policy

__all__ = [
    "ARGS_CHECKED",
    "NESTED_LITERAL_LOADERS",
    "GlobalVerdict",
    "check_reconstruct_args",
    "classify_global",
    "classify_target",
    "normalize",
]

# Loaders that libraries' own save calls write with a literal argument: pickle.dumps of a
# tensor stores its storage as torch.storage._load_from_bytes(b'<legacy torch.save bytes>').
# A call with one exact literal the scan fully analysed is judged by what that literal holds.
# Every other nested loader stays CRITICAL: pickle.loads/dill.loads/... of a literal is never
# what a library writes, only a way to hide a payload from name-based scanners (the peers'
# corpora count it as malicious), and pickle.load/joblib.load/torch.load take files or paths.
NESTED_LITERAL_LOADERS = frozenset({("torch.storage", "_load_from_bytes")})

ALLOWLISTED = "allowlisted"
DANGEROUS = "dangerous"
UNKNOWN = "unknown"
POLICY = "policy"

UNKNOWN_REASON = (
    "not in the allowlist: unknown code is not admitted by default; "
    "add it to a policy file if you trust it"
)

_TIERS: tuple[tuple[frozenset[str], str], ...] = (
    (TORCH_ALLOWED, "PyTorch tensor/storage/layer type"),
    (NUMPY_ALLOWED, "NumPy array/dtype/RNG reconstruction"),
    (ML_LIBS_ALLOWED, "scikit-learn/scipy/joblib/xgboost/lightgbm internals"),
    (SKLEARN_CLASSES, "scikit-learn class"),
    (SKLEARN_PYX, "scikit-learn Cython unpickle helper"),
    (PANDAS_ALLOWED, "pandas data structure, dtype or reconstructor"),
    (STDLIB_ALLOWED, "inert standard-library value type"),
    (HF_ALLOWED, "Hugging Face training-arguments dataclass or enum"),
)
_ALLOWED: dict[str, str] = {name: why for names, why in _TIERS for name in names}


@dataclass(frozen=True)
class GlobalVerdict:
    """What importing one global means.

    ``arg_callables`` lists positional arguments that the callable calls or instantiates
    (``copyreg._reconstructor`` -> ``(0, 1)``): a call is only as safe as those arguments,
    which must be constants or values built from allowlisted globals. The sentinel
    :data:`ARGS_CHECKED` (-1) means: pass the call's arguments to
    :func:`check_reconstruct_args` and use the verdict it returns for that call.
    """

    severity: Severity  # INFO for allowlisted, CRITICAL for known-dangerous, HIGH for unknown
    reason: str
    category: str  # "allowlisted" | "dangerous" | "unknown" | "policy"
    arg_callables: tuple[int, ...] = ()
    spec: Spec | None = None  # allowlisted entries: how they may be used


def normalize(module: str, name: str) -> tuple[str, str]:
    """Map Python 2 names to Python 3 as pickle's ``find_class`` does (``__builtin__`` ->
    ``builtins``, ``copy_reg`` -> ``copyreg``, ``('__builtin__', 'xrange')`` -> ``range``).

    pickle applies the mapping only below protocol 3; it is applied here always, which is the
    conservative reading (at protocol 3+ a Python 2 module name simply fails to import).
    """
    mapped = NAME_MAPPING.get((module, name))
    if mapped is not None:
        return mapped
    return IMPORT_MAPPING.get(module, module), name


# TorchScript's C++ unpickler (torch.jit.load) resolves ``__torch__.*`` to classes compiled from
# the archive's own code/ (reported by the zip scanner as executable content) and these list
# builders to C++ builtins: neither is a Python import.
_TORCHSCRIPT_BUILDERS = frozenset(
    {
        "build_intlist",
        "build_tensorlist",
        "build_doublelist",
        "build_boollist",
        "build_tensor_from_id",
        "restore_type_tag",
    }
)


def classify_global(
    module: str, name: str, policy: Policy | None = None, *, dialect: str | None = None
) -> GlobalVerdict:
    """The verdict for ``module.name`` as a pickle would import it (see the module docstring).

    ``dialect="torchscript"``: the pickle is read by TorchScript's unpickler, not Python's.
    """
    if dialect == "torchscript" and (
        module == "__torch__"
        or module.startswith("__torch__.")
        or (module == "torch.jit._pickle" and name in _TORCHSCRIPT_BUILDERS)
    ):
        return GlobalVerdict(
            Severity.INFO,
            f"resolved by TorchScript's C++ unpickler ({module}.{name}), not imported from Python",
            ALLOWLISTED,
        )
    m, n = normalize(module, name)
    verdict = _classify_static(m, n)
    if verdict is not None:
        return verdict
    if policy is not None and _policy_allows(policy, m, n):
        return GlobalVerdict(Severity.INFO, f"admitted by the scan policy: {m}.{n}", POLICY, ())
    return _unknown(m, n)


def check_reconstruct_args(
    module: str, name: str, args: Sequence[object], policy: Policy | None = None
) -> GlobalVerdict | None:
    """Verdict for a call whose safety depends on its constant arguments, else ``None``.

    For every global whose verdict has :data:`ARGS_CHECKED` in ``arg_callables``, the pickle
    machine passes the call's positional arguments: Python ``str``/``bytes``/``int`` for
    constants, any other object for values computed at load time.

    * ``numpy(.core|._core)._ufunc_reconstruct(module, name)`` imports ``module`` and returns
      its attribute ``name``: the verdict is that of the named global (INFO for ``numpy.log1p``,
      CRITICAL for ``os.system``); names not given as constant strings are CRITICAL.
    * ``_codecs.encode(text, encoding)`` looks the codec up by name: INFO for latin-1 / utf-8 /
      ascii (what numpy and torch write), HIGH otherwise.
    """
    m, n = normalize(module, name)
    full = f"{m}.{n}"
    if full in IMPORTS_BY_NAME:
        if len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], str):
            inner = classify_global(args[0], args[1], policy)
            target = f"{args[0]}.{args[1]}"
            if inner.severity == Severity.INFO:
                return GlobalVerdict(
                    Severity.INFO, f"{full} imports {target}: {inner.reason}", inner.category
                )
            return GlobalVerdict(
                inner.severity,
                f"{full} imports {target} by name: {inner.reason}",
                inner.category,
                inner.arg_callables,
            )
        return GlobalVerdict(
            Severity.CRITICAL,
            f"import machinery: {full} imports a module and attribute whose names are "
            "computed at load time",
            DANGEROUS,
        )
    if full == "_codecs.encode":
        if len(args) == 1:
            return GlobalVerdict(
                Severity.INFO, "_codecs.encode with the default codec", ALLOWLISTED
            )
        enc = args[1] if len(args) > 1 else None
        if isinstance(enc, str) and enc.lower() in SAFE_CODECS:
            return GlobalVerdict(Severity.INFO, f"_codecs.encode with codec {enc!r}", ALLOWLISTED)
        return GlobalVerdict(
            Severity.HIGH,
            f"_codecs.encode with codec {enc!r}: codecs are looked up (imported) by name; "
            "numpy and torch only write latin-1",
            UNKNOWN,
        )
    return None


# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def _classify_static(m: str, n: str, leaf_only: bool = False) -> GlobalVerdict | None:
    """Steps 1-6 (everything that does not depend on the policy); ``None`` = not decided.

    ``leaf_only``: judge loader/reader leaf names on the last component only (config targets,
    whose other components may be submodules reached as attributes: ``sklearn.pipeline``).
    """
    full = f"{m}.{n}"
    low = full.lower()
    why = DANGEROUS_NAMES.get(low)
    if why is not None:
        return _dangerous(why, full)
    tier = _ALLOWED.get(full)
    if tier is not None:
        return GlobalVerdict(
            Severity.INFO,
            f"allowlisted ({tier}): {full}",
            ALLOWLISTED,
            ARG_CALLABLES.get(full, ()),
            SPECS[full],
        )
    if full in IMPORTS_BY_NAME:
        return GlobalVerdict(
            Severity.CRITICAL,
            f"import machinery: {full} imports the module and attribute named by its "
            "arguments; admitted only when they are constants naming an allowlisted global",
            DANGEROUS,
            (ARGS_CHECKED,),
            SPECS[full],
        )
    parts = n.split(".")
    if not _well_formed(m, parts):
        return GlobalVerdict(
            Severity.HIGH,
            f"malformed global name {full!r}: not a plain dotted Python identifier, so it "
            "cannot be matched against the allowlist",
            UNKNOWN,
        )
    comps = low.split(".")
    for i in range(1, len(comps) + 1):
        why = DANGEROUS_MODULES.get(".".join(comps[:i]))
        if why is not None:
            via = ".".join(full.split(".")[:i])
            return _dangerous(
                why, full, "" if i <= m.count(".") + 1 else f"the attribute path {via}"
            )
    for idx, part in enumerate(parts):
        if len(part) > 4 and part.startswith("__") and part.endswith("__"):
            kind = "an interpreter-internals" if part in DANGEROUS_DUNDERS else "a"
            return _dangerous(RESOLVER, full, f"{kind} dunder attribute {part}")
        if part in DANGEROUS_COMPONENTS:  # attributes: getattr is case-sensitive
            return _dangerous(RESOLVER, full, f"the attribute {part!r}, which names a module")
        if leaf_only and idx < len(parts) - 1:
            continue
        why = _leaf_danger(part)
        if why is not None:
            return _dangerous(why, full, f"the name {part!r}")
    return None


def _leaf_danger(part: str) -> str | None:
    """Loader, reader, downloader, importer and shell names: exact, then by family."""
    why = DANGEROUS_LEAVES.get(part)
    if why is not None:
        return why
    low = part.lower()
    for prefix, reason in DANGEROUS_PREFIXES:
        if low.startswith(prefix):
            return reason
    for suffix, reason in DANGEROUS_SUFFIXES:
        if low.endswith(suffix):
            return reason
    return None


def classify_target(target: str, policy: Policy | None = None) -> GlobalVerdict:
    """The verdict for a config's ``_target_``/``class_path`` (``pkg.mod.Class.method``).

    Hydra's ``_locate`` imports the first component and then walks attributes, importing a
    submodule when an attribute is missing, so any split into module + qualname may be what
    runs: a dangerous reading of any split is CRITICAL; otherwise the target is INFO only when
    a split is exactly on the allowlist (or in the policy) and may be called, as instantiate
    will; anything else is HIGH. ``module:attr`` is read as ``module.attr``.
    """
    name = target.strip().replace(":", ".")
    parts = name.split(".")
    if not name or not all(p.isascii() and p.isidentifier() for p in parts):
        return GlobalVerdict(
            Severity.HIGH,
            f"malformed target {target!r}: not a dotted Python name, so it cannot be checked",
            UNKNOWN,
        )
    if len(parts) == 1:  # a bare module: importing it runs its code
        why = DANGEROUS_MODULES.get(name.lower())
        if why is not None:
            return _dangerous(why, name)
        return GlobalVerdict(
            Severity.HIGH, f"{name} names a module, which instantiate imports", UNKNOWN
        )
    admitted: GlobalVerdict | None = None
    unknown: GlobalVerdict | None = None
    for i in range(len(parts) - 1, 0, -1):  # the longest module first, as jsonargparse reads it
        m, n = normalize(".".join(parts[:i]), ".".join(parts[i:]))
        v = _classify_static(m, n, True)
        if v is not None and v.severity == Severity.CRITICAL:
            return v
        if v is None and policy is not None and _policy_allows(policy, m, n):
            v = GlobalVerdict(Severity.INFO, f"admitted by the scan policy: {m}.{n}", POLICY)
        if v is not None and v.severity == Severity.INFO:
            admitted = admitted or v
        elif unknown is None:
            unknown = v or _unknown(m, n)
    if admitted is not None:
        spec = admitted.spec
        if spec is not None and spec.call is None:
            return GlobalVerdict(
                Severity.HIGH,
                f"{name} is allowlisted only to be referenced or rebuilt by pickles "
                f"({admitted.reason}); instantiate would call it",
                UNKNOWN,
            )
        return admitted
    return unknown or _unknown(".".join(parts[:-1]), parts[-1])


def _dangerous(why: str, full: str, via: str = "") -> GlobalVerdict:
    detail = f", reached through {via}" if via else ""
    return GlobalVerdict(Severity.CRITICAL, f"{why}{detail}", DANGEROUS)


def _unknown(m: str, n: str) -> GlobalVerdict:
    full = f"{m}.{n}"
    if "." in n:
        reason = (
            f"dotted name {n!r} is resolved by attribute lookups starting at {m}; only exactly "
            f"listed dotted names are admitted ({UNKNOWN_REASON})"
        )
    elif m == "__main__":
        reason = f"{full} is defined in the script that saved the file: {UNKNOWN_REASON}"
    else:
        reason = f"{full} is {UNKNOWN_REASON}"
    return GlobalVerdict(Severity.HIGH, reason, UNKNOWN)


def _well_formed(m: str, parts: list[str]) -> bool:
    return all(p.isascii() and p.isidentifier() for p in (*m.split("."), *parts))


def _policy_allows(policy: Policy, m: str, n: str) -> bool:
    if "." in n:  # a dotted name needs an exact entry, never a module prefix
        return f"{m}.{n}" in policy.allow_globals
    return policy.allows_global(m, n)
