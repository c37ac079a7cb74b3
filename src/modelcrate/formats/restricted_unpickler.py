"""Load pickle and joblib files through the scanner's allowlist, never through plain ``pickle``.

The scan gate runs first, but loading does not rely on it: every global the stream names goes
through :func:`~modelcrate.scan.pickle_globals.classify_global` at ``find_class`` time, and only
what it calls ``allowlisted`` (or what the user's policy admits) is imported. Everything else
raises :class:`PickleRefusedError` before anything is imported or called, so a malicious file
that slipped past the scanner still never runs.

Further hardening over the standard unpickler:

* globals whose safety depends on their arguments (numpy's ``_ufunc_reconstruct``,
  ``_codecs.encode``) are returned wrapped: the call's arguments are checked with
  :func:`~modelcrate.scan.pickle_globals.check_reconstruct_args` before the real call;
* ``BUILD`` on a class, function or module is refused (it would mutate shared code objects);
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
from modelcrate.scan.findings import Severity
from modelcrate.scan.pickle_allowlist import ARGS_CHECKED
from modelcrate.scan.pickle_globals import check_reconstruct_args, classify_global, normalize
from modelcrate.scan.policy import Policy

__all__ = ["MAX_ARRAY_BYTES", "PickleRefusedError", "safe_load_joblib", "safe_load_pickle"]

# One joblib array may not claim more than this (a forged shape would otherwise allocate it).
MAX_ARRAY_BYTES = 8 * 1024**3
_ADMITTED = frozenset({"allowlisted", "policy"})
_NO_BUILD = (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType,
             types.MethodType)  # fmt: skip
_HINT = (
    "the file names code that modelcrate does not load; re-save the model from a trusted "
    "environment with only scikit-learn/xgboost/lightgbm/numpy objects, or add the global to a "
    "scan policy file (--policy) if you trust it"
)


class PickleRefusedError(InputError):
    """The stream asked for something the allowlist does not admit; nothing was executed."""

    code = "pickle-refused"


def safe_load_pickle(data: bytes, *, path: str, policy: Policy | None = None) -> object:
    """Unpickle ``data`` (the bytes of ``path``) admitting only allowlisted globals."""
    unpickler = _RestrictedUnpickler(io.BytesIO(data), path=path, policy=policy)
    return _run(unpickler.load, path)


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


def resolve_global(module: str, name: str, *, path: str, policy: Policy | None) -> object:
    """``find_class`` for every unpickler here: import ``module.name`` only if admitted."""
    verdict = classify_global(module, name, policy)
    admitted = verdict.severity == Severity.INFO and verdict.category in _ADMITTED
    checked = ARGS_CHECKED in verdict.arg_callables
    if not (admitted or checked):
        raise PickleRefusedError(
            f"refused to load global {_clip(f'{module}.{name}')} "
            f"({verdict.severity.name.lower()}: {_clip(verdict.reason, 300)}); "
            "nothing was executed",
            path=path,
            hint=_HINT,
        )
    m, n = normalize(module, name)
    try:
        obj: object = importlib.import_module(m)
        for part in n.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise InputError(
            f"the model needs {m}.{n}, which is not available here: {exc}",
            path=path,
            hint="install the library version the model was saved with",
        ) from exc
    if checked:
        return _ArgsChecked(m, n, obj, path, policy)
    return obj


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
                hint=_HINT,
            )
        return self._fn(*args)


def _short(args: tuple[object, ...]) -> str:
    return _clip(repr(args))


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _persistent_refused(path: str) -> PickleRefusedError:
    return PickleRefusedError(
        "refused persistent id in the pickle stream (an external object reference)",
        path=path,
        hint=_HINT,
    )


def _guard_build(stack: list[Any], path: str) -> None:
    inst = stack[-2] if len(stack) >= 2 else None
    if isinstance(inst, (*_NO_BUILD, _ArgsChecked)):
        raise PickleRefusedError(
            f"refused BUILD on {type(inst).__name__} {getattr(inst, '__name__', '?')!s}: it "
            "would modify shared code, not a new object; nothing was executed",
            path=path,
            hint=_HINT,
        )


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler (so ``BUILD`` can be guarded) with an allowlisted find_class."""

    dispatch = pickle._Unpickler.dispatch.copy()
    stack: list[Any]

    def __init__(self, file: IO[bytes], *, path: str, policy: Policy | None) -> None:
        super().__init__(file)
        self._path = path
        self._policy = policy

    def find_class(self, module: str, name: str) -> Any:
        return resolve_global(module, name, path=self._path, policy=self._policy)

    def persistent_load(self, pid: Any) -> Any:
        raise _persistent_refused(self._path)

    def load_build(self) -> None:
        _guard_build(self.stack, self._path)
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]

    dispatch[pickle.BUILD[0]] = load_build  # type: ignore[assignment]


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

    class SafeNumpyUnpickler(NumpyUnpickler):  # type: ignore[misc]
        dispatch = NumpyUnpickler.dispatch.copy()

        def __init__(self, filename: str, fobj: IO[bytes], policy: Policy | None) -> None:
            super().__init__(filename, fobj, ensure_native_byte_order=True, mmap_mode=None)
            self._policy = policy

        def find_class(self, module: str, name: str) -> Any:
            return resolve_global(module, name, path=self.filename, policy=self._policy)

        def persistent_load(self, pid: Any) -> Any:
            raise _persistent_refused(self.filename)

        def load_build(self) -> None:
            _guard_build(self.stack, self.filename)
            pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
            if isinstance(self.stack[-1], NumpyArrayWrapper):
                wrapper = self.stack.pop()
                self.stack.append(self._read_array(wrapper))

        def _read_array(self, w: Any) -> Any:
            shape: Any = getattr(w, "shape", None)
            dtype: Any = getattr(w, "dtype", None)
            ok = (
                isinstance(dtype, np.dtype)
                and isinstance(shape, tuple)
                and all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape)
                and getattr(w, "order", None) in ("C", "F")
                and getattr(w, "subclass", None) in (np.ndarray, np.memmap)
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

        dispatch[pickle.BUILD[0]] = load_build

    return SafeNumpyUnpickler
