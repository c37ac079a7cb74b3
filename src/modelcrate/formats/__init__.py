"""Safe readers for model files: the restricted unpickler for pickle/joblib."""

from modelcrate.formats.restricted_unpickler import (
    PickleRefusedError,
    safe_load_joblib,
    safe_load_pickle,
)

__all__ = ["PickleRefusedError", "safe_load_joblib", "safe_load_pickle"]
