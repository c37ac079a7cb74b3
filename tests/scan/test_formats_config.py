"""JSON/YAML configs: Hydra/NeMo _target_ (t50), tokenizer chat templates (t45), xgboost JSON."""

from __future__ import annotations

import json

import pytest

from modelcrate.scan import config_scan
from modelcrate.scan.config_scan import classify_target, scan_json, scan_yaml
from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Finding, Location, Severity
from modelcrate.scan.policy import Policy

NEMO_YAML = """\
name: ConformerCTC
model:
  sample_rate: 16000
  preprocessor:
    _target_: nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor
    window_size: 0.025
  encoder:
    _target_: nemo.collections.asr.modules.ConformerEncoder
    feat_in: 80
  optim:
    name: adamw
    sched:
      _target_: torch.optim.lr_scheduler.CosineAnnealingLR
"""
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)


def scan(kind: str, text: str, name: str) -> tuple[str | None, list[Finding]]:
    ctx = ScanContext()
    scanner = scan_yaml if kind == "yaml" else scan_json
    fmt = scanner(text.encode(), Location(name), ctx, 0)
    return fmt, ctx.findings


def worst(findings: list[Finding]) -> Severity | None:
    return max((f.severity for f in findings), default=None)


@pytest.mark.parametrize(
    ("target", "severity"),
    [
        ("os.system", Severity.CRITICAL),
        ("subprocess.run", Severity.CRITICAL),
        ("builtins.eval", Severity.CRITICAL),
        ("torch.load", Severity.CRITICAL),
        ("hydra.utils.call", Severity.CRITICAL),
        ("pathlib.Path.write_text", Severity.CRITICAL),
        # anything not on the allowlist is HIGH (unknown code), as for a pickle global
        ("my_company.models.Net", Severity.HIGH),
        ("nemo.collections.asr.models.EncDecCTCModel", Severity.HIGH),
        ("torch.optim.Adam", Severity.HIGH),
        # allowlisted callables that instantiate may call
        ("argparse.Namespace", Severity.INFO),
        ("sklearn.preprocessing._data.StandardScaler", Severity.INFO),
    ],
)
def test_classify_target(target: str, severity: Severity) -> None:
    assert classify_target(target)[0] == severity


def test_t50_nemo_target_yaml() -> None:
    evil = NEMO_YAML + "  exploit:\n    _target_: os.system\n    command: touch /tmp/pwned\n"
    fmt, found = scan("yaml", evil, "model_config.yaml")
    assert fmt == "yaml"
    crit = [f for f in found if f.severity == Severity.CRITICAL]
    assert [(f.rule_id, f.symbol) for f in crit] == [("config.code-target", "os.system")]
    assert "model.exploit" in crit[0].message


def test_t50_nemo_target_yaml_without_pyyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_scan, "_safe_load", lambda text: None)
    evil = NEMO_YAML + "  x:\n    - _target_: 'subprocess.Popen'\n      args: [id]\n"
    _, found = scan("yaml", evil, "model_config.yaml")
    assert [(f.severity, f.symbol) for f in found if f.severity >= Severity.CRITICAL] == [
        (Severity.CRITICAL, "subprocess.Popen")
    ]


def test_t50_yaml_python_tag_and_json_target() -> None:
    _, found = scan("yaml", "a: !!python/object/apply:os.system ['id']\n", "cfg.yaml")
    assert [(f.rule_id, f.severity) for f in found] == [("config.code-target", Severity.CRITICAL)]
    cfg = {"trainer": {"callbacks": [{"class_path": "builtins.exec", "init_args": {}}]}}
    _, found = scan("json", json.dumps(cfg), "hparams.json")
    assert [(f.severity, f.symbol) for f in found] == [(Severity.CRITICAL, "builtins.exec")]


def test_nemo_config_targets_are_unknown_until_the_policy_admits_them() -> None:
    _, found = scan("yaml", NEMO_YAML, "model_config.yaml")
    assert {(f.rule_id, f.severity) for f in found} == {("config.code-target", Severity.HIGH)}
    assert {f.symbol for f in found} == {
        "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
        "nemo.collections.asr.modules.ConformerEncoder",
        "torch.optim.lr_scheduler.CosineAnnealingLR",
    }
    policy = Policy(allow_globals=frozenset({"nemo.collections.*", "torch.optim.*"}))
    ctx = ScanContext(policy=policy)
    scan_yaml(NEMO_YAML.encode(), Location("model_config.yaml"), ctx, 0)
    assert [(f.rule_id, f.severity) for f in ctx.findings] == [
        ("config.code-target", Severity.INFO)
    ]


def test_t45_tokenizer_config_chat_template_ssti() -> None:
    evil = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"
    cfg = {"bos_token": "<s>", "chat_template": LLAMA3_TEMPLATE + evil}
    fmt, found = scan("json", json.dumps(cfg), "tokenizer_config.json")
    assert fmt == "config-json"
    assert [(f.rule_id, f.severity) for f in found] == [("template.ssti", Severity.CRITICAL)]
    templates = [
        {"name": "default", "template": LLAMA3_TEMPLATE},
        {"name": "tool_use", "template": "{{ self.__init__ }}"},
    ]
    named = {"chat_template": templates}
    _, found = scan("json", json.dumps(named), "tokenizer_config.json")
    assert [f.rule_id for f in found] == ["template.ssti"]
    assert "tool_use" in found[0].message


def test_json_duplicate_keys_cannot_hide_a_target() -> None:
    text = '{"_target_": "os.system", "_target_": "torch.nn.Linear"}'
    _, found = scan("json", text, "config.json")
    assert worst(found) == Severity.CRITICAL


def test_benign_tokenizer_config_and_plain_json() -> None:
    cfg = {"bos_token": "<|begin_of_text|>", "chat_template": LLAMA3_TEMPLATE}
    assert scan("json", json.dumps(cfg), "tokenizer_config.json")[1] == []
    hf = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64}
    assert scan("json", json.dumps(hf), "config.json") == ("json", [])


def test_benign_xgboost_json() -> None:
    import numpy as np
    import xgboost as xgb

    x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=[0, 1, 1, 0]), num_boost_round=2)
    raw = booster.save_raw(raw_format="json")
    ctx = ScanContext()
    assert scan_json(bytes(raw), Location("model.json"), ctx, 0) == "xgboost-json"
    assert ctx.findings == []


def test_invalid_json() -> None:
    fmt, found = scan("json", "{nope", "config.json")
    assert fmt is None
    assert [(f.rule_id, f.severity) for f in found] == [("config.malformed", Severity.LOW)]
    assert scan("json", "[1, 2", "blob.bin") == (None, [])
    deep = "[" * 100_000 + "]" * 100_000
    assert scan("json", deep, "x.bin") == (None, [])
