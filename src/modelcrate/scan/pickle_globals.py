"""Verdicts for pickle globals: allowlisted, dangerous, unknown, or admitted by policy.

The pickle machine calls :func:`classify_global` for every ``GLOBAL``/``INST``/``STACK_GLOBAL``
it resolves. The decision is pure and cheap (a few set lookups); nothing named here is ever
imported. Order of the checks, first match wins:

1. exact known-dangerous ``module.qualname`` -> CRITICAL;
2. exact allowlist (:mod:`modelcrate.scan.pickle_allowlist`) -> INFO;
3. numpy's ufunc reconstructor, which imports by name -> CRITICAL until its constant
   arguments are checked with :func:`check_reconstruct_args`;
4. a name that is not a plain dotted identifier -> HIGH;
5. a dangerous module tree, reached through the module or through the leading attribute
   components of a dotted name (``torch`` + ``jit.load``) -> CRITICAL;
6. a dunder component, a component naming a dangerous module (``pathlib`` + ``os.system``) or
   a loader/shell leaf name (``*.load``, ``*.system``) -> CRITICAL;
7. a scikit-learn class, admitted by rule -> INFO;
8. the user's policy -> INFO (never reached for anything above: dangerous wins);
9. anything else -> HIGH ("unknown"): unknown code is not admitted by default.

Dotted qualnames are resolved by pickle as a ``getattr`` chain, so they are admitted only when
the exact dotted name is allowlisted (or listed exactly in the policy).

Decisions worth knowing:

* ``functools.partial`` is allowlisted with ``arg_callables=(0,)``: a partial is only called by
  the application later, and it is exactly as safe as its target, which the pickle machine
  must find allowlisted (``partial(os.system, ...)`` still reports ``os.system`` as CRITICAL).
  The rest of ``functools`` (``reduce`` calls at load time) is denied.
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

from modelcrate.scan.findings import Severity
from modelcrate.scan.pickle_allowlist import (
    ARG_CALLABLES,
    ARGS_CHECKED,
    HF_ALLOWED,
    ML_LIBS_ALLOWED,
    NUMPY_ALLOWED,
    SKLEARN_DENY_COMPONENTS,
    SKLEARN_DENY_MODULES,
    SKLEARN_DENY_NAMES,
    STDLIB_ALLOWED,
    TORCH_ALLOWED,
)
from modelcrate.scan.pickle_denylist import (
    DANGEROUS_COMPONENTS,
    DANGEROUS_DUNDERS,
    DANGEROUS_LEAVES,
    DANGEROUS_MODULES,
    DANGEROUS_NAMES,
    IMPORTS_BY_NAME,
    RESOLVER,
    SAFE_CODECS,
)
from modelcrate.scan.policy import Policy

__all__ = [
    "ARGS_CHECKED",
    "GlobalVerdict",
    "check_reconstruct_args",
    "classify_global",
    "normalize",
]

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
def _classify_static(m: str, n: str) -> GlobalVerdict | None:
    """Steps 1-7 (everything that does not depend on the policy); ``None`` = not decided."""
    full = f"{m}.{n}"
    low = full.lower()
    why = DANGEROUS_NAMES.get(low)
    if why is not None:
        return _dangerous(why, full)
    tier = _ALLOWED.get(full)
    if tier is not None:
        return GlobalVerdict(
            Severity.INFO, f"allowlisted ({tier}): {full}", ALLOWLISTED, ARG_CALLABLES.get(full, ())
        )
    if full in IMPORTS_BY_NAME:
        return GlobalVerdict(
            Severity.CRITICAL,
            f"import machinery: {full} imports the module and attribute named by its "
            "arguments; admitted only when they are constants naming an allowlisted global",
            DANGEROUS,
            (ARGS_CHECKED,),
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
    for part in parts:
        if len(part) > 4 and part.startswith("__") and part.endswith("__"):
            kind = "an interpreter-internals" if part in DANGEROUS_DUNDERS else "a"
            return _dangerous(RESOLVER, full, f"{kind} dunder attribute {part}")
        if part in DANGEROUS_COMPONENTS:  # attributes: getattr is case-sensitive
            return _dangerous(RESOLVER, full, f"the attribute {part!r}, which names a module")
        why = DANGEROUS_LEAVES.get(part)
        if why is not None:
            return _dangerous(why, full, f"the name {part!r}")
    if len(parts) == 1:
        sk = _sklearn_class(m, n)
        if sk is not None:
            return sk
    return None


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


def _sklearn_class(m: str, n: str) -> GlobalVerdict | None:
    """scikit-learn classes by rule: CamelCase names in sklearn modules, minus the deny sets."""
    if not (m == "sklearn" or m.startswith("sklearn.")):
        return None
    if any(m == d or m.startswith(d + ".") for d in SKLEARN_DENY_MODULES):
        return None
    if any(c in SKLEARN_DENY_COMPONENTS for c in m.split(".")):
        return None
    if n.startswith("__pyx_unpickle_"):  # Cython helper: cls.__new__(cls) + state
        return GlobalVerdict(
            Severity.INFO,
            f"allowlisted (scikit-learn Cython unpickle helper): {m}.{n}",
            ALLOWLISTED,
            (0,),
        )
    bare = n[1:] if n.startswith("_") else n
    if not bare[:1].isupper() or n.startswith("__") or n in SKLEARN_DENY_NAMES:
        return None
    return GlobalVerdict(
        Severity.INFO, f"allowlisted (scikit-learn class, by rule): {m}.{n}", ALLOWLISTED
    )
