"""JSON and YAML configs that loaders act on: Keras configs, chat templates, Hydra targets.

``_target_`` (Hydra / NeMo, CVE-2025-23304) and ``class_path`` (Lightning CLI) name a callable
that ``instantiate`` imports and calls with the rest of the dict as arguments: it is judged by
the pickle-global classifier (:mod:`modelcrate.scan.config_targets`), so only allowlisted
callables are INFO and anything else is HIGH, as for a pickle. A chat template
(HF ``tokenizer_config.json``) is rendered by Jinja. A YAML ``!!python/object`` tag runs code
in ``yaml.load``/``unsafe_load``. Nothing here imports what a config names.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass, field

from modelcrate.scan.config_targets import TARGET_KEYS, judge_target
from modelcrate.scan.context import Blob, ScanContext
from modelcrate.scan.findings import Location, Severity
from modelcrate.scan.keras_scan import (
    check_keras_tree,
    iter_nodes,
    looks_like_keras,
    path_text,
    tree_limit,
)
from modelcrate.scan.policy import Policy
from modelcrate.scan.template_ssti import check_template

_KEYS = (*TARGET_KEYS, "chat_template")
DUPLICATES = "\x00duplicates"  # where _pairs keeps the earlier values of a repeated key
MAX_YAML_PARSE = 4 << 20  # larger YAML goes through the line-based extraction only
_PY_TAG = re.compile(
    r"!!python/(?:object(?:/apply|/new)?|name|module)\b|tag:yaml\.org,2002:python/(?:object|name|module)"
)
_YAML_TARGET = re.compile(r"""^[ \t-]*(_target_|class_path)[ \t]*:[ \t]*['"]?([^'"#\s]+)""", re.M)


@dataclass
class _Targets:
    benign: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)


def classify_target(
    target: str, policy: Policy | None = None, node: dict[str, object] | None = None
) -> tuple[Severity, str]:
    """Severity of instantiating ``target`` and why: the pickle-global classifier's verdict
    (:mod:`modelcrate.scan.config_targets`); anything not on the allowlist is HIGH."""
    return judge_target(target, policy, node)


def _report_target(
    target: object,
    key: str,
    where: str,
    *,
    loc: Location,
    ctx: ScanContext,
    acc: _Targets,
    node: dict[str, object] | None = None,
) -> None:
    if not isinstance(target, str):
        ctx.add(
            Severity.MEDIUM,
            "config.code-target",
            f"{key} at {where} is not a string",
            loc,
            why="instantiate resolves it dynamically; the scanner could not verify it",
        )
        return
    sev, why = classify_target(target, ctx.policy, node)
    if sev == Severity.INFO:
        acc.benign.append(target)
        return
    if target in acc.seen:
        return
    acc.seen.add(target)
    ctx.add(
        sev,
        "config.code-target",
        f"{key} at {where} instantiates {target!r}",
        loc,
        why=f"hydra/NeMo/Lightning instantiate imports and calls it: {why} (CVE-2025-23304)",
        symbol=target,
    )


def check_config_tree(root: object, loc: Location, ctx: ScanContext) -> bool:
    """Report code targets and chat templates in a parsed config; True if any was seen."""
    acc = _Targets()
    seen_any = False
    for node in iter_nodes(root, on_limit=tree_limit(ctx, loc, "config"), dicts_only=True):
        v = node.value
        if not isinstance(v, dict):
            continue
        items = [(k, v[k]) for k in _KEYS if k in v]
        dups = v.get(DUPLICATES)
        if isinstance(dups, list):
            items += [(d[0], d[1]) for d in dups if isinstance(d, list) and len(d) == 2]
        if not items:
            continue
        seen_any = True
        where = path_text(node.path)
        for key, value in items:
            if key in TARGET_KEYS:
                _report_target(value, key, where, loc=loc, ctx=ctx, acc=acc, node=v)
            elif key == "chat_template":
                _templates(value, where if node.path else "", loc, ctx)
    if acc.benign:
        shown = ", ".join(sorted(set(acc.benign))[:5])
        ctx.add(
            Severity.INFO,
            "config.code-target",
            f"{len(acc.benign)} instantiation targets on the allowlist ({shown}, ...)",
            loc,
            why="instantiate imports and calls these; the allowlist admits them as pickle globals",
        )
    return seen_any


def _templates(value: object, where: str, loc: Location, ctx: ScanContext) -> None:
    """A chat_template: a string, or a list of {"name", "template"} (HF named templates)."""
    label = f"{where}.chat_template" if where else "chat_template"
    if isinstance(value, str):
        check_template(value, loc, ctx, label)
    elif isinstance(value, list):
        for i, item in enumerate(value[:256]):
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                check_template(item["template"], loc, ctx, f"{label}[{item.get('name', i)!r}]")


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """Keep every value of a duplicated key visible to the walkers: the last one under the
    key (as json.loads does), the earlier ones as ``[key, value]`` under ``DUPLICATES``."""
    out: dict[str, object] = {}
    dups: list[object] = []
    for k, v in pairs:
        if k in out:
            dups.append([k, out[k]])
        out[k] = v
    if dups:
        out[DUPLICATES] = dups
    return out


def _name(loc: Location) -> str:
    return (loc.members[-1] if loc.members else loc.path).replace("\\", "/").rsplit("/", 1)[-1]


def scan_json(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """Scan a JSON file: Keras config, tokenizer config with chat templates, Hydra targets."""
    name = _name(loc).lower()
    if len(data) > ctx.limits.max_string_bytes * 4:
        ctx.limit("json", "JSON file larger than the JSON limit was not verified", loc)
        return "json"
    try:
        # Python loaders keep the last of a repeated key; _pairs also keeps the earlier ones
        # visible. It halves parsing speed, so big files (tokenizer.json) go without it.
        hook = _pairs if len(data) <= 1 << 20 else None
        root = json.loads(bytes(data).decode("utf-8-sig"), object_pairs_hook=hook)
    except (ValueError, RecursionError) as exc:
        if name.endswith(".json"):
            ctx.add(
                Severity.LOW,
                "config.malformed",
                f"{name} is not valid JSON: {str(exc)[:120]}",
                loc,
                why="a loader will reject it; nothing in it was verified",
            )
        return None
    if isinstance(root, dict) and "learner" in root and "version" in root:
        return "xgboost-json"
    fmt = "json"
    keras_names = ("config.json", "metadata.json")
    if (loc.members and name in keras_names and looks_like_keras(root)) or (
        isinstance(root, dict) and "class_name" in root and "config" in root
    ):
        check_keras_tree(root, loc, ctx, depth)
        fmt = "keras-config"
    if check_config_tree(root, loc, ctx) and fmt == "json":
        fmt = "config-json"
    return fmt


def scan_yaml(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """Scan a YAML config (NeMo/Hydra/Lightning): python tags and instantiation targets."""
    if len(data) > ctx.limits.max_string_bytes:
        ctx.limit("yaml", "YAML file larger than the config limit was not verified", loc)
        return "yaml"
    text = bytes(data).decode("utf-8", "replace")
    for m in _PY_TAG.finditer(text):
        ctx.add(
            Severity.CRITICAL,
            "config.code-target",
            f"YAML python tag {m.group(0)!r} at line {text.count(chr(10), 0, m.start()) + 1}",
            loc.at(len(text[: m.start()].encode("utf-8", "replace"))),
            why="yaml.load/unsafe_load import and call the tagged object",
            symbol=m.group(0),
        )
        break
    docs = _safe_load(text)
    if docs is not None:
        for doc in docs:
            check_config_tree(doc, loc, ctx)
        return "yaml"
    acc = _Targets()  # not parseable here: fall back to a line-based extraction
    for m in _YAML_TARGET.finditer(text):
        where = f"line {text.count(chr(10), 0, m.start()) + 1}"
        _report_target(m.group(2), m.group(1), where, loc=loc, ctx=ctx, acc=acc)
    if acc.benign:
        ctx.add(
            Severity.INFO,
            "config.code-target",
            f"{len(acc.benign)} instantiation targets on the allowlist",
            loc,
            why="instantiate imports and calls these; the allowlist admits them as pickle globals",
        )
    return "yaml"


def _safe_load(text: str) -> list[object] | None:
    """All documents through PyYAML's safe loader when it is installed, else None."""
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        return None
    if len(text) > MAX_YAML_PARSE:
        return None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        docs: list[object] = list(yaml.load_all(text, Loader=loader))
    except (yaml.YAMLError, RecursionError, ValueError):
        return None
    return docs
