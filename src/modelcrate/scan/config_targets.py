"""Hydra/NeMo ``_target_`` and Lightning ``class_path`` targets, judged like pickle globals.

``instantiate`` imports the named callable and calls it with the rest of the node as
arguments, which is what a pickle's GLOBAL + REDUCE does: the verdict comes from the same
classifier (:func:`modelcrate.scan.pickle_globals.classify_target`) and, for allowlisted
callables with argument bounds (``builtins.bytearray``, ``fractions.Fraction``), from the same
rules (:mod:`modelcrate.scan.callables`) applied to the node's literal ``_args_``. Nothing here
imports what a config names.
"""

from __future__ import annotations

from collections.abc import Sequence

from modelcrate.scan.callables import How, Out, Spec, Tag, View, judge_call
from modelcrate.scan.findings import Severity
from modelcrate.scan.pickle_globals import classify_target as classify_callable
from modelcrate.scan.policy import Policy

__all__ = ["TARGET_KEYS", "judge_target"]

TARGET_KEYS = ("_target_", "class_path")
# Hydra's reserved keys are not arguments; Lightning passes init_args as keyword arguments.
_RESERVED = frozenset(
    {"_target_", "_args_", "_recursive_", "_convert_", "_partial_", "class_path", "dict_kwargs"}
)


def judge_target(
    target: str, policy: Policy | None = None, node: dict[str, object] | None = None
) -> tuple[Severity, str]:
    """Severity of instantiating ``target`` (with the arguments in ``node``) and why."""
    verdict = classify_callable(target, policy)
    if verdict.severity != Severity.INFO:
        return verdict.severity, verdict.reason
    spec = verdict.spec
    if spec is None or not (spec.rule or spec.keeps):
        return Severity.INFO, verdict.reason
    problem = _argument_problem(target, verdict.reason, spec, node)
    if problem is not None:
        return Severity.HIGH, problem
    return Severity.INFO, verdict.reason


def _argument_problem(
    target: str, reason: str, spec: Spec, node: dict[str, object] | None
) -> str | None:
    if node is None:
        return f"{target} bounds its arguments and they could not be read from this config"
    init = node.get("init_args")
    keywords = [k for k in node if k not in _RESERVED and k != "init_args" and k[:1] != "\x00"]
    if keywords or (isinstance(init, dict) and init):
        return (
            f"{target} ({reason}) is given keyword arguments; its argument bounds "
            "(sizes, lengths, digits) can only be checked on positional _args_"
        )
    args = node.get("_args_", [])
    if not isinstance(args, list):
        return f"{target} is given _args_ that is not a list"
    name = target.strip().replace(":", ".")
    j = judge_call(View(Tag.GLOBAL, name=name, spec=spec), tuple(args), How.CALL, _JSON)
    return j.problem


class _JsonValues:
    """Parsed JSON/YAML as the argument rules see it: a nested node with a target is the
    result of another instantiation, computed while loading."""

    def view(self, value: object) -> View:
        if isinstance(value, str | bytes):
            return View(Tag.CONST, value, size=len(value))
        if value is None or isinstance(value, bool | int | float):
            return View(Tag.CONST, value)
        if isinstance(value, dict):
            for key in TARGET_KEYS:
                if isinstance(value.get(key), str):
                    return View(Tag.MADE, name=str(value[key]), out=Out.FRESH)
            return View(Tag.LITERAL, value, size=len(value))
        if isinstance(value, list):
            return View(Tag.LITERAL, value, size=len(value))
        return View(Tag.OTHER)

    def items(self, value: object) -> Sequence[object] | None:
        return value if isinstance(value, list) else None

    def entry(self, value: object, key: str) -> tuple[bool, object]:
        if isinstance(value, dict) and key in value:
            return True, value[key]
        return False, None

    def members(self, value: object) -> Sequence[object]:
        if isinstance(value, dict):
            return list(value.values())
        return value if isinstance(value, list) else ()


_JSON = _JsonValues()
