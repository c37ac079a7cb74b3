"""The skops runtime trusts what the allowlist admits, never the crate's own trust list; the
build's skops fallback applies the same rule, so what builds also loads."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelcrate.crate.signature import Signature
from modelcrate.errors import InputError
from modelcrate.flavors import UnsupportedModelError, convert
from modelcrate.runtime import predictor_from_bytes
from modelcrate.runtime.skops_runtime import TRUSTED_KEY
from tests.crate import forge
from tests.crate.forge import edit_skops, estimator_attrs, node, object_node

SRC = Path("model.pkl")


@pytest.fixture(scope="module")
def ridge() -> tuple[bytes, Signature, np.ndarray]:
    """A KernelRidge converted by the build's skops fallback: its bytes and signature."""
    from sklearn.kernel_ridge import KernelRidge

    x = np.random.default_rng(1).normal(size=(40, 3))
    model = KernelRidge(alpha=0.5).fit(x, x.sum(axis=1))
    converted = convert(model, "sklearn", source_path=SRC, sample=None, signature=None)
    assert converted.runtime == "skops"
    return converted.artifacts[0].data, converted.signature, x[:5].astype(np.float32)


def _kernel(data: bytes, value: dict[str, Any]) -> bytes:
    def edit(schema: dict[str, Any]) -> None:
        estimator_attrs(schema)["kernel"] = value

    return edit_skops(data, edit)


def _trusting(sig: Signature, *names: str) -> Signature:
    return replace(sig, extra={**sig.extra, TRUSTED_KEY: json.dumps(sorted(names))})


def test_a_signature_that_trusts_eval_does_not_make_it_loadable(
    ridge: tuple[bytes, Signature, np.ndarray],
) -> None:
    data, sig, _ = ridge
    forged = _kernel(data, node("builtins", "eval"))
    with pytest.raises(InputError) as exc:
        predictor_from_bytes(forged, "skops", _trusting(sig, "builtins.eval"), path="m.skops")
    refused = getattr(exc.value, "refused", ())
    assert [r.name for r in refused] == ["builtins.eval"]
    assert refused[0].severity.name == "CRITICAL"
    assert exc.value.path == "m.skops"
    assert "rebuild" in (exc.value.hint or "")


def test_a_trusted_unknown_class_never_runs(ridge: tuple[bytes, Signature, np.ndarray]) -> None:
    data, sig, _ = ridge
    module = forge.Gadget.__module__
    forged = _kernel(data, object_node(module, "Gadget"))
    forge.RAN.clear()
    with pytest.raises(InputError, match="Gadget"):
        predictor_from_bytes(forged, "skops", _trusting(sig, f"{module}.Gadget"))
    assert forge.RAN == []


def test_what_skops_trusts_by_default_is_not_enough(
    ridge: tuple[bytes, Signature, np.ndarray],
) -> None:
    """builtins.map and operator.methodcaller: skops' own audit lets the first through."""
    data, sig, _ = ridge
    for bad in (node("builtins", "map", "TypeNode"), node("builtins", "map")):
        with pytest.raises(InputError, match=r"builtins\.map"):
            predictor_from_bytes(_kernel(data, bad), "skops", sig)
    caller = node("operator", "methodcaller", "OperatorFuncNode", attrs={})
    with pytest.raises(InputError, match=r"operator\.methodcaller"):
        predictor_from_bytes(_kernel(data, caller), "skops", sig)


def test_the_trust_list_is_neither_needed_nor_believed(
    ridge: tuple[bytes, Signature, np.ndarray],
) -> None:
    data, sig, x = ridge
    plain = predictor_from_bytes(data, "skops", sig).predict({"input": x})
    for extra in ({}, {TRUSTED_KEY: "[]"}):
        bare = replace(sig, extra=extra)
        again = predictor_from_bytes(data, "skops", bare).predict({"input": x})
        np.testing.assert_array_equal(again["prediction"], plain["prediction"])
    with pytest.raises(InputError, match="claims trust for"):
        predictor_from_bytes(data, "skops", _trusting(sig, "posix.system"))
    with pytest.raises(InputError, match="not a JSON list"):
        predictor_from_bytes(data, "skops", replace(sig, extra={TRUSTED_KEY: "{"}))


def test_the_schema_walk_names_what_skops_imports(
    ridge: tuple[bytes, Signature, np.ndarray],
) -> None:
    from modelcrate.crate.skops_trust import check_skops_trust, skops_needs

    data, _, _ = ridge
    needs = {f"{m}.{n}" for m, n in skops_needs(data, path="m")}
    assert "sklearn.kernel_ridge.KernelRidge" in needs
    assert "numpy.ndarray" in needs
    assert check_skops_trust(data, path="m") == sorted(needs)


def test_malformed_archives_are_input_errors(ridge: tuple[bytes, Signature, np.ndarray]) -> None:
    import io
    import zipfile

    from modelcrate.crate.skops_trust import check_skops_trust

    data, sig, _ = ridge
    with pytest.raises(InputError, match="not a readable skops archive"):
        check_skops_trust(b"PK\x03\x04 not a zip", path="m")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("schema.json", '{"deep": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(InputError, match="nested too deeply"):
        check_skops_trust(buffer.getvalue(), path="m")
    with pytest.raises(InputError, match=r"no schema\.json"):
        check_skops_trust(_zip_without_schema(), path="m")
    nameless = _kernel(data, {"__loader__": "FunctionNode", "__class__": "eval"})
    with pytest.raises(InputError, match="malformed schema"):
        predictor_from_bytes(nameless, "skops", sig)


def test_the_build_refuses_what_serving_would_refuse() -> None:
    """FunctionTransformer(scipy.special.expit): skops trusts the ufunc by default, the
    allowlist does not. The build used to store it (and serving would now refuse it)."""
    from scipy.special import expit
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x = np.random.default_rng(2).normal(size=(30, 3))
    model = make_pipeline(FunctionTransformer(expit), KernelRidge()).fit(x, x[:, 0])
    with pytest.raises(UnsupportedModelError, match=r"outside the allowlist: scipy\.special"):
        convert(model, "sklearn", source_path=SRC, sample=None, signature=None)


def _zip_without_schema() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("other.json", "{}")
    return buffer.getvalue()
