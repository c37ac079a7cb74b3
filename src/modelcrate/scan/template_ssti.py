"""Server-side template injection in Jinja chat templates (GGUF, tokenizer_config.json).

Chat templates are rendered by ``jinja2`` in loaders such as llama-cpp-python, often without
a sandbox (CVE-2024-34359). Legitimate templates use loops, ``namespace()``, ``tojson``,
``raise_exception`` and string methods; none of them reaches Python internals. The check
looks for dunder traversal and the known pivot objects, also after undoing string escapes
and concatenation tricks (``"__glo" ~ "bals__"``, ``'\\x5f\\x5f'``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from modelcrate.scan.context import ScanContext
from modelcrate.scan.findings import Location, Severity

# Names whose only use in a template is walking from an object to Python internals.
DUNDERS = (
    "__globals__", "__class__", "__mro__", "__subclasses__", "__builtins__", "__import__",
    "__init__", "__base__", "__bases__", "__getattribute__", "__dict__", "__code__",
    "__func__", "__self__", "__reduce__", "__reduce_ex__", "__getitem__", "__loader__",
    "__spec__", "__module__", "__closure__", "__subclasshook__", "__new__", "__call__",
)  # fmt: skip
INTERNALS = (
    "func_globals", "f_globals", "f_locals", "f_back", "gi_frame", "gi_code", "cr_frame",
    "co_code", "mro()", "_templatereference__context",
)  # fmt: skip
PIVOTS: tuple[str, ...] = ("cycler", "joiner", "lipsum", "namespace", "self")  # Jinja's own globals
WEB_PIVOTS = ("request", "config", "url_for", "get_flashed_messages")  # Flask globals
_ESCAPE = re.compile(
    r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{1,3}|N\{[A-Za-z0-9 \-]+\})"
)
_CONCAT = re.compile(r"""(['"])\s*(?:[~+,]|\)\s*~\s*\(|\s)\s*(['"])""")
_DUNDER_ANY = re.compile(r"""(?:\.\s*|\[\s*['"]?|attr\s*\(\s*['"]?)(__[a-z][a-z0-9_]*__)""")
_PIVOT_ACCESS = re.compile(
    r"\b(" + "|".join(PIVOTS + WEB_PIVOTS) + r")\b\s*(?:\.\s*_|\[|\|\s*attr\b|\.\s*(?!\w+\s*\()\w)"
)
_ATTR_FILTER = re.compile(r"\|\s*attr\s*\(")
_IMPORT_TAG = re.compile(r"\{%-?\s*(import|include|extends|from)\b")
_CHAR_BUILD = re.compile(
    r"""['"]%c['"]\s*[|%]|\|\s*format\s*\(\s*(?:95|0x5f)\b|['"]_['"]\s*\*|\|\s*string\s*\|\s*list"""
)


@dataclass(frozen=True)
class SstiHit:
    """One reason why a template is dangerous."""

    severity: Severity
    indicator: str


def _unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        body = m.group(1)
        try:
            if body[0] in "xuU":
                return chr(int(body[1:], 16))
            if body[0] == "N":
                return unicodedata.lookup(body[2:-1])
            return chr(int(body, 8))
        except (ValueError, KeyError):
            return m.group(0)

    return _ESCAPE.sub(one, text)


def variants(template: str) -> list[str]:
    """The template, lower-cased, unescaped and with literal concatenations joined."""
    low = template.lower()
    plain = _unescape(template).lower()
    joined = plain
    for _ in range(8):  # "a" ~ "b" ~ "c" joins pairwise; repeat until stable
        nxt = _CONCAT.sub("", joined)
        if nxt == joined:
            break
        joined = nxt
    return [low, plain, joined, re.sub(r"\s+", "", joined)]


_SEARCHED = 1 << 20  # characters of a template searched by check_template


def find_ssti(template: str, limit: int = _SEARCHED) -> list[SstiHit]:
    """Reasons a Jinja template reaches Python internals; empty for a plain template."""
    text = template[:limit]
    hits: dict[str, Severity] = {}
    forms = variants(text)
    for form in forms:
        for name in (*DUNDERS, *INTERNALS):
            if name in form or name[::-1] in form:
                hits[name] = Severity.CRITICAL
        for m in _DUNDER_ANY.finditer(form):  # any other dunder used as an attribute
            hits.setdefault(m.group(1), Severity.HIGH)
    plain = forms[2]
    internals = any(sev == Severity.CRITICAL for sev in hits.values())
    for m in _PIVOT_ACCESS.finditer(plain):
        pivot = m.group(1)
        if internals:
            sev = Severity.CRITICAL
        else:
            sev = Severity.HIGH if pivot in PIVOTS else Severity.MEDIUM
        hits[f"{pivot} attribute access"] = sev
    if _ATTR_FILTER.search(plain):
        hits["|attr() filter"] = Severity.CRITICAL if internals else Severity.HIGH
    if _CHAR_BUILD.search(plain):
        hits.setdefault("character-building trick", Severity.HIGH)
    if _IMPORT_TAG.search(plain):
        hits.setdefault("template import/include", Severity.MEDIUM)
    if len(template) > limit:  # the rest was not searched: at the gate, never below it
        hits.setdefault(f"template longer than {limit} characters", Severity.HIGH)
    return [SstiHit(sev, name) for name, sev in hits.items()]


def check_template(template: str, loc: Location, ctx: ScanContext, where: str) -> None:
    """Report the SSTI indicators of ``template`` (found at ``where``) as one finding."""
    hits = find_ssti(template)
    if len(template) > _SEARCHED:
        ctx.limit(
            "template",
            f"Jinja template in {where} is longer than {_SEARCHED} characters: the rest was not "
            "searched",
            loc,
        )
    if not hits:
        return
    worst = max(h.severity for h in hits)
    names = [h.indicator for h in sorted(hits, key=lambda h: -h.severity)][:6]
    ctx.add(
        worst,
        "template.ssti",
        f"Jinja template in {where} reaches Python internals: {', '.join(names)}",
        loc,
        why="loaders render chat templates with jinja2, often unsandboxed; dunder traversal "
        "from template globals runs arbitrary code (CVE-2024-34359)",
        symbol=names[0],
    )
