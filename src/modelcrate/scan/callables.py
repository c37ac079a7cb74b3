"""What an allowlisted global may do when a pickle uses it: one model for scan and load.

The allowlist (:mod:`modelcrate.scan.pickle_allowlist`) says *which* globals a pickle may
import; a :class:`Spec` says *how* each may then be used. The scanner
(:mod:`modelcrate.scan.pickle_vm`, on symbolic values) and the restricted unpickler
(:mod:`modelcrate.formats.restricted_unpickler`, on the real objects, just before each call)
ask the same questions through :func:`judge_call`, :func:`mutation_problem` and
:func:`kept_problem`, and read values through the same small :class:`Values` interface, so
what one refuses the other refuses.

A spec says:

* ``kind``: a class, a function, or a value (an immutable object such as ``torch.float32``).
  The unpickler checks it on the object it imported (a class must be ``isinstance(obj,
  type)``); nothing on the allowlist may be a module or a mutable container.
* ``call`` / ``new``: whether the global may be *called* (REDUCE; INST/OBJ with arguments;
  Hydra's instantiate) or *instantiated without ``__init__``* (``cls.__new__``: NEWOBJ,
  ``copyreg.__newobj__``, ``copyreg._reconstructor``), and what comes back: ``FRESH`` (a new
  mutable object the pickle owns, which BUILD/SETITEM/APPEND may fill), ``SHARED`` (possibly
  an existing object: an enum member, a cached dtype) or ``VALUE`` (new but never modified by
  a pickle: a tensor, an immutable scalar). ``None``: the files its library writes never use
  it that way, so a pickle may not either (a ufunc is referenced, never called; a module
  layer is rebuilt with ``__new__`` + BUILD, never by running ``__init__``).
* ``rule``: the bounds on its arguments (sizes, lengths, digits, codecs, and which classes it
  calls or instantiates in turn), a function of :data:`RULES`.
* ``keeps``: the result keeps references to its arguments (``ChainMap`` writes through to its
  first mapping): those must be objects the pickle built, never module-level ones.

Nothing here imports anything; the rules only look at :class:`View`\\ s of argument values.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from modelcrate.scan.findings import Severity

__all__ = [
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_TOTAL",
    "RULES",
    "Judgement",
    "Kind",
    "Out",
    "Spec",
    "Tag",
    "Values",
    "View",
    "judge_call",
    "kept_problem",
    "kept_state_problem",
    "mutation_problem",
]

MAX_ITEMS = 1 << 20  # one call: items made from a number or from values computed while loading
MAX_TOTAL = 1 << 22  # one stream: the sum of those
MAX_DIGITS = 4300  # text parsed as a number (CPython's default int_max_str_digits)
MAX_EXPONENT = 4300  # |exponent| of a Decimal/Fraction: Fraction("1e999999999") is 10**999999999
MAX_DTYPE_TEXT = 256
MAX_NESTED_BYTES = 512 << 20  # a nested pickle literal (the scanner's max_member_bytes)
MAX_DEPTH = 3  # calls that make calls (copyreg._reconstructor -> base(state) -> ...)
SAFE_CODECS = frozenset(
    {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1", "utf-8", "utf8", "utf_8",
     "ascii"}
)  # fmt: skip


class Kind(enum.Enum):
    CLASS = "class"
    FUNCTION = "function"
    VALUE = "value"


class Out(enum.Enum):
    """What a call returns, as far as later opcodes may treat it."""

    FRESH = "fresh"  # new, mutable, owned by the pickle: BUILD/SETITEM/APPEND may fill it
    SHARED = "shared"  # possibly an existing object (enum member, cached dtype): never modified
    VALUE = "value"  # new but not modified by pickles (tensors, arrays, immutable scalars)


class How(enum.Enum):
    CALL = "call"  # func(*args): REDUCE, INST/OBJ with arguments, instantiate
    NEW = "new"  # cls.__new__(cls, *args): NEWOBJ(_EX), copyreg.__newobj__/_reconstructor


@dataclass(frozen=True, slots=True)
class Spec:
    """How one allowlisted global may be used (see the module docstring)."""

    kind: Kind
    call: Out | None = None
    new: Out | None = None
    rule: str = ""
    keeps: bool = False
    calls: tuple[int, ...] = ()  # arguments the result calls later (partial's function)


class Tag(enum.Enum):
    CONST = "constant"  # None/bool/int/float/str/bytes from the stream
    LITERAL = "literal"  # a list/tuple/dict/set built by the stream's own opcodes
    GLOBAL = "global"  # a module attribute the stream imported
    MADE = "made"  # the result of a call made while loading
    OTHER = "other"  # from outside the stream: persistent ids, extensions, buffers


@dataclass(frozen=True, slots=True)
class View:
    """One value as the rules see it, on either side.

    ``value``: a CONST's value (``None`` for text the scanner left in the file, then ``size``
    holds its length). ``name``: a GLOBAL's ``module.qualname`` or a MADE value's callee.
    ``spec``: a GLOBAL's spec (``None`` when only the policy admits it). ``out``/``size``: for
    MADE values, what the call returned and how many items it yields when iterated (``None``:
    unknown). ``size`` is also the length of CONST text and LITERAL containers.
    """

    tag: Tag
    value: object = None
    name: str = ""
    spec: Spec | None = None
    out: Out = Out.VALUE
    size: int | None = None


class Values(Protocol):
    """How a side shows its values to the rules (symbolic in the scanner, real when loading)."""

    def view(self, value: object) -> View: ...

    def items(self, value: object) -> Sequence[object] | None:
        """The items of a LITERAL list/tuple/set, else ``None``."""

    def entry(self, value: object, key: str) -> tuple[bool, object]:
        """``(True, item)`` for a string key of a LITERAL dict, else ``(False, None)``."""

    def members(self, value: object) -> Sequence[object]:
        """The items of a LITERAL list/tuple/set or the values of a LITERAL dict."""


@dataclass(frozen=True, slots=True)
class Judgement:
    """The verdict on one call: ``problem`` is ``None`` when the call is admitted."""

    problem: str | None
    out: Out = Out.FRESH
    size: int | None = None
    cost: int = 0


@dataclass(slots=True)
class Call:
    """The call a rule looks at, with helpers to view its arguments."""

    name: str
    args: Sequence[object]
    how: How
    vals: Values
    kwargs: object = None

    def arg(self, i: int) -> View | None:
        return self.vals.view(self.args[i]) if i < len(self.args) else None


@dataclass(slots=True)
class RuleResult:
    problem: str | None = None
    out: Out | None = None  # overrides the spec's
    size: int | None = None
    cost: int = 0
    inner: list[tuple[object, Sequence[object], How]] | None = None  # calls it makes in turn


Rule = Callable[[Call], RuleResult]
_ADMITTED = Judgement(None)


def judge_call(
    callee: View,
    args: object,
    how: How,
    vals: Values,
    *,
    kwargs: object = None,
    depth: int = 0,
) -> Judgement:
    """May ``callee`` be called (``how``) with ``args``, and what does it return?

    ``args`` is the argument tuple as the side holds it (the scanner may hold a value computed
    at load time instead of a tuple). A callee that is not a GLOBAL is refused (a legitimate
    pickle calls module-level callables only); a GLOBAL without a spec (admitted by the
    user's policy, or already reported as unknown) is not constrained further.
    """
    if callee.tag is not Tag.GLOBAL:
        return Judgement(f"calls {_what(callee)}, a value computed while loading", Out.VALUE)
    spec = callee.spec
    if spec is None:
        return _ADMITTED
    out = spec.call if how is How.CALL else spec.new
    if out is None:
        verb = "called" if how is How.CALL else "instantiated without __init__ (__new__)"
        return Judgement(
            f"{callee.name} is {verb}; the files its library writes only "
            f"{_uses(spec)}, so this pickle does something else with it",
            Out.VALUE,
        )
    rule = RULES.get(spec.rule) if spec.rule else None
    if rule is None and not spec.keeps:
        return Judgement(None, out)
    items = vals.items(args) if not isinstance(args, tuple) else args
    if items is None:
        return Judgement(f"{callee.name} is called with arguments computed while loading", out)
    call = Call(callee.name, items, how, vals, kwargs)
    res = rule(call) if rule is not None else RuleResult()
    problem = res.problem
    if problem is None and rule is not None and not _empty(kwargs, vals):
        problem = f"{callee.name} is given keyword arguments, which its bounds cannot check"
    if problem is None and spec.keeps:
        kept = (a for i, a in enumerate(items) if i not in spec.calls)
        problem = next(filter(None, (kept_problem(vals.view(a), vals) for a in kept)), None)
    cost = res.cost
    final = res.out or out
    for inner_callee, inner_args, inner_how in res.inner or ():
        if problem is not None:
            break
        if depth >= MAX_DEPTH:
            problem = f"{callee.name} makes calls nested deeper than {MAX_DEPTH}"
            break
        inner = judge_call(vals.view(inner_callee), inner_args, inner_how, vals, depth=depth + 1)
        cost += inner.cost
        if inner.problem is not None:
            verb = "calls" if inner_how is How.CALL else "instantiates"
            problem = f"{callee.name} {verb} its argument: {inner.problem}"
        elif spec.rule in _PASS_OUT:
            final = inner.out
    if problem is None and cost > MAX_ITEMS:
        problem = f"{callee.name} would allocate {cost} items (limit {MAX_ITEMS})"
    return Judgement(problem, final, res.size, cost)


def _empty(kwargs: object, vals: Values) -> bool:
    if kwargs is None:
        return True
    view = vals.view(kwargs)
    return view.tag is Tag.LITERAL and view.size == 0


def mutation_problem(target: View, op: str) -> tuple[Severity, str] | None:
    """BUILD/SETITEM(S)/APPEND(S)/ADDITEMS on ``target``: only on what the pickle built."""
    if target.tag is Tag.LITERAL or (target.tag is Tag.MADE and target.out is Out.FRESH):
        return None
    if target.tag is Tag.GLOBAL:
        return Severity.CRITICAL, f"{op} modifies the module-level object {target.name}"
    if target.tag is Tag.MADE:
        if target.out is Out.SHARED:
            return Severity.CRITICAL, (
                f"{op} modifies the object returned by {target.name}, which may be an existing "
                "object of the loading process (a lookup, not a construction)"
            )
        return Severity.HIGH, (
            f"{op} modifies the result of {target.name}, which pickles of its library never "
            "modify (tensors, arrays and immutable values are rebuilt whole)"
        )
    if target.tag is Tag.OTHER:
        return Severity.HIGH, f"{op} modifies {_what(target)}, which the stream did not build"
    return None  # constants: the loader raises on its own


def kept_problem(view: View, vals: Values, depth: int = 0) -> str | None:
    """Why a constructor that keeps references (``ChainMap``) may not keep ``view``, or None.

    Allowed: constants, literal containers (whose members, two levels down, obey the same
    rule: BUILD state ``{"maps": [m]}``), classes/functions/immutable values of the allowlist,
    and fresh objects the pickle built.
    """
    tag = view.tag
    if tag is Tag.CONST or (tag is Tag.MADE and view.out is Out.FRESH):
        return None
    if tag is Tag.GLOBAL:
        if view.spec is not None:
            return None  # classes, functions and immutable values (checked at load)
        return f"it would keep a reference to the module-level object {view.name}"
    if tag is Tag.LITERAL:
        if depth >= 2:
            return None
        members = vals.members(view.value)
        return next(
            filter(None, (kept_problem(vals.view(x), vals, depth + 1) for x in members)), None
        )
    if tag is Tag.MADE:
        return f"it would keep a reference to the object returned by {view.name}"
    return f"it would keep a reference to {_what(view)}"


def kept_state_problem(spec: Spec, state: object, vals: Values) -> str | None:
    """BUILD on the result of a constructor that keeps references: the state it sets is kept
    too (``ChainMap`` + ``{"maps": [...]}``); a state tuple's callable positions (``partial``'s
    function) are exempt, as in the call."""
    view = vals.view(state)
    items = vals.items(state) if view.tag is Tag.LITERAL else None
    if items is None or not spec.calls:
        return kept_problem(view, vals)
    kept = (x for i, x in enumerate(items) if i not in spec.calls)
    why = next(filter(None, (kept_problem(vals.view(x), vals, 1) for x in kept)), None)
    if why is None and spec.rule == "partial" and len(items) >= 2:
        # partial's state (func, args, kwds, dict): the bound arguments, as in the call
        bound = vals.items(items[1])
        if bound is None:
            return "partial's arguments are computed while loading"
        why = bound_problem(items[0], bound, vals)
        keywords = len(items) >= 3 and not _empty(items[2], vals)
        if why is None and keywords and _has_rule(items[0], vals):
            why = "partial binds keyword arguments to a callable with argument bounds"
    return why


def _has_rule(func: object, vals: Values) -> bool:
    spec = vals.view(func).spec
    return spec is not None and bool(spec.rule)


def _what(view: View) -> str:
    if view.tag is Tag.MADE:
        return f"the result of {view.name}(...)"
    if view.tag is Tag.GLOBAL:
        return view.name
    return f"a {view.tag.value} value"


def _uses(spec: Spec) -> str:
    if spec.call is None and spec.new is None:
        return "refer to it"
    return "call it" if spec.new is None else "instantiate it with __new__"


# ---------------------------------------------------------------------------------- rules


def _shape(view: View | None, vals: Values) -> int | None:
    """Element count of a shape argument (an int or a literal tuple of ints), else None."""
    if view is None:
        return None
    if view.tag is Tag.CONST and type(view.value) is int:
        return max(view.value, 0)
    if view.tag is not Tag.LITERAL:
        return None
    count = 1
    for dim in vals.items(view.value) or ():
        if type(dim) is not int:  # an int is a constant on both sides; anything else is viewed
            d = vals.view(dim)
            if d.tag is not Tag.CONST or type(d.value) is not int:
                return None
            dim = d.value
        if dim < 0:
            return None
        count *= dim
        if count > 1 << 62:
            return count
    return count


def _iterable(view: View | None, allow_int: bool = False) -> RuleResult:
    """An argument a constructor iterates: its item count must be known (literal or bounded)."""
    if view is None:
        return RuleResult(size=0)
    tag = view.tag
    if tag is Tag.CONST:
        if type(view.value) is int and allow_int:  # bytes(n): n zero bytes
            n = max(view.value, 0)
            if n > MAX_ITEMS:
                return RuleResult(f"allocates {n} bytes from a number (limit {MAX_ITEMS})")
            return RuleResult(size=n, cost=n)
        return RuleResult(size=view.size or 0)  # text: its length; others are not iterable
    if tag is Tag.LITERAL:
        return RuleResult(size=view.size)
    if tag is Tag.MADE:
        if view.size is None:
            return RuleResult(
                f"iterates the result of {view.name}(...), whose item count is only known "
                "while loading"
            )
        if view.size > MAX_ITEMS:
            return RuleResult(f"materialises {view.size} items (limit {MAX_ITEMS})")
        return RuleResult(size=view.size, cost=view.size)
    return RuleResult(f"iterates {_what(view)}")


def _materialise(call: Call) -> RuleResult:
    # dict(mapping), list(iterable), OrderedDict(items), torch.Size(dims)...: argument 0;
    # defaultdict(factory, items): argument 1
    return _iterable(call.arg(1 if call.name == "collections.defaultdict" else 0))


def _bytes(call: Call) -> RuleResult:
    res = _iterable(call.arg(0), allow_int=True)
    if res.problem is None:
        res.problem = _codec(call.arg(1))
    return res


def _str(call: Call) -> RuleResult:
    return RuleResult(_codec(call.arg(1)))


def _codec(view: View | None) -> str | None:
    if view is None:
        return None
    if view.tag is Tag.CONST and type(view.value) is str and view.value.lower() in SAFE_CODECS:
        return None
    return "names a codec other than latin-1/utf-8/ascii (codecs are imported by name)"


def _range(call: Call) -> RuleResult:
    # a range is lazy, but whatever iterates it later (list(), numpy, pandas, the model's own
    # code) materialises it: its size is bounded where it is made
    nums = [call.arg(i) for i in range(len(call.args))]
    ints = [v.value for v in nums if v is not None and v.tag is Tag.CONST and type(v.value) is int]
    if not 1 <= len(ints) == len(nums) <= 3:
        return RuleResult("a range whose bounds are computed while loading")
    start, stop, step = (0, ints[0], 1) if len(ints) == 1 else (ints[0], ints[1], 1)
    if len(ints) == 3:
        step = ints[2]
    if step == 0:
        return RuleResult()  # the constructor raises
    span = max((stop - start + step - (1 if step > 0 else -1)) // step, 0)
    if span > MAX_ITEMS:
        return RuleResult(f"a range of {span} items (limit {MAX_ITEMS})")
    return RuleResult(size=span)


def _partial(call: Call) -> RuleResult:
    # partial(func, *args): the application calls func(*args) later; the bounds of func hold
    # for the arguments bound now
    if not call.args:
        return RuleResult()
    return RuleResult(bound_problem(call.args[0], call.args[1:], call.vals))


def bound_problem(func: object, args: Sequence[object], vals: Values) -> str | None:
    """The argument rule of ``func`` (a GLOBAL with a spec) applied to ``args``, else None."""
    view = vals.view(func)
    spec = view.spec
    if view.tag is not Tag.GLOBAL or spec is None or not spec.rule:
        return None
    rule = RULES.get(spec.rule)
    if rule is None:
        return None
    problem = rule(Call(view.name, args, How.CALL, vals)).problem
    return None if problem is None else f"binds arguments to {view.name} that {problem}"


def _digits(view: View | None, numeric: bool = True) -> str | None:
    """A number given as text, or as an already-bounded number."""
    if view is None:
        return None
    if view.tag is Tag.CONST:
        if isinstance(view.value, str | bytes) or (view.value is None and view.size is not None):
            n = view.size or 0
            if n > MAX_DIGITS:
                return f"parses a {n}-character number (limit {MAX_DIGITS})"
            text = view.value.decode("latin-1") if isinstance(view.value, bytes) else view.value
            exp = _exponent(text) if isinstance(text, str) else None
            if exp is None or exp > MAX_EXPONENT:
                return f"parses a number with an exponent over {MAX_EXPONENT}"
        return None
    if view.tag is Tag.MADE and view.name in _NUMBERS:
        return None
    if view.tag is Tag.LITERAL and not numeric:
        return None
    return f"converts {_what(view)} to a number"


def _exponent(text: str) -> int | None:
    t = text.strip().lower().replace("_", "")
    i = t.rfind("e")
    if i < 0 or "inf" in t:
        return 0
    tail = t[i + 1 :].lstrip("+-")
    if not tail.isdigit():
        return 0  # not a number: the constructor raises
    return None if len(tail) > 9 else int(tail)


def _number(call: Call) -> RuleResult:
    return RuleResult(
        next(filter(None, (_digits(call.arg(i)) for i in range(min(len(call.args), 2)))), None)
    )


def _decimal(call: Call) -> RuleResult:
    first = call.arg(0)
    if first is not None and first.tag is Tag.LITERAL:  # (sign, digits, exponent)
        items = call.vals.items(first.value) or ()
        exp = call.vals.view(items[2]) if len(items) == 3 else None
        if exp is None or exp.tag is not Tag.CONST or type(exp.value) is not int:
            return RuleResult("Decimal from a tuple without a constant exponent")
        if abs(exp.value) > MAX_EXPONENT or (first.size or 0) > MAX_DIGITS:
            return RuleResult(f"Decimal with an exponent over {MAX_EXPONENT}")
        digits = call.vals.view(items[1])
        if (digits.size or 0) > MAX_DIGITS:
            return RuleResult(f"Decimal with over {MAX_DIGITS} digits")
        return RuleResult()
    context = call.arg(1)
    if context is not None and not (context.tag is Tag.CONST and context.value is None):
        return RuleResult("Decimal with a context argument")
    return RuleResult(_digits(first))


def _fraction(call: Call) -> RuleResult:
    return _number(call)


def _np_dtype(call: Call) -> RuleResult:
    # numpy writes dtype("f8", False, True); record arrays dtype(numpy.record, ...)
    first = call.arg(0)
    if first is not None and first.tag is Tag.GLOBAL:
        if first.spec is None or first.spec.kind is not Kind.CLASS:
            return RuleResult("numpy.dtype from something other than an allowlisted type")
    elif first is None or first.tag is not Tag.CONST or not isinstance(first.value, str | bytes):
        return RuleResult("numpy.dtype from something other than a type string")
    elif (first.size or 0) > MAX_DTYPE_TEXT:
        return RuleResult(f"numpy.dtype from a {first.size}-character string")
    copy = call.arg(2)
    fresh = copy is not None and copy.tag is Tag.CONST and copy.value is True
    return RuleResult(out=Out.FRESH if fresh else Out.SHARED)  # np.dtype("f8") is a singleton


def _array_alloc(shape: View | None, dtype: View | None, vals: Values, what: str) -> RuleResult:
    n = _shape(shape, vals)
    if n is None:
        return RuleResult(f"{what} with a shape computed while loading")
    if n > MAX_ITEMS:
        return RuleResult(f"{what} allocates {n} elements before its data is read")
    if dtype is None or dtype.tag is not Tag.CONST or (dtype.size or 0) > 8:
        return RuleResult(f"{what} with a dtype other than a short type code")
    return RuleResult(cost=n)


def _np_reconstruct(call: Call) -> RuleResult:
    # numpy writes _reconstruct(ndarray, (0,), b"b") and fills the array with BUILD
    return _array_alloc(call.arg(1), call.arg(2), call.vals, "numpy's _reconstruct")


def _ma_reconstruct(call: Call) -> RuleResult:
    return _array_alloc(call.arg(2), call.arg(3), call.vals, "numpy.ma's _mareconstruct")


def _qtensor(call: Call) -> RuleResult:
    n = _shape(call.arg(2), call.vals)
    if n is None or n > 1 << 32:
        return RuleResult("a quantized tensor of unknown or huge size is allocated before its data")
    return RuleResult()


def _sklearn_tree(call: Call) -> RuleResult:
    # Tree(n_features, n_classes, n_outputs): __cinit__ allocates n_outputs entries
    n_out = call.arg(2)
    if n_out is None or n_out.tag is not Tag.CONST or type(n_out.value) is not int:
        return RuleResult("sklearn Tree with a computed output count")
    if not 0 < n_out.value <= 1 << 16:
        return RuleResult(f"sklearn Tree with {n_out.value} outputs")
    return RuleResult()


def _global_arg(call: Call, i: int, how: How, rest: Sequence[object] = ()) -> RuleResult:
    view = call.arg(i)
    if view is None or view.tag is not Tag.GLOBAL:
        return RuleResult(f"{call.name} is given a {'missing' if view is None else _what(view)} "
                          "class to instantiate")  # fmt: skip
    return RuleResult(inner=[(call.args[i], rest, how)])


def _new_arg0(call: Call) -> RuleResult:
    """sklearn newObj(cls), Cython __pyx_unpickle_X(cls, checksum, state), pandas _new_Index
    (cls, d), torch _rebuild_wrapper_subclass(cls, ...): ``cls.__new__(cls)``."""
    return _global_arg(call, 0, How.NEW)


def _np_random(call: Call) -> RuleResult:
    # __bit_generator_ctor(cls) / __randomstate_ctor(cls_or_instance, ctor): cls()
    inner: list[tuple[object, Sequence[object], How]] = []
    for a in call.args:
        v = call.vals.view(a)
        if v.tag is Tag.GLOBAL and v.spec is not None and v.spec.kind is Kind.CLASS:
            inner.append((a, (), How.CALL))
    return RuleResult(inner=inner)


def _rebuild_from_type(call: Call) -> RuleResult:
    # _rebuild_from_type(_v2)(func, new_type, args, state): func(*args).as_subclass(new_type)
    args = call.arg(2)
    items = call.vals.items(args.value) if args is not None and args.tag is Tag.LITERAL else None
    if items is None:
        return RuleResult(f"{call.name} with arguments computed while loading")
    cls = call.arg(1)
    if cls is None or cls.tag is not Tag.GLOBAL:
        return RuleResult(f"{call.name} with a tensor type computed while loading")
    return _global_arg(call, 0, How.CALL, items)


def _reconstructor(call: Call) -> RuleResult:
    # copyreg._reconstructor(cls, base, state): base.__new__(cls, state); base.__init__(obj, state)
    res = _global_arg(call, 0, How.NEW)
    base = call.arg(1)
    if res.problem is None:
        if base is None or base.tag is not Tag.GLOBAL:
            return RuleResult("copyreg._reconstructor with a base type computed while loading")
        if base.name != "builtins.object":
            state = call.args[2] if len(call.args) > 2 else None
            res.inner = [*(res.inner or ()), (call.args[1], (state,), How.CALL)]
    res.out = Out.FRESH
    return res


def _newobj(call: Call) -> RuleResult:
    # copyreg.__newobj__(cls, *args) -> cls.__new__(cls, *args)
    return _global_arg(call, 0, How.NEW, tuple(call.args[1:]))


def _newobj_ex(call: Call) -> RuleResult:
    # copyreg.__newobj_ex__(cls, args, kwargs)
    args = call.arg(1)
    items = call.vals.items(args.value) if args is not None and args.tag is Tag.LITERAL else None
    return _global_arg(call, 0, How.NEW, items or ())


def _nested_literal(call: Call) -> RuleResult:
    # torch.storage._load_from_bytes(data): exactly the bytes in the file
    first = call.arg(0)
    if len(call.args) != 1 or first is None or first.tag is not Tag.CONST:
        return RuleResult(f"{call.name} is given something other than one bytes literal")
    if not isinstance(first.value, bytes) or (first.size or 0) > MAX_NESTED_BYTES:
        return RuleResult(f"{call.name} is given something other than one bytes literal")
    return RuleResult()


def _pandas(call: Call) -> RuleResult:
    # pandas dtypes cache their instances: only the argument-less __new__ of pickle
    # compatibility returns a new object
    if call.how is How.NEW and not call.args:
        return RuleResult()
    return RuleResult(out=Out.VALUE)


_NUMBERS = frozenset(
    {"builtins.int", "builtins.float", "builtins.complex", "builtins.bool", "decimal.Decimal",
     "fractions.Fraction"}
)  # fmt: skip
_PASS_OUT = frozenset({"new_arg0", "newobj", "newobj_ex"})  # they return what they instantiate

RULES: dict[str, Rule] = {
    "materialise": _materialise,
    "bytes": _bytes,
    "str": _str,
    "range": _range,
    "number": _number,
    "decimal": _decimal,
    "fraction": _fraction,
    "np_dtype": _np_dtype,
    "np_reconstruct": _np_reconstruct,
    "ma_reconstruct": _ma_reconstruct,
    "np_random": _np_random,
    "qtensor": _qtensor,
    "sklearn_tree": _sklearn_tree,
    "new_arg0": _new_arg0,
    "rebuild_from_type": _rebuild_from_type,
    "reconstructor": _reconstructor,
    "newobj": _newobj,
    "newobj_ex": _newobj_ex,
    "pandas": _pandas,
    "nested_literal": _nested_literal,
    "partial": _partial,
}
