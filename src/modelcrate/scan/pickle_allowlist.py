"""The pickle allowlist: exact ``module.qualname`` globals that benign model files import.

Data only; :mod:`modelcrate.scan.pickle_globals` decides, and
:mod:`modelcrate.scan.pickle_specs` says how each entry may be used (called, instantiated,
referenced; with which argument bounds). Every entry is an exact name after py2 -> py3
normalization (no prefixes, no substrings): a loader imports exactly these and nothing else.
Every entry is a class, a function or an immutable value, never a module, a registry or a
mutable container (the restricted unpickler checks this on what it imports). Names that *call
one of their arguments* are listed in :data:`ARG_CALLABLES` so the pickle machine can check
those arguments too.

Tiers follow THREATS.md section 5. The long class lists (``torch.nn.modules``, numpy ufuncs,
numpy dtype classes) were generated from torch 2.13 / numpy 2.4 at development time and pasted
as literals. The scikit-learn and pandas lists are data files (``data/*.json``) written by
``scripts/gen_pickle_classes.py`` by introspection of every supported version; they are read
as JSON, nothing is imported here.
"""

from __future__ import annotations

import json
from importlib import resources


def _names(table: dict[str, str]) -> frozenset[str]:
    """``{"mod": "A B"}`` -> ``{"mod.A", "mod.B"}``."""
    return frozenset(f"{mod}.{name}" for mod, names in table.items() for name in names.split())


# -- tier 1: PyTorch (torch/_weights_only_unpickler.py::_get_allowed_globals, plus nn layers) --

_TORCH_DTYPES = (
    "bfloat16 bit bits16 bits1x8 bits2x4 bits4x2 bits8 bool cdouble cfloat chalf complex128 "
    "complex32 complex64 double float float16 float32 float4_e2m1fn_x2 float64 float8_e4m3fn "
    "float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz float8_e8m0fnu half int int1 int16 int2 int3 "
    "int32 int4 int5 int6 int64 int7 int8 long qint32 qint8 quint2x4 quint4x2 quint8 short "
    "uint1 uint16 uint2 uint3 uint32 uint4 uint5 uint6 uint64 uint7 uint8"
)
_TORCH_STORAGES = (
    "BFloat16Storage BoolStorage ByteStorage CharStorage ComplexDoubleStorage "
    "ComplexFloatStorage DoubleStorage FloatStorage HalfStorage IntStorage LongStorage "
    "QInt32Storage QInt8Storage QUInt2x4Storage QUInt4x2Storage QUInt8Storage ShortStorage"
)
_TORCH_TENSOR_TYPES = (
    "BFloat16Tensor BoolTensor ByteTensor CharTensor DoubleTensor FloatTensor HalfTensor "
    "IntTensor LongTensor ShortTensor"
)
_TORCH_SPARSE_TENSOR_TYPES = (
    "BFloat16Tensor ByteTensor CharTensor DoubleTensor FloatTensor HalfTensor IntTensor "
    "LongTensor ShortTensor"
)

TORCH_ALLOWED: frozenset[str] = _names(
    {
        "torch": (
            f"{_TORCH_DTYPES} {_TORCH_STORAGES} {_TORCH_TENSOR_TYPES} Tensor Size device "
            "per_tensor_affine per_tensor_symmetric per_channel_affine per_channel_symmetric "
            "per_channel_affine_float_qparams strided sparse_coo sparse_csr sparse_csc "
            "sparse_bsr sparse_bsc contiguous_format channels_last channels_last_3d "
            "preserve_format"
        ),
        "torch.cuda": _TORCH_TENSOR_TYPES,
        "torch.sparse": _TORCH_SPARSE_TENSOR_TYPES,
        "torch.cuda.sparse": _TORCH_SPARSE_TENSOR_TYPES,
        "torch.storage": "TypedStorage UntypedStorage",
        "torch.nn.parameter": "Parameter Buffer UninitializedParameter UninitializedBuffer",
        "torch.serialization": "_get_layout",
        "torch._utils": (
            "_rebuild_tensor _rebuild_tensor_v2 _rebuild_tensor_v3 _rebuild_parameter "
            "_rebuild_parameter_with_state _rebuild_qtensor _rebuild_sparse_tensor "
            "_rebuild_nested_tensor _rebuild_meta_tensor_no_storage _rebuild_wrapper_subclass "
            "_rebuild_device_tensor_from_numpy _rebuild_device_tensor_from_cpu_tensor "
            "_rebuild_xla_tensor"
        ),
        "torch._tensor": "_rebuild_from_type _rebuild_from_type_v2",
        # activations that full-module checkpoints store as plain function references
        "torch.nn.functional": (
            "relu relu6 gelu silu mish elu selu celu leaky_relu hardswish hardsigmoid "
            "hardtanh sigmoid tanh softplus softmax log_softmax glu logsigmoid"
        ),
    }
) | frozenset(
    # full-module checkpoints (torch.save(model)): every class defined in torch.nn.modules.*,
    # except autograd Function helpers and hook wrappers (_functions, module._WrappedHook)
    f"torch.nn.modules.{key}"
    for key in _names(
        {
            "activation": (
                "CELU ELU GELU GLU Hardshrink Hardsigmoid Hardswish Hardtanh LeakyReLU LogSigmoid "
                "LogSoftmax Mish MultiheadAttention PReLU RReLU ReLU ReLU6 SELU SiLU Sigmoid "
                "Softmax Softmax2d Softmin Softplus Softshrink Softsign Tanh Tanhshrink Threshold"
            ),
            "adaptive": "AdaptiveLogSoftmaxWithLoss _ASMoutput",
            "batchnorm": (
                "BatchNorm1d BatchNorm2d BatchNorm3d LazyBatchNorm1d LazyBatchNorm2d "
                "LazyBatchNorm3d SyncBatchNorm _BatchNorm _LazyNormBase _NormBase"
            ),
            "channelshuffle": "ChannelShuffle",
            "container": "Container ModuleDict ModuleList ParameterDict ParameterList Sequential",
            "conv": (
                "Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d LazyConv1d "
                "LazyConv2d LazyConv3d LazyConvTranspose1d LazyConvTranspose2d "
                "LazyConvTranspose3d _ConvNd _ConvTransposeMixin _ConvTransposeNd "
                "_LazyConvXdMixin"
            ),
            "distance": "CosineSimilarity PairwiseDistance",
            "dropout": (
                "AlphaDropout Dropout Dropout1d Dropout2d Dropout3d FeatureAlphaDropout _DropoutNd"
            ),
            "flatten": "Flatten Unflatten",
            "fold": "Fold Unfold",
            "instancenorm": (
                "InstanceNorm1d InstanceNorm2d InstanceNorm3d LazyInstanceNorm1d "
                "LazyInstanceNorm2d LazyInstanceNorm3d _InstanceNorm"
            ),
            "lazy": "LazyModuleMixin",
            "linear": "Bilinear Identity LazyLinear Linear NonDynamicallyQuantizableLinear",
            "loss": (
                "BCELoss BCEWithLogitsLoss CTCLoss CosineEmbeddingLoss CrossEntropyLoss "
                "GaussianNLLLoss HingeEmbeddingLoss HuberLoss KLDivLoss L1Loss "
                "LinearCrossEntropyLoss MSELoss MarginRankingLoss MultiLabelMarginLoss "
                "MultiLabelSoftMarginLoss MultiMarginLoss NLLLoss NLLLoss2d PoissonNLLLoss "
                "SmoothL1Loss SoftMarginLoss TripletMarginLoss TripletMarginWithDistanceLoss "
                "_Loss _WeightedLoss"
            ),
            "module": "Module",
            "normalization": "CrossMapLRN2d GroupNorm LayerNorm LocalResponseNorm RMSNorm",
            "padding": (
                "CircularPad1d CircularPad2d CircularPad3d ConstantPad1d ConstantPad2d "
                "ConstantPad3d ReflectionPad1d ReflectionPad2d ReflectionPad3d ReplicationPad1d "
                "ReplicationPad2d ReplicationPad3d ZeroPad1d ZeroPad2d ZeroPad3d _CircularPadNd "
                "_ConstantPadNd _ReflectionPadNd _ReplicationPadNd"
            ),
            "pixelshuffle": "PixelShuffle PixelUnshuffle",
            "pooling": (
                "AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d AdaptiveMaxPool1d "
                "AdaptiveMaxPool2d AdaptiveMaxPool3d AvgPool1d AvgPool2d AvgPool3d "
                "FractionalMaxPool2d FractionalMaxPool3d LPPool1d LPPool2d LPPool3d MaxPool1d "
                "MaxPool2d MaxPool3d MaxUnpool1d MaxUnpool2d MaxUnpool3d _AdaptiveAvgPoolNd "
                "_AdaptiveMaxPoolNd _AvgPoolNd _LPPoolNd _MaxPoolNd _MaxUnpoolNd"
            ),
            "rnn": "GRU GRUCell LSTM LSTMCell RNN RNNBase RNNCell RNNCellBase",
            "sparse": "Embedding EmbeddingBag",
            "transformer": (
                "Transformer TransformerDecoder TransformerDecoderLayer TransformerEncoder "
                "TransformerEncoderLayer"
            ),
            "upsampling": "Upsample UpsamplingBilinear2d UpsamplingNearest2d",
        }
    )
)

# -- tier 2: NumPy (both numpy.core and numpy._core spellings) ----------------------------

_NUMPY_UFUNCS = (
    "abs absolute acos acosh add arccos arccosh arcsin arcsinh arctan arctan2 arctanh asin "
    "asinh atan atan2 atanh bitwise_and bitwise_count bitwise_invert bitwise_left_shift "
    "bitwise_not bitwise_or bitwise_right_shift bitwise_xor cbrt ceil conj conjugate copysign "
    "cos cosh deg2rad degrees divide divmod equal exp exp2 expm1 fabs float_power floor "
    "floor_divide fmax fmin fmod frexp gcd greater greater_equal heaviside hypot invert "
    "isfinite isinf isnan isnat lcm ldexp left_shift less less_equal log log10 log1p log2 "
    "logaddexp logaddexp2 logical_and logical_not logical_or logical_xor matmul matvec maximum "
    "minimum mod modf multiply negative nextafter not_equal positive pow power rad2deg radians "
    "reciprocal remainder right_shift rint sign signbit sin sinh spacing sqrt square subtract "
    "tan tanh true_divide trunc vecdot vecmat"
)
_NUMPY_SCALAR_TYPES = (
    "bool bool_ byte bytes_ cdouble clongdouble complex128 complex256 complex64 csingle "
    "datetime64 double float128 float16 float32 float64 half int16 int32 int64 int8 int_ intc "
    "intp long longdouble longlong object_ short single str_ timedelta64 ubyte uint uint16 "
    "uint32 uint64 uint8 uintc uintp ulong ulonglong ushort void"
)
NUMPY_SCALAR_TYPES = frozenset(_NUMPY_SCALAR_TYPES.split())
_NUMPY_MULTIARRAY = "_reconstruct scalar"
_NUMPY_NUMERIC = "_frombuffer"

NUMPY_ALLOWED: frozenset[str] = _names(
    {
        "numpy": f"ndarray dtype matrix record {_NUMPY_SCALAR_TYPES} {_NUMPY_UFUNCS}",
        "numpy.core.multiarray": _NUMPY_MULTIARRAY,
        "numpy._core.multiarray": _NUMPY_MULTIARRAY,
        "numpy.core.numeric": _NUMPY_NUMERIC,
        "numpy._core.numeric": _NUMPY_NUMERIC,
        "numpy.core.umath": _NUMPY_UFUNCS,
        "numpy._core.umath": _NUMPY_UFUNCS,
        "numpy.matrixlib.defmatrix": "matrix",
        # record arrays and numpy 2's variable-width StringDType
        "numpy.rec": "recarray",
        "numpy.core.records": "recarray record",
        "numpy._core.records": "recarray record",
        "numpy.core._internal": "_convert_to_stringdtype_kwargs",
        "numpy._core._internal": "_convert_to_stringdtype_kwargs",
        "numpy.ma.core": "MaskedArray _mareconstruct",
        "numpy.ma": "MaskedArray",  # numpy 2 names it by its public module
        "numpy.dtypes": (
            "BoolDType ByteDType BytesDType CLongDoubleDType Complex128DType Complex64DType "
            "DateTime64DType Float16DType Float32DType Float64DType Int16DType Int32DType "
            "Int64DType Int8DType IntDType LongDType LongDoubleDType LongLongDType ObjectDType "
            "ShortDType StrDType StringDType TimeDelta64DType UByteDType UInt16DType UInt32DType "
            "UInt64DType UInt8DType UIntDType ULongDType ULongLongDType UShortDType VoidDType"
        ),
        "numpy.random._pickle": "__randomstate_ctor __generator_ctor __bit_generator_ctor",
        "numpy.random.mtrand": "RandomState",
        "numpy.random._generator": "Generator",
        "numpy.random._mt19937": "MT19937",
        "numpy.random._pcg64": "PCG64 PCG64DXSM",
        "numpy.random._philox": "Philox",
        "numpy.random._sfc64": "SFC64",
        "numpy.random.bit_generator": "SeedSequence __pyx_unpickle_SeedSequence",
        "_codecs": "encode",
    }
)

# -- tier 3: scikit-learn internals, scipy, joblib, xgboost, lightgbm, pandas companions -----
# scikit-learn *classes* come from data/sklearn_classes.json (SKLEARN_CLASSES); these are the
# exact non-class names that fitted models pickle, plus pure metric functions used by scorers.

ML_LIBS_ALLOWED: frozenset[str] = _names(
    {
        "sklearn.neighbors._kd_tree": "newObj",
        "sklearn.neighbors._ball_tree": "newObj",
        "sklearn.metrics._dist_metrics": "newObj",
        "sklearn.metrics._classification": (
            "accuracy_score balanced_accuracy_score f1_score fbeta_score log_loss "
            "precision_score recall_score jaccard_score matthews_corrcoef"
        ),
        "sklearn.metrics._ranking": "roc_auc_score average_precision_score",
        # HistGradientBoosting with categorical features keeps partial(check_array, ...)
        # in its internal FunctionTransformer: referenced, called by predict later
        "sklearn.utils.validation": "check_array",
        "sklearn.metrics._regression": (
            "r2_score mean_squared_error mean_absolute_error median_absolute_error "
            "explained_variance_score max_error"
        ),
        "scipy.sparse._bsr": "bsr_array bsr_matrix",
        "scipy.sparse._coo": "coo_array coo_matrix",
        "scipy.sparse._csc": "csc_array csc_matrix",
        "scipy.sparse._csr": "csr_array csr_matrix",
        "scipy.sparse._dia": "dia_array dia_matrix",
        "scipy.sparse._dok": "dok_array dok_matrix",
        "scipy.sparse._lil": "lil_array lil_matrix",
        # scipy < 1.8 module paths
        "scipy.sparse.bsr": "bsr_matrix",
        "scipy.sparse.coo": "coo_matrix",
        "scipy.sparse.csc": "csc_matrix",
        "scipy.sparse.csr": "csr_matrix",
        "scipy.sparse.dia": "dia_matrix",
        "scipy.sparse.dok": "dok_matrix",
        "scipy.sparse.lil": "lil_matrix",
        "joblib.numpy_pickle": "NumpyArrayWrapper",
        "xgboost.sklearn": (
            "XGBModel XGBClassifier XGBRegressor XGBRanker XGBRFClassifier XGBRFRegressor"
        ),
        "xgboost.core": "Booster",
        "lightgbm.sklearn": "LGBMModel LGBMClassifier LGBMRegressor LGBMRanker",
        "lightgbm.basic": "Booster",
        # time zones of tz-aware pandas data: pytz (pandas 2) and zoneinfo (pandas 3) read
        # only their own time-zone database, keyed by a validated zone name
        "pytz": "_p",
        "zoneinfo": "ZoneInfo._unpickle",
    }
)

# -- stdlib value types: constructing them is inert -----------------------------------------

STDLIB_ALLOWED: frozenset[str] = _names(
    {
        "builtins": (
            "object bool int float complex str bytes bytearray list tuple dict set frozenset "
            "slice range"
        ),
        "copyreg": "_reconstructor __newobj__ __newobj_ex__",
        "collections": "OrderedDict Counter defaultdict deque ChainMap",
        "datetime": "date datetime time timedelta timezone",
        "decimal": "Decimal",
        "fractions": "Fraction",
        "argparse": "Namespace",
        "pathlib": "PurePath PurePosixPath PureWindowsPath Path PosixPath WindowsPath",
        "uuid": "UUID SafeUUID",
        "types": "SimpleNamespace",
        # a call wrapper: as safe as its target, argument 0, which must itself be allowlisted
        # (the rest of functools, e.g. reduce, which calls at load time, stays denied)
        "functools": "partial",
    }
)

# -- Hugging Face Trainer side files (training_args.bin) and tokenizers ----------------------
# From fickling's ML_ALLOWLIST, which justifies each entry: dataclasses and enums.

HF_ALLOWED: frozenset[str] = _names(
    {
        "transformers.training_args": "TrainingArguments OptimizerNames ParallelMode",
        "transformers.training_args_seq2seq": "Seq2SeqTrainingArguments",
        "transformers.trainer_utils": (
            "IntervalStrategy SchedulerType HubStrategy EvaluationStrategy FSDPOption "
            "SaveStrategy ShardedDDPOption"
        ),
        "transformers.trainer_pt_utils": "AcceleratorConfig",
        "transformers.integrations.deepspeed": "HfTrainerDeepSpeedConfig HfDeepSpeedConfig",
        "transformers.deepspeed": "HfTrainerDeepSpeedConfig HfDeepSpeedConfig",
        "accelerate.state": "PartialState",
        "accelerate.utils.dataclasses": "DistributedType DeepSpeedPlugin",
        "accelerate.utils.deepspeed": "HfDeepSpeedConfig",
        "trl.trainer.sft_config": "SFTConfig",
        "trl.trainer.dpo_config": "DPOConfig FDivergenceType",
        "trl.trainer.grpo_config": "GRPOConfig",
        "trl.trainer.kto_config": "KTOConfig",
        "trl.trainer.ppov2_config": "PPOv2Config",
        "trl.trainer.reward_config": "RewardConfig",
        "trl.trainer.orpo_config": "ORPOConfig",
        "trl.trainer.cpo_config": "CPOConfig",
        "sentence_transformers.training_args": (
            "SentenceTransformerTrainingArguments BatchSamplers MultiDatasetBatchSamplers"
        ),
        "axolotl.core.trainer_builder": "AxolotlTrainingArguments",
        "tokenizers": "Tokenizer AddedToken",
        "tokenizers.models": "Model",
    }
)

# -- scikit-learn and pandas: generated data (scripts/gen_pickle_classes.py) -----------------


def _data(name: str) -> dict[str, list[str]]:
    text = resources.files("modelcrate.scan").joinpath("data", name).read_text("utf-8")
    data: dict[str, list[str]] = json.loads(text)
    return data


_SKLEARN = _data("sklearn_classes.json")
_PANDAS = _data("pandas_globals.json")

# Every class defined in scikit-learn (module.qualname, as pickles name them) in the supported
# versions, minus the modules that fetch data, run processes or serve tests. Classes only:
# module-level constants (``sklearn.metrics._scorer._SCORERS``) and functions are not admitted.
SKLEARN_CLASSES: frozenset[str] = frozenset(_SKLEARN["classes"])
SKLEARN_ENUMS: frozenset[str] = frozenset(_SKLEARN["enums"])
# Cython writes ``module.__pyx_unpickle_Name(cls, checksum, state)`` for cdef classes: admitted
# for the classes above only, as instantiations of their first argument.
SKLEARN_PYX: frozenset[str] = frozenset(
    f"{c.rpartition('.')[0]}.__pyx_unpickle_{c.rpartition('.')[2]}" for c in SKLEARN_CLASSES
)

# pandas data structures, dtypes, arrays, indexes, block managers and tslibs scalars, and the
# reconstructors their pickles call (never I/O, computation or pyarrow-backed arrays).
PANDAS_CLASSES: frozenset[str] = frozenset(_PANDAS["classes"])
PANDAS_CALLED: frozenset[str] = frozenset(_PANDAS["called"])
PANDAS_FUNCTIONS: frozenset[str] = frozenset(_PANDAS["functions"])
PANDAS_VALUES: frozenset[str] = frozenset(_PANDAS["values"])
PANDAS_ALLOWED: frozenset[str] = PANDAS_CLASSES | PANDAS_FUNCTIONS | PANDAS_VALUES

# -- callables that call or instantiate some of their positional arguments -------------------
# ARGS_CHECKED (-1) asks the pickle machine to pass the call's constant arguments to
# pickle_globals.check_reconstruct_args (it imports by name, or its safety depends on them).

ARGS_CHECKED = -1

ARG_CALLABLES: dict[str, tuple[int, ...]] = {
    "copyreg._reconstructor": (0, 1),  # base.__new__(cls, state); base.__init__(obj, state)
    "copyreg.__newobj__": (0,),  # cls.__new__(cls, *args)
    "copyreg.__newobj_ex__": (0,),
    "collections.defaultdict": (0,),  # the default factory is called on a missing key
    "pandas.core.indexes.base._new_Index": (0,),  # cls.__new__(cls, **d)
    "pandas.core.indexes.datetimes._new_DatetimeIndex": (0,),
    "pandas.core.indexes.interval._new_IntervalIndex": (0,),
    "functools.partial": (0,),  # partial(func, ...) calls func when it is called
    "torch._tensor._rebuild_from_type": (0, 1),  # func(*args), then .as_subclass(type)
    "torch._tensor._rebuild_from_type_v2": (0, 1),
    "torch._utils._rebuild_wrapper_subclass": (0,),  # cls._make_wrapper_subclass(...)
    "numpy.core.multiarray._reconstruct": (0,),  # subtype.__new__ + __array_finalize__
    "numpy._core.multiarray._reconstruct": (0,),
    "numpy.dtype": (0,),
    "numpy.ma.core._mareconstruct": (0, 1),
    "numpy.random._pickle.__randomstate_ctor": (0, 1),  # bit_generator_ctor(name)
    "numpy.random._pickle.__generator_ctor": (0, 1),
    "numpy.random._pickle.__bit_generator_ctor": (0,),  # a BitGenerator class is called
    "numpy.random.bit_generator.__pyx_unpickle_SeedSequence": (0,),
    "sklearn.neighbors._kd_tree.newObj": (0,),  # obj.__new__(obj)
    "sklearn.neighbors._ball_tree.newObj": (0,),
    "sklearn.metrics._dist_metrics.newObj": (0,),
    "_codecs.encode": (ARGS_CHECKED,),  # the codec is looked up by name: latin-1 only
}
ARG_CALLABLES.update(dict.fromkeys(SKLEARN_PYX, (0,)))  # __pyx_unpickle_X(cls, ...)
ARG_CALLABLES.update({n: (0,) for n in PANDAS_FUNCTIONS if "__pyx_unpickle_" in n})
