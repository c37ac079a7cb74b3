"""Hydra/NeMo ``_target_`` and Lightning ``class_path`` go through the pickle-global classifier
(issue 9, item 1): loaders, downloaders and file readers are CRITICAL whatever package they sit
in, anything not on the allowlist is HIGH, allowlisted callables keep their argument bounds.
"""

from __future__ import annotations

import json

import pytest

from modelcrate.scan.config_scan import classify_target, scan_json, scan_yaml
from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Finding, Location, Severity
from modelcrate.scan.pickle_globals import classify_global
from modelcrate.scan.policy import Policy

# the issue's examples: all came out INFO (ML framework roots) before
ISSUE_LOADERS = [
    "torch.ops.load_library",
    "torch.utils.model_zoo.load_url",
    "transformers.AutoModel.from_pretrained",
    "keras.models.load_model",
    "numpy.fromfile",
]
# the same classes, other callables and packages
OTHER_LOADERS = [
    "torch.hub.load_state_dict_from_url",
    "torch.hub.download_url_to_file",
    "lightning.pytorch.LightningModule.load_from_checkpoint",
    "pytorch_lightning.core.saving.load_hparams_from_yaml",
    "nemo.core.ModelPT.restore_from",
    "nemo.utils.model_utils.import_class_by_path",
    "datasets.load_dataset",
    "huggingface_hub.hf_hub_download",
    "diffusers.DiffusionPipeline.from_pretrained",
    "safetensors.torch.load_file",
    "scipy.io.loadmat",
    "scipy.sparse.load_npz",
    "numpy.lib.npyio.loadtxt",
    "numpy.memmap",
    "pandas.read_csv",
    "tensorflow.keras.utils.get_file",
    "keras.saving.deserialize_keras_object",
    "joblib.load",
    "torchvision.datasets.MNIST",
    "hydra.utils.instantiate",
    "omegaconf.OmegaConf.load",
    "mypkg.io_utils.fetch_weights",
    "acme.models:read_checkpoint",
]


def scan(kind: str, text: str, name: str, policy: Policy | None = None) -> list[Finding]:
    ctx = ScanContext(policy=policy or Policy())
    scanner = scan_yaml if kind == "yaml" else scan_json
    scanner(text.encode(), Location(name), ctx, 0)
    return ctx.findings


@pytest.mark.parametrize("target", ISSUE_LOADERS + OTHER_LOADERS)
def test_loaders_downloaders_and_readers_are_critical(target: str) -> None:
    severity, why = classify_target(target)
    assert severity == Severity.CRITICAL, why


@pytest.mark.parametrize("target", ISSUE_LOADERS[:3] + OTHER_LOADERS[:3])
def test_loader_targets_in_real_configs(target: str) -> None:
    yaml_text = f"model:\n  weights:\n    _target_: {target}\n    path: w.bin\n"
    found = scan("yaml", yaml_text, "model_config.yaml")
    assert [(f.severity, f.symbol) for f in found] == [(Severity.CRITICAL, target)]
    cfg = {"trainer": {"callbacks": [{"class_path": target, "init_args": {"x": 1}}]}}
    found = scan("json", json.dumps(cfg), "hparams.json")
    assert [(f.severity, f.symbol) for f in found] == [(Severity.CRITICAL, target)]


@pytest.mark.parametrize(
    "target",
    [
        "my_company.models.Net",  # MEDIUM before
        "acme_speech.encoders.Conformer",
        "nemo.collections.asr.modules.ConformerEncoder",  # INFO before (ML root)
        "torch.optim.Adam",  # INFO before
        "numpy.random.default_rng",
        "collections.namedtuple.__call__",
        "sklearn.metrics._scorer._SCORERS",  # a module constant, not a class
    ],
)
def test_anything_not_on_the_allowlist_fails_the_gate(target: str) -> None:
    severity, why = classify_target(target)
    assert severity >= Severity.HIGH, why


def test_policy_admits_a_package_but_never_a_loader_in_it() -> None:
    policy = Policy(allow_globals=frozenset({"nemo.*", "acme.*"}))
    assert classify_target("nemo.collections.asr.modules.ConformerEncoder", policy)[0] == (
        Severity.INFO
    )
    assert classify_target("acme.models.Net", policy)[0] == Severity.INFO
    assert classify_target("nemo.core.ModelPT.restore_from", policy)[0] == Severity.CRITICAL
    assert classify_target("acme.models.load_model", policy)[0] == Severity.CRITICAL


def test_the_verdict_is_the_pickle_verdict_of_the_allowlisted_split() -> None:
    target = "sklearn.preprocessing._data.StandardScaler"
    severity, why = classify_target(target)
    pickle_verdict = classify_global("sklearn.preprocessing._data", "StandardScaler")
    assert (severity, why) == (pickle_verdict.severity, pickle_verdict.reason)
    # module:attr and dotted spellings are read the same way
    assert classify_target("sklearn.preprocessing._data:StandardScaler") == (severity, why)


def test_every_split_is_judged_as_hydra_locate_may_resolve_it() -> None:
    # "pathlib" + "os.system" reaches os through an attribute; "builtins.eval" directly
    for target in ("pathlib.os.system", "torch.jit.load", "numpy.testing.x", "builtins.eval"):
        assert classify_target(target)[0] == Severity.CRITICAL, target
    # a bare module is imported (its code runs) and cannot be vouched for
    assert classify_target("antigravity")[0] == Severity.CRITICAL
    assert classify_target("some_module")[0] == Severity.HIGH


def test_allowlisted_but_reference_only_callables_are_not_instantiated() -> None:
    # numpy ufuncs and torch layer classes are admitted in pickles as references (or rebuilt
    # with __new__); instantiate would call them
    for target in ("numpy.add", "torch.nn.modules.linear.Linear", "torch.FloatStorage"):
        severity, why = classify_target(target)
        assert severity == Severity.HIGH, target
        assert "instantiate would call it" in why


def test_argument_bounds_of_allowlisted_callables_apply_to_config_args() -> None:
    def one(node: dict[str, object]) -> Severity:
        cfg = {"x": node}
        found = scan("json", json.dumps(cfg), "config.json")
        return max(f.severity for f in found)

    assert one({"_target_": "builtins.bytearray", "_args_": [10**12]}) == Severity.HIGH
    assert one({"_target_": "builtins.bytearray", "_args_": [16]}) == Severity.INFO
    assert one({"_target_": "fractions.Fraction", "_args_": ["1e999999999"]}) == Severity.HIGH
    assert one({"_target_": "fractions.Fraction", "_args_": ["3/4"]}) == Severity.INFO
    big = {"_target_": "builtins.range", "_args_": [10**10]}
    assert one({"_target_": "builtins.list", "_args_": [big]}) == Severity.HIGH
    # keyword arguments cannot be matched to the positional bounds: not admitted
    assert one({"_target_": "builtins.bytearray", "source": 10**12}) == Severity.HIGH


def test_yaml_without_a_parser_still_judges_every_target(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelcrate.scan import config_scan

    monkeypatch.setattr(config_scan, "_safe_load", lambda text: None)
    text = "a:\n  _target_: torch.utils.model_zoo.load_url\nb:\n  _target_: acme.Net\n"
    found = scan("yaml", text, "cfg.yaml")
    assert {(f.severity, f.symbol) for f in found} == {
        (Severity.CRITICAL, "torch.utils.model_zoo.load_url"),
        (Severity.HIGH, "acme.Net"),
    }
