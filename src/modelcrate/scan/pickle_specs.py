"""How each allowlisted global may be used: its :class:`~modelcrate.scan.callables.Spec`.

Data only (see :mod:`modelcrate.scan.callables` for what a spec means). Defaults by tier, then
the entries that differ. The guiding rule: a global may be used only the way the files its own
library writes use it. A ufunc or an activation function is only referenced (called later by
the application, never while loading); a ``torch.nn`` layer, a scipy matrix or a Hugging Face
dataclass is rebuilt with ``__new__`` + BUILD, never by running its ``__init__`` (which
allocates by its arguments or acts on the environment); an enum member is looked up, so what
a call returns is SHARED and a pickle may not modify it.
"""

from __future__ import annotations

from modelcrate.scan.callables import Kind, Out, Spec
from modelcrate.scan.pickle_allowlist import (
    HF_ALLOWED,
    ML_LIBS_ALLOWED,
    NUMPY_ALLOWED,
    NUMPY_SCALAR_TYPES,
    PANDAS_CALLED,
    PANDAS_CLASSES,
    PANDAS_FUNCTIONS,
    PANDAS_VALUES,
    SKLEARN_CLASSES,
    SKLEARN_ENUMS,
    SKLEARN_PYX,
    STDLIB_ALLOWED,
    TORCH_ALLOWED,
)

__all__ = ["NESTED_LITERAL_SPEC", "SPECS"]

FRESH, SHARED, VALUE = Out.FRESH, Out.SHARED, Out.VALUE
REF_VALUE = Spec(Kind.VALUE)  # referenced only: dtypes, layouts, ufuncs, pandas.NA
REF_CLASS = Spec(Kind.CLASS)  # referenced only: passed to a reconstructor, never called
REF_FUNC = Spec(Kind.FUNCTION)  # referenced only: called by the application later
NEW_ONLY = Spec(Kind.CLASS, new=FRESH)  # rebuilt with __new__ + BUILD
DATA_CLASS = Spec(Kind.CLASS, call=FRESH, new=FRESH)
ENUM = Spec(Kind.CLASS, call=SHARED, new=SHARED)  # Enum(value) returns the existing member


# torch.storage._load_from_bytes in the restricted unpickler, which loads the literal with
# the same restrictions (the scanner judges the call by the literal's own scan)
NESTED_LITERAL_SPEC = Spec(Kind.FUNCTION, call=VALUE, rule="nested_literal")


def _fn(out: Out = VALUE, rule: str = "") -> Spec:
    return Spec(Kind.FUNCTION, call=out, rule=rule)


def _cls(out: Out, rule: str = "", *, new: Out | None = None, keeps: bool = False) -> Spec:
    return Spec(Kind.CLASS, call=out, new=out if new is None else new, rule=rule, keeps=keeps)


def _first_upper(full: str) -> bool:
    return full.rpartition(".")[2][:1].isupper()


# -- defaults by tier ---------------------------------------------------------------------

SPECS: dict[str, Spec] = {}
for _full in TORCH_ALLOWED:
    if _full.startswith("torch.nn.modules."):
        SPECS[_full] = NEW_ONLY  # full-module checkpoints: _reconstructor/NEWOBJ + BUILD
    elif _full.startswith(("torch._utils._rebuild", "torch._tensor._rebuild")):
        SPECS[_full] = _fn(VALUE)
    elif _full.startswith("torch.nn.functional."):
        SPECS[_full] = REF_FUNC
    elif _full.endswith(("Storage", "Tensor")):
        SPECS[_full] = REF_CLASS  # torch.FloatStorage(10**12) would allocate
    else:
        SPECS[_full] = REF_VALUE  # dtypes, layouts, quantization schemes, memory formats
for _full in NUMPY_ALLOWED:
    _mod, _, _name = _full.rpartition(".")
    if _mod == "numpy.dtypes" or (_mod == "numpy" and _name in NUMPY_SCALAR_TYPES):
        SPECS[_full] = REF_CLASS
    elif _mod in ("numpy", "numpy.core.umath", "numpy._core.umath"):
        SPECS[_full] = REF_VALUE  # ufuncs; scalar types and ndarray/matrix are set below
    else:
        SPECS[_full] = _fn(VALUE)
for _full in ML_LIBS_ALLOWED:
    # metric functions of scorers are referenced; classes (scipy's lowercase matrices too)
    # are rebuilt with __new__ + BUILD; the reconstructors are set below
    SPECS[_full] = (
        REF_FUNC if _full.startswith(("sklearn.metrics._", "sklearn.utils.")) else NEW_ONLY
    )
for _full in HF_ALLOWED:
    SPECS[_full] = NEW_ONLY  # dataclasses: __post_init__ reads files, sets up devices
for _full in SKLEARN_CLASSES:
    SPECS[_full] = ENUM if _full in SKLEARN_ENUMS else DATA_CLASS  # __init__ stores params
SPECS.update(dict.fromkeys(SKLEARN_PYX, _fn(FRESH, "new_arg0")))
for _full in PANDAS_CLASSES:
    # new: the argument-less __new__ of pickle compatibility (BUILD fills it); a call
    # (offsets, Period, dtypes) returns a value or a cached instance
    SPECS[_full] = Spec(
        Kind.CLASS, call=VALUE if _full in PANDAS_CALLED else None, new=FRESH, rule="pandas"
    )
for _full in PANDAS_FUNCTIONS:
    _name = _full.rpartition(".")[2]
    if _name.startswith(("__pyx_unpickle_", "_new_")):
        SPECS[_full] = _fn(FRESH, "new_arg0")  # cls.__new__(cls[, **d]) + state
    elif "nat_unpickle" in _name:
        SPECS[_full] = _fn(SHARED)  # the NaT singleton
    else:
        SPECS[_full] = _fn(VALUE)  # _unpickle_block, _unpickle_timestamp, ...
SPECS.update(dict.fromkeys(PANDAS_VALUES, REF_VALUE))

# -- entries that differ ------------------------------------------------------------------

_NUMBER = _cls(VALUE, "number")
_SEQUENCE = _cls(VALUE, "materialise")  # tuple(...), frozenset(...): iterate a bounded argument
_CONTAINER = _cls(FRESH, "materialise")
_NUMPY_ARRAYS = ("ndarray", "matrix")
_HF_ENUMS = (
    "transformers.training_args.OptimizerNames transformers.training_args.ParallelMode "
    "transformers.trainer_utils.IntervalStrategy transformers.trainer_utils.SchedulerType "
    "transformers.trainer_utils.HubStrategy transformers.trainer_utils.EvaluationStrategy "
    "transformers.trainer_utils.FSDPOption transformers.trainer_utils.SaveStrategy "
    "transformers.trainer_utils.ShardedDDPOption accelerate.utils.dataclasses.DistributedType "
    "trl.trainer.dpo_config.FDivergenceType sentence_transformers.training_args.BatchSamplers "
    "sentence_transformers.training_args.MultiDatasetBatchSamplers"
)

SPECS.update(
    {
        # builtins: the argument bounds run for calls and for cls.__new__ alike
        "builtins.object": DATA_CLASS,
        "builtins.bool": _NUMBER,
        "builtins.int": _NUMBER,
        "builtins.float": _NUMBER,
        "builtins.complex": _NUMBER,
        "builtins.str": _cls(VALUE, "str"),
        "builtins.bytes": _cls(VALUE, "bytes"),
        "builtins.bytearray": _cls(FRESH, "bytes"),
        "builtins.list": _CONTAINER,
        "builtins.dict": _CONTAINER,
        "builtins.set": _CONTAINER,
        "builtins.tuple": _SEQUENCE,
        "builtins.frozenset": _SEQUENCE,
        "builtins.slice": _cls(VALUE),
        "builtins.range": _cls(VALUE, "range"),
        "copyreg._reconstructor": _fn(FRESH, "reconstructor"),
        "copyreg.__newobj__": _fn(FRESH, "newobj"),
        "copyreg.__newobj_ex__": _fn(FRESH, "newobj_ex"),
        "collections.OrderedDict": _CONTAINER,
        "collections.Counter": _CONTAINER,
        "collections.deque": _CONTAINER,
        "collections.defaultdict": _CONTAINER,
        "collections.ChainMap": _cls(FRESH, keeps=True),  # writes through to its first map
        "datetime.date": _cls(VALUE),
        "datetime.datetime": _cls(VALUE),
        "datetime.time": _cls(VALUE),
        "datetime.timedelta": _cls(VALUE),
        "datetime.timezone": _cls(VALUE),
        "decimal.Decimal": _cls(VALUE, "decimal"),
        "fractions.Fraction": _cls(VALUE, "fraction"),
        "argparse.Namespace": DATA_CLASS,
        "types.SimpleNamespace": DATA_CLASS,
        "uuid.UUID": DATA_CLASS,
        "uuid.SafeUUID": ENUM,
        "functools.partial": Spec(
            Kind.CLASS, call=FRESH, new=FRESH, rule="partial", keeps=True, calls=(0,)
        ),  # called by the application later, with the arguments it keeps
        # torch
        "torch.Size": _cls(VALUE, "materialise"),
        "torch.device": _cls(VALUE),
        "torch.Tensor": REF_CLASS,
        "torch.serialization._get_layout": _fn(SHARED),  # returns the torch.strided singleton
        "torch._utils._rebuild_qtensor": _fn(VALUE, "qtensor"),
        "torch._tensor._rebuild_from_type": _fn(VALUE, "rebuild_from_type"),
        "torch._tensor._rebuild_from_type_v2": _fn(VALUE, "rebuild_from_type"),
        # numpy
        "numpy.dtype": _cls(SHARED, "np_dtype"),  # FRESH only with copy=True, as numpy writes
        "numpy.core.multiarray._reconstruct": _fn(FRESH, "np_reconstruct"),
        "numpy._core.multiarray._reconstruct": _fn(FRESH, "np_reconstruct"),
        "numpy.ma.core._mareconstruct": _fn(FRESH, "ma_reconstruct"),
        "numpy.ma.core.MaskedArray": REF_CLASS,
        "numpy.ma.MaskedArray": REF_CLASS,
        "numpy.random._pickle.__randomstate_ctor": _fn(FRESH, "np_random"),
        "numpy.random._pickle.__generator_ctor": _fn(FRESH, "np_random"),
        "numpy.random._pickle.__bit_generator_ctor": _fn(FRESH, "np_random"),
        "numpy.random.bit_generator.__pyx_unpickle_SeedSequence": _fn(FRESH, "new_arg0"),
        "numpy.random.mtrand.RandomState": DATA_CLASS,
        "numpy.random._generator.Generator": DATA_CLASS,
        "numpy.random._mt19937.MT19937": DATA_CLASS,
        "numpy.random._pcg64.PCG64": DATA_CLASS,
        "numpy.random._pcg64.PCG64DXSM": DATA_CLASS,
        "numpy.random._philox.Philox": DATA_CLASS,
        "numpy.random._sfc64.SFC64": DATA_CLASS,
        "numpy.random.bit_generator.SeedSequence": NEW_ONLY,
        # scikit-learn internals
        "sklearn.neighbors._kd_tree.newObj": _fn(FRESH, "new_arg0"),
        "sklearn.neighbors._ball_tree.newObj": _fn(FRESH, "new_arg0"),
        "sklearn.metrics._dist_metrics.newObj": _fn(FRESH, "new_arg0"),
        "sklearn.tree._tree.Tree": _cls(FRESH, "sklearn_tree"),
        # numpy < 2 ufunc pickles: imports the ufunc named by its (checked) arguments
        "numpy.core._ufunc_reconstruct": _fn(SHARED),
        "numpy._core._ufunc_reconstruct": _fn(SHARED),
        # time zones: cached per zone name
        "pytz._p": _fn(SHARED),
        "zoneinfo.ZoneInfo._unpickle": _fn(SHARED),
        # tokenizers are rebuilt from their JSON state
        "tokenizers.Tokenizer": DATA_CLASS,
        "tokenizers.AddedToken": DATA_CLASS,
        "tokenizers.models.Model": DATA_CLASS,
    }
)
SPECS.update({f"numpy.{n}": REF_CLASS for n in _NUMPY_ARRAYS})
SPECS.update(
    dict.fromkeys(
        ("numpy.record", "numpy.rec.recarray", "numpy.core.records.recarray",
         "numpy._core.records.recarray", "numpy.core.records.record",
         "numpy._core.records.record"),
        REF_CLASS,
    )
)  # fmt: skip
SPECS.update(dict.fromkeys(_HF_ENUMS.split(), ENUM))
for _full in STDLIB_ALLOWED - set(SPECS):
    SPECS[_full] = _cls(VALUE)  # pathlib paths: pickled as cls(*parts), never modified
