"""Load pickle and joblib files through the scanner's allowlist, never through plain ``pickle``.

The scan gate runs first, but loading does not rely on it: every global the stream names goes
through :func:`~modelcrate.scan.pickle_globals.classify_global` at ``find_class`` time, and only
what it calls ``allowlisted`` (or what the user's policy admits) is imported. Everything else
raises :class:`PickleRefusedError` before anything is imported or called, so a malicious file
that slipped past the scanner still never runs.

What an admitted global may then do is the scanner's model too
(:mod:`modelcrate.scan.callables`, enforced by :mod:`modelcrate.formats.unpickle_guard`):

* the imported object must be what its allowlist entry says: a class (``isinstance(obj,
  type)``), a function or an immutable value; a module is never returned;
* every call is checked before it runs: whether the global may be called or instantiated with
  ``__new__`` at all, its argument bounds (``bytearray(10**12)``, ``list(range(10**10))``,
  ``Fraction("1e999999999")`` are refused) and the classes it instantiates in turn;
* BUILD/SETITEM(S)/APPEND(S)/ADDITEMS only fill objects the pickle built (literal containers
  and fresh results of allowlisted constructors), never a module-level object or something a
  function looked up;
* globals whose safety depends on their arguments (numpy's ``_ufunc_reconstruct``,
  ``_codecs.encode``) are returned wrapped: the call's arguments are checked with
  :func:`~modelcrate.scan.pickle_globals.check_reconstruct_args` before the real call;
* ``torch.storage._load_from_bytes`` (how ``pickle.dumps`` stores a tensor's storage) given
  one bytes literal loads it with these same restrictions (torch's legacy format through
  ``torch.load`` with this module as its pickle module, storage sizes bounded by the
  literal, zip archives refused); every other nested loader (``pickle.loads`` included) is
  refused, as the scanner keeps it CRITICAL;
* persistent ids (``PERSID``/``BINPERSID``) are refused;
* joblib files are read by a subclass of joblib's own ``NumpyUnpickler`` (every compression
  joblib writes), whose object arrays, stored as nested pickles, use this same unpickler; the
  pre-0.10 joblib format (companion ``.npy`` files, compatibility unpickler) is refused.
"""

from __future__ import annotations

import importlib
import io
import pickle
import types
from pathlib import Path
from typing import IO, Any

from modelcrate.errors import InputError
from modelcrate.formats.unpickle_guard import (
    GUARDED_OPS,
    HINT,
    Guard,
    PickleRefusedError,
    check_kind,
)
from modelcrate.scan.callables import Out, Spec
from modelcrate.scan.findings import Severity
from modelcrate.scan.limits import Limits
from modelcrate.scan.pickle_allowlist import ARGS_CHECKED
from modelcrate.scan.pickle_globals import (
    NESTED_LITERAL_LOADERS,
    check_reconstruct_args,
    classify_global,
    normalize,
)
from modelcrate.scan.pickle_specs import NESTED_LITERAL_SPEC
from modelcrate.scan.policy import Policy

__all__ = ["MAX_ARRAY_BYTES", "PickleRefusedError", "safe_load_joblib", "safe_load_pickle"]

# One joblib array may not claim more than this (a forged shape would otherwise allocate it).
MAX_ARRAY_BYTES = 8 * 1024**3
MAX_NESTING = Limits().max_depth  # pickles inside pickles, as the scanner's container depth
_ADMITTED = frozenset({"allowlisted", "policy"})


def safe_load_pickle(data: bytes, *, path: str, policy: Policy | None = None) -> object:
    """Unpickle ``data`` (the bytes of ``path``) admitting only allowlisted globals."""
    return _load_pickle(data, path, policy, 0)


def safe_load_joblib(path: Path, *, policy: Policy | None = None) -> object:
    """Load a ``joblib.dump`` file (plain or compressed) admitting only allowlisted globals.

    Plain pickle files load too (joblib's format is a pickle stream with raw array data).
    """
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(
            f"cannot read model file: {exc.strerror}", path=str(path), hint="check the path"
        ) from exc
    with handle, _validate_fileobject_and_memmap(handle, str(path), None) as (fobj, _):
        if isinstance(fobj, str):
            raise PickleRefusedError(
                "joblib file written by joblib < 0.10 (companion array files): its "
                "compatibility loader cannot be restricted",
                path=str(path),
                hint="load it in a trusted environment and re-save it with a current joblib",
            )
        unpickler = _joblib_unpickler_class()(str(path), fobj, policy)
        return _run(unpickler.load, str(path))


# ---------------------------------------------------------------------------------------------


def _load_pickle(data: bytes, path: str, policy: Policy | None, depth: int) -> object:
    unpickler = _RestrictedUnpickler(io.BytesIO(data), path=path, policy=policy, depth=depth)
    return _run(unpickler.load, path)


def _run(load: Any, path: str) -> object:
    try:
        return load()
    except InputError:
        raise
    except RecursionError as exc:
        raise InputError(
            "pickle stream nests too deeply to load", path=path, hint="re-save the model"
        ) from exc
    except Exception as exc:  # corrupt stream: translate at the boundary
        raise InputError(
            f"cannot unpickle the model: {type(exc).__name__}: {exc}",
            path=path,
            hint="the file is truncated, corrupt, or was written by an incompatible library "
            "version; re-save it with the versions installed here",
        ) from exc


def resolve_global(
    module: str, name: str, *, path: str, policy: Policy | None, depth: int = 0
) -> tuple[object, str, Spec | None]:
    """``find_class`` for every unpickler here: import ``module.name`` only if admitted.

    Returns the object, its normalized ``module.qualname`` and its spec.
    """
    m, n = normalize(module, name)
    full = f"{m}.{n}"
    if (m, n) in NESTED_LITERAL_LOADERS:
        return _NestedLoader(m, n, path, policy, depth), full, NESTED_LITERAL_SPEC
    verdict = classify_global(module, name, policy)
    admitted = verdict.severity == Severity.INFO and verdict.category in _ADMITTED
    checked = ARGS_CHECKED in verdict.arg_callables
    if not (admitted or checked):
        raise PickleRefusedError(
            f"refused to load global {_clip(f'{module}.{name}')} "
            f"({verdict.severity.name.lower()}: {_clip(verdict.reason, 300)}); "
            "nothing was executed",
            path=path,
            hint=HINT,
        )
    try:
        obj: object = importlib.import_module(m)
        for part in n.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise InputError(
            f"the model needs {full}, which is not available here: {exc}",
            path=path,
            hint="install the library version the model was saved with",
        ) from exc
    problem = check_kind(obj, verdict.spec)
    if problem is not None:
        raise PickleRefusedError(
            f"refused to load global {_clip(full)}: {problem}; nothing was executed",
            path=path,
            hint=HINT,
        )
    if checked:
        return _ArgsChecked(m, n, obj, path, policy), full, verdict.spec
    return obj, full, verdict.spec


class _ArgsChecked:
    """A callable whose safety depends on its arguments: check them, then call."""

    def __init__(self, m: str, n: str, fn: Any, path: str, policy: Policy | None) -> None:
        self._m, self._n, self._fn, self._path, self._policy = m, n, fn, path, policy

    def __call__(self, *args: object) -> object:
        verdict = check_reconstruct_args(self._m, self._n, args, self._policy)
        if verdict is None or verdict.severity != Severity.INFO:
            why = verdict.reason if verdict is not None else "arguments not checkable"
            raise PickleRefusedError(
                f"refused call {self._m}.{self._n}{_short(args)}: {why}; nothing was executed",
                path=self._path,
                hint=HINT,
            )
        return self._fn(*args)


class _NestedLoader:
    """``torch.storage._load_from_bytes``: the same restrictions, nested."""

    def __init__(self, m: str, n: str, path: str, policy: Policy | None, depth: int) -> None:
        self._path = f"{path}!{m}.{n}"
        self._policy = policy
        self._depth = depth + 1

    def __call__(self, data: bytes) -> object:
        if self._depth > MAX_NESTING:
            raise PickleRefusedError(
                f"pickles nested deeper than {MAX_NESTING}", path=self._path, hint=HINT
            )
        if data[:2] == b"PK":  # torch.load would dispatch a TorchScript archive to torch.jit.load
            raise PickleRefusedError(
                "refused a zip archive given to torch.storage._load_from_bytes (torch writes "
                "the legacy format there); nothing was executed",
                path=self._path,
                hint=HINT,
            )
        return _load_torch_bytes(bytes(data), self._path, self._policy, self._depth)


def _load_torch_bytes(data: bytes, path: str, policy: Policy | None, depth: int) -> object:
    import torch

    module = _torch_pickle_module(path, policy, depth, len(data))
    return torch.load(
        io.BytesIO(data), map_location="cpu", pickle_module=module, weights_only=False
    )


def _torch_pickle_module(
    path: str, policy: Policy | None, depth: int, limit: int
) -> types.SimpleNamespace:
    """A pickle module for ``torch.load`` whose unpickler is this one; storage sizes bounded."""

    class TorchUnpickler(_RestrictedUnpickler):
        def __init__(self, file: IO[bytes], **kwargs: Any) -> None:
            encoding = kwargs.get("encoding", "ASCII")
            super().__init__(file, path=path, policy=policy, depth=depth, encoding=encoding)

        def __setattr__(self, key: str, value: Any) -> None:
            if key == "persistent_load":  # torch installs its own: bound what it allocates
                value = _bounded_storages(value, path, limit)
            object.__setattr__(self, key, value)

    def load(file: IO[bytes], **kwargs: Any) -> object:
        return TorchUnpickler(file, **kwargs).load()

    return types.SimpleNamespace(
        __name__="modelcrate.restricted", Unpickler=TorchUnpickler, load=load
    )


def _bounded_storages(persistent_load: Any, path: str, limit: int) -> Any:
    """torch's legacy persistent_load allocates ``numel`` elements before reading the data:
    the literal must hold them (the scanner checks the same)."""
    import torch

    def checked(pid: Any) -> Any:
        kind = pid[0] if type(pid) is tuple and pid else None
        if kind == "storage" and len(pid) >= 5:
            dtype = getattr(pid[1], "dtype", None)
            size: int = torch._utils._element_size(dtype) if dtype is not None else 1  # type: ignore[no-untyped-call]
            numel = pid[4]
            if type(numel) is not int or numel < 0 or numel * size > limit:
                raise PickleRefusedError(
                    f"refused a torch storage of {numel} elements in a {limit}-byte literal; "
                    "nothing was executed",
                    path=path,
                    hint=HINT,
                )
        elif kind != "module":
            raise _persistent_refused(path)
        return persistent_load(pid)

    return checked


def _array_class(sub: object, ndarray: type) -> bool:
    """joblib's wrapper names the array's class: an ndarray subclass find_class admitted."""
    return isinstance(sub, type) and issubclass(sub, ndarray)


def _short(args: tuple[object, ...]) -> str:
    return _clip(repr(args))


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _persistent_refused(path: str) -> PickleRefusedError:
    return PickleRefusedError(
        "refused persistent id in the pickle stream (an external object reference)",
        path=path,
        hint=HINT,
    )


class _RestrictedUnpickler(Guard, pickle._Unpickler):
    """The pure-Python unpickler (so calls and BUILD can be guarded), allowlisted find_class."""

    dispatch = pickle._Unpickler.dispatch.copy()

    def __init__(
        self,
        file: IO[bytes],
        *,
        path: str,
        policy: Policy | None,
        depth: int = 0,
        encoding: str = "ASCII",
    ) -> None:
        super().__init__(file, encoding=encoding)
        self._path = path
        self._policy = policy
        self._depth = depth
        self._guard_init()

    def find_class(self, module: str, name: str) -> Any:
        obj, full, spec = resolve_global(
            module, name, path=self._path, policy=self._policy, depth=self._depth
        )
        self._register_global(obj, full, spec)
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise _persistent_refused(self._path)


for _op, _method in GUARDED_OPS.items():
    _RestrictedUnpickler.dispatch[_op[0]] = getattr(Guard, _method)


def _joblib_unpickler_class() -> type[Any]:
    """Built lazily: joblib is imported only when a joblib file is loaded."""
    global _JOBLIB_CLASS  # noqa: PLW0603 - a one-time lazy definition, not state
    if _JOBLIB_CLASS is None:
        _JOBLIB_CLASS = _define_joblib_unpickler()
    return _JOBLIB_CLASS


_JOBLIB_CLASS: type[Any] | None = None


def _define_joblib_unpickler() -> type[Any]:
    import numpy as np
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    class SafeNumpyUnpickler(Guard, NumpyUnpickler):  # type: ignore[misc]
        dispatch = NumpyUnpickler.dispatch.copy()

        def __init__(self, filename: str, fobj: IO[bytes], policy: Policy | None) -> None:
            super().__init__(filename, fobj, ensure_native_byte_order=True, mmap_mode=None)
            self._policy = policy
            self._path = filename
            self._guard_init()

        def find_class(self, module: str, name: str) -> Any:
            obj, full, spec = resolve_global(module, name, path=self.filename, policy=self._policy)
            self._register_global(obj, full, spec)
            return obj

        def persistent_load(self, pid: Any) -> Any:
            raise _persistent_refused(self.filename)

        def load_build(self) -> None:
            self._guard_mutation(self.stack[-2], "BUILD", self.stack[-1])
            pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
            if isinstance(self.stack[-1], NumpyArrayWrapper):
                wrapper = self.stack.pop()
                array = self._read_array(wrapper)
                self.stack.append(array)
                # the array stands where the wrapper was: a fresh object the pickle built
                self._made[id(array)] = ("joblib.numpy_pickle.NumpyArrayWrapper", Out.FRESH,
                                         None, None)  # fmt: skip
                self._keep.append(array)

        def _read_array(self, w: Any) -> Any:
            shape: Any = getattr(w, "shape", None)
            dtype: Any = getattr(w, "dtype", None)
            ok = (
                isinstance(dtype, np.dtype)
                and isinstance(shape, tuple)
                and all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape)
                and getattr(w, "order", None) in ("C", "F")
                and _array_class(getattr(w, "subclass", None), np.ndarray)
            )
            if not ok:
                raise PickleRefusedError(
                    "malformed joblib array header (shape/dtype/order/subclass)",
                    path=self.filename,
                    hint="the file is corrupt or forged; re-save the model",
                )
            if dtype.hasobject:  # a nested pickle: read it with the same restrictions
                inner = _RestrictedUnpickler(
                    self.file_handle, path=self.filename, policy=self._policy
                )
                arr = inner.load()
                if not isinstance(arr, np.ndarray):
                    raise PickleRefusedError(
                        "joblib object array did not decode to an array",
                        path=self.filename,
                        hint="the file is corrupt or forged; re-save the model",
                    )
                return arr
            nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if nbytes > MAX_ARRAY_BYTES:
                raise PickleRefusedError(
                    f"joblib array claims {nbytes} bytes, over the {MAX_ARRAY_BYTES} limit",
                    path=self.filename,
                    hint="the file is corrupt or forged; re-save the model",
                )
            return w.read(self, self.ensure_native_byte_order)

    for op, method in GUARDED_OPS.items():
        if op != pickle.BUILD:
            SafeNumpyUnpickler.dispatch[op[0]] = getattr(Guard, method)
    SafeNumpyUnpickler.dispatch[pickle.BUILD[0]] = SafeNumpyUnpickler.load_build
    return SafeNumpyUnpickler
