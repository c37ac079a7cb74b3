"""The callables model (:mod:`modelcrate.scan.callables`) enforced on real objects at load time.

:class:`Guard` is mixed into the restricted unpicklers (plain pickle and joblib). It remembers
where every object on the stack came from (imported by ``find_class``, returned by a call,
or built by the stream's own opcodes) and, before each call and each BUILD/SETITEM(S)/
APPEND(S)/ADDITEMS, asks the same questions the scanner asks of its symbolic values:

* may this global be called / instantiated with ``__new__`` at all, with these arguments
  (sizes, lengths, digits, codecs, the classes it instantiates in turn)?
* is the object being filled one the pickle built (a literal container or a FRESH result),
  rather than a module-level object or something a function looked up?
* does a constructor that keeps references (``ChainMap``) only keep objects the pickle built?

Calls the pickle makes are refused before they run. Objects are tracked by ``id`` with a
strong reference kept for the whole load, so an id is never reused. Call results that are
immutable scalars (int, str, bytes, ...) are not tracked: the loader sees them as constants,
where the scanner sees a call result, so for those the scanner is the stricter of the two.
"""

from __future__ import annotations

import pickle
import types
from collections.abc import Sequence
from typing import Any

from modelcrate.errors import InputError
from modelcrate.scan.callables import (
    MAX_TOTAL,
    How,
    Judgement,
    Kind,
    Out,
    Spec,
    Tag,
    View,
    judge_call,
    kept_state_problem,
    mutation_problem,
)

__all__ = ["GUARDED_OPS", "HINT", "Guard", "PickleRefusedError", "check_kind"]

_SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes})
_LITERALS = frozenset({list, tuple, dict, set, frozenset})
HINT = (
    "the file names code or uses data types in ways modelcrate does not load; re-save the "
    "model from a trusted environment with only scikit-learn/xgboost/lightgbm/numpy objects, "
    "or add the global to a scan policy file (--policy) if you trust it"
)


class PickleRefusedError(InputError):
    """The stream asked for something the allowlist does not admit; nothing was executed."""

    code = "pickle-refused"


class Guard:
    """Mixin for ``pickle._Unpickler`` subclasses; call :meth:`_guard_init` in ``__init__``."""

    stack: list[Any]
    metastack: list[list[Any]]
    _path: str

    def _guard_init(self) -> None:
        self._globals: dict[int, tuple[str, Spec | None]] = {}
        self._made: dict[int, tuple[str, Out, int | None, Spec | None]] = {}
        self._keep: list[object] = []
        self._cost = 0

    def _refuse(self, message: str) -> PickleRefusedError:
        return PickleRefusedError(message, path=self._path, hint=HINT)

    def _register_global(self, obj: object, full: str, spec: Spec | None) -> None:
        self._globals[id(obj)] = (full, spec)
        self._keep.append(obj)

    # -- the Values interface -------------------------------------------------------------

    def view(self, value: object) -> View:
        key = id(value)
        g = self._globals.get(key)
        if g is not None:
            return View(Tag.GLOBAL, name=g[0], spec=g[1])
        m = self._made.get(key)
        if m is not None:
            return View(Tag.MADE, name=m[0], out=m[1], size=m[2])
        t = type(value)
        if t in _SCALARS:
            return View(Tag.CONST, value, size=len(value) if t is str or t is bytes else None)  # type: ignore[arg-type]
        if t in _LITERALS:
            return View(Tag.LITERAL, value, size=len(value))  # type: ignore[arg-type]
        return View(Tag.OTHER)

    def items(self, value: object) -> Sequence[object] | None:
        if isinstance(value, list | tuple):
            return value
        if isinstance(value, set | frozenset):
            return list(value)
        return None

    def entry(self, value: object, key: str) -> tuple[bool, object]:
        if type(value) is dict and key in value:
            return True, value[key]
        return False, None

    def members(self, value: object) -> Sequence[object]:
        if type(value) is dict:
            return list(value.values())
        return self.items(value) or ()

    # -- calls ------------------------------------------------------------------------------

    def _judge(self, func: object, args: object, how: How, kwargs: object = None) -> Judgement:
        callee = self.view(func)
        j = judge_call(callee, args, how, self, kwargs=kwargs)
        if j.problem is not None:
            raise self._refuse(f"refused call: {j.problem}; nothing was executed")
        self._cost += j.cost
        if self._cost > MAX_TOTAL:
            raise self._refuse(
                f"refused call of {callee.name}: calls while loading allocate {self._cost} "
                f"items from numbers and computed sequences (limit {MAX_TOTAL}); this call "
                "was not made"
            )
        return j

    def _record(self, result: object, func: object, j: Judgement) -> None:
        t = type(result)
        if t in _SCALARS or (t is tuple and not result):
            return  # constants to the loader (and the empty tuple is a shared singleton)
        g = self._globals.get(id(func))
        name, spec = g if g is not None else ("a computed callable", None)
        self._made[id(result)] = (name, j.out, j.size, spec)
        self._keep.append(result)

    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        j = self._judge(func, args, How.CALL)
        result = func(*args)
        stack[-1] = result
        self._record(result, func, j)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        j = self._judge(cls, args, How.NEW)
        obj = cls.__new__(cls, *args)
        self.stack.append(obj)
        self._record(obj, cls, j)

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        j = self._judge(cls, args, How.NEW, kwargs)
        obj = cls.__new__(cls, *args, **kwargs)
        self.stack.append(obj)
        self._record(obj, cls, j)

    def _instantiate(self, klass: Any, args: list[Any]) -> None:
        # pickle's INST/OBJ: klass(*args), or klass.__new__(klass) for a class without args
        new = not args and isinstance(klass, type) and not hasattr(klass, "__getinitargs__")
        j = self._judge(klass, tuple(args), How.NEW if new else How.CALL)
        value = klass.__new__(klass) if new else klass(*args)
        self.stack.append(value)
        self._record(value, klass, j)

    # -- BUILD and the container-filling opcodes -------------------------------------------

    def _guard_mutation(self, target: object, op: str, state: object = None) -> None:
        view = self.view(target)
        found = mutation_problem(view, op)
        if found is not None:
            raise self._refuse(f"refused: {found[1]}; nothing was executed")
        if state is not None and view.tag is Tag.MADE:
            spec = self._made[id(target)][3]
            if spec is not None and spec.keeps:
                why = kept_state_problem(spec, state, self)
                if why is not None:
                    raise self._refuse(
                        f"refused {op} on the result of {view.name}: {why}; nothing was executed"
                    )

    def _marked(self) -> object:
        return self.metastack[-1][-1] if self.metastack and self.metastack[-1] else None

    def load_build(self) -> None:
        self._guard_mutation(self.stack[-2], "BUILD", self.stack[-1])
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]

    def load_setitem(self) -> None:
        self._guard_mutation(self.stack[-3], "SETITEM")
        pickle._Unpickler.load_setitem(self)  # type: ignore[attr-defined]

    def load_setitems(self) -> None:
        self._guard_mutation(self._marked(), "SETITEMS")
        pickle._Unpickler.load_setitems(self)  # type: ignore[attr-defined]

    def load_append(self) -> None:
        self._guard_mutation(self.stack[-2], "APPEND")
        pickle._Unpickler.load_append(self)  # type: ignore[attr-defined]

    def load_appends(self) -> None:
        self._guard_mutation(self._marked(), "APPENDS")
        pickle._Unpickler.load_appends(self)  # type: ignore[attr-defined]

    def load_additems(self) -> None:
        self._guard_mutation(self._marked(), "ADDITEMS")
        pickle._Unpickler.load_additems(self)  # type: ignore[attr-defined]


GUARDED_OPS: dict[bytes, str] = {
    pickle.REDUCE: "load_reduce",
    pickle.NEWOBJ: "load_newobj",
    pickle.NEWOBJ_EX: "load_newobj_ex",
    pickle.BUILD: "load_build",
    pickle.SETITEM: "load_setitem",
    pickle.SETITEMS: "load_setitems",
    pickle.APPEND: "load_append",
    pickle.APPENDS: "load_appends",
    pickle.ADDITEMS: "load_additems",
}


def check_kind(obj: object, spec: Spec | None) -> str | None:
    """Is the imported object what its allowlist entry says (a class, a function, a value)?"""
    if isinstance(obj, types.ModuleType):
        return "it is a module"
    if spec is None:
        return None
    if spec.kind is Kind.CLASS and not isinstance(obj, type):
        return f"its allowlist entry is a class, but it is a {type(obj).__name__}"
    if spec.kind is Kind.FUNCTION and (isinstance(obj, type) or not callable(obj)):
        return f"its allowlist entry is a function, but it is a {type(obj).__name__}"
    if spec.kind is Kind.VALUE and (isinstance(obj, type) or type(obj).__hash__ is None):
        return f"its allowlist entry is an immutable value, but it is a {type(obj).__name__}"
    return None
