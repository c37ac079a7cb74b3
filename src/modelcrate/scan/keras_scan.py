"""Keras model configs (``config.json`` of a ``.keras``, ``model_config`` of an ``.h5``).

Keras rebuilds a model by walking its JSON config and calling what it names, so the whole
tree is walked, not only the top-level layers: a Lambda hides inside a nested Functional or
a TimeDistributed wrapper, and a module reference inside an initializer (CVE-2025-1550).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from typing import NamedTuple

from modelcrate.scan.context import Blob, ScanContext
from modelcrate.scan.findings import Location, Severity

MAX_NODES = 2_000_000
MAX_TREE_DEPTH = 512
MAX_CANDIDATES = 64

KERAS_ROOTS = frozenset(
    {"keras", "keras_hub", "keras_nlp", "keras_cv", "keras_core", "tf_keras", "tensorflow"}
)
DANGEROUS_ROOTS = frozenset(
    {
        "builtins", "__builtin__", "os", "posix", "nt", "sys", "subprocess", "pty", "commands",
        "importlib", "runpy", "code", "codeop", "marshal", "pickle", "_pickle", "dill",
        "cloudpickle", "joblib", "shutil", "socket", "ssl", "ctypes", "_ctypes", "multiprocessing",
        "webbrowser", "urllib", "http", "requests", "pip", "types", "inspect", "operator",
        "_operator", "functools", "pdb", "bdb", "timeit", "cProfile", "profile", "trace",
        "pydoc", "tempfile", "glob", "io", "_io", "pathlib", "asyncio", "threading", "signal",
        "platform", "imp", "zipimport", "site", "torch", "numpy",
    }
)  # fmt: skip
UNSAFE_KERAS_FUNCS = frozenset(
    {"enable_unsafe_deserialization", "get_file", "load_model", "load_weights", "load_img"}
)
LOOKUP_LAYERS = frozenset({"StringLookup", "IntegerLookup", "TextVectorization"})


class Node(NamedTuple):
    """A dict or list in a JSON tree; its path from the root is computed only when asked."""

    value: object
    parent: Node | None = None
    key: str | int = ""
    depth: int = 0
    under_lambda: bool = False

    @property
    def path(self) -> tuple[str | int, ...]:
        parts: list[str | int] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            parts.append(node.key)
            node = node.parent
        return tuple(reversed(parts))


def iter_nodes(
    root: object,
    *,
    max_nodes: int = MAX_NODES,
    on_limit: Callable[[str], None] | None = None,
    dicts_only: bool = False,
) -> Iterator[Node]:
    """Every dict and list of a JSON-like tree, depth first, each container once (YAML
    aliases cannot multiply the work). Past ``max_nodes`` containers or ``MAX_TREE_DEPTH``
    levels the walk stops and ``on_limit`` is told why. ``dicts_only`` skips lists that hold
    no container (tokenizer merges), for walkers that only look at dicts."""
    stack = [Node(root)]
    seen: set[int] = set()
    count = 0
    while stack:
        node = stack.pop()
        value = node.value
        if not isinstance(value, dict | list) or id(value) in seen:
            continue
        seen.add(id(value))
        count += 1
        if count > max_nodes or node.depth > MAX_TREE_DEPTH:
            if on_limit is not None:
                on_limit(f"more than {max_nodes} objects" if count > max_nodes else "too deep")
            return
        yield node
        depth = node.depth + 1
        if isinstance(value, dict):
            lam = node.under_lambda or value.get("class_name") == "Lambda"
            kids = [
                Node(v, node, str(k), depth, lam)
                for k, v in value.items()
                if isinstance(v, dict | list)
            ]
        else:
            lam = node.under_lambda
            kids = [
                Node(v, node, i, depth, lam)
                for i, v in enumerate(value)
                if isinstance(v, dict) or (isinstance(v, list) and not (dicts_only and _flat(v)))
            ]
        kids.reverse()
        stack.extend(kids)


def _flat(items: list[object]) -> bool:
    return all(not isinstance(x, dict | list) for x in items)


def _strings(value: object) -> Iterator[str]:
    """String members of a container, except the names a Keras object is resolved by."""
    if isinstance(value, dict):
        skip = ("class_name", "module", "registered_name")
        return (v for k, v in value.items() if isinstance(v, str) and k not in skip)
    if isinstance(value, list):
        return (v for v in value if isinstance(v, str))
    return iter(())


def tree_limit(ctx: ScanContext, loc: Location, what: str) -> Callable[[str], None]:
    """An ``on_limit`` callback that reports an unverified remainder once per file."""

    def report(why: str) -> None:
        ctx.limit("tree", f"{what} has {why}: the rest was not verified", loc)

    return report


def path_text(path: tuple[str | int, ...]) -> str:
    """``("config", "layers", 2)`` -> ``config.layers[2]`` (bounded)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return (out or "<root>")[-200:]


def looks_like_keras(root: object) -> bool:
    """A JSON tree that Keras would deserialize: some dict with ``class_name`` and ``config``."""
    for node in iter_nodes(root, dicts_only=True):  # past MAX_NODES the config walk reports it
        v = node.value
        if isinstance(v, dict) and "class_name" in v and "config" in v:
            return True
    return False


def _s(d: dict[str, object], key: str) -> str:
    v = d.get(key)
    return v if isinstance(v, str) else ""


def check_keras_tree(root: object, loc: Location, ctx: ScanContext, depth: int) -> None:
    """Walk a Keras config tree and report Lambda, module references, unsafe calls, ..."""
    unsafe_seen = False
    for node in iter_nodes(root, on_limit=tree_limit(ctx, loc, "Keras config")):
        v = node.value
        where = path_text(node.path)
        if not unsafe_seen and any("enable_unsafe_deserialization" in t for t in _strings(v)):
            unsafe_seen = True
            _unsafe(ctx, loc, where, "keras.config.enable_unsafe_deserialization")
        if not isinstance(v, dict):
            continue
        cls, module, reg = _s(v, "class_name"), _s(v, "module"), _s(v, "registered_name")
        config = v.get("config")
        cfg = config if isinstance(config, dict) else {}
        if cls == "Lambda":
            _lambda(ctx, loc, where, cfg, "a Lambda layer")
        elif not node.under_lambda and (cls == "__lambda__" or v.get("function_type") == "lambda"):
            _lambda(ctx, loc, where, cfg, "a serialized Python function")
        if cls == "TorchModuleWrapper":
            _torch_module(ctx, loc, where, cfg, depth)
        if isinstance(cfg.get("vocabulary"), str) and cfg["vocabulary"]:
            layer = cls or "a layer"
            ctx.add(
                Severity.HIGH,
                "keras.vocabulary-path",
                f"{layer} at {where} reads its vocabulary from the path {cfg['vocabulary']!r}",
                loc,
                why="the file is read at load time even with safe_mode=True and its contents "
                "come back through get_vocabulary() (GHSA-qg93-c7p6-gg7f)",
                symbol=cfg["vocabulary"][:200],
            )
        names = {cls, reg.rpartition(">")[2], module.rpartition(".")[2]}
        unsafe = names & UNSAFE_KERAS_FUNCS
        if unsafe:
            name = sorted(unsafe)[0]
            unsafe_seen = unsafe_seen or name == "enable_unsafe_deserialization"
            _unsafe(ctx, loc, where, f"{module}.{name}" if module else name)
            continue
        if "class_name" not in v:
            continue
        if module and module.split(".", 1)[0] not in KERAS_ROOTS:
            _module_ref(ctx, loc, where, module=module, cls=cls, reg=reg)
        elif "." in cls and cls.split(".", 1)[0] in DANGEROUS_ROOTS:
            _module_ref(ctx, loc, where, module="", cls=cls, reg=reg)


def _lambda(ctx: ScanContext, loc: Location, where: str, cfg: dict[str, object], what: str) -> None:
    name = _s(cfg, "name")
    fn = cfg.get("function")
    how = (
        "marshalled bytecode"
        if isinstance(fn, dict) and fn.get("class_name") == "__lambda__"
        else "serialized Python code"
    )
    ctx.add(
        Severity.CRITICAL,
        "keras.lambda",
        f"{what}{f' {name!r}' if name else ''} at {where} carries {how}",
        loc,
        why="Keras runs it when loading with safe_mode=False, and .h5 loading ignored "
        "safe_mode (CVE-2024-3660, CVE-2025-9905, CVE-2025-9906)",
        symbol="Lambda",
    )


def _unsafe(ctx: ScanContext, loc: Location, where: str, name: str) -> None:
    ctx.add(
        Severity.CRITICAL,
        "keras.unsafe-config",
        f"config at {where} calls {name}",
        loc,
        why="a config that switches off safe mode or downloads/loads files runs code or "
        "writes files during load (CVE-2025-9906, CVE-2025-8747)",
        symbol=name,
    )


def _module_ref(
    ctx: ScanContext, loc: Location, where: str, *, module: str, cls: str, reg: str
) -> None:
    full = f"{module}.{cls}" if module else cls
    root = full.split(".", 1)[0]
    if root in DANGEROUS_ROOTS:
        sev, why = (
            Severity.CRITICAL,
            "Keras imports the module and calls the named function with the config as "
            "arguments (CVE-2025-1550)",
        )
    elif ">" in reg:
        ctx.add(
            Severity.MEDIUM,
            "keras.custom-object",
            f"registered custom object {reg!r} from module {module!r} at {where}",
            loc,
            why="loading needs this package's code; check that it is trusted",
            symbol=full,
        )
        return
    else:
        sev, why = (
            Severity.HIGH,
            "an unregistered object from outside Keras: older Keras imports any module "
            "named here (CVE-2025-1550)",
        )
    ctx.add(
        sev,
        "keras.module-reference",
        f"config at {where} references {full!r}",
        loc,
        why=why,
        symbol=full,
    )


def _torch_module(
    ctx: ScanContext, loc: Location, where: str, cfg: dict[str, object], depth: int
) -> None:
    ctx.add(
        Severity.HIGH,
        "keras.torch-module",
        f"TorchModuleWrapper at {where}: its module is stored as a torch pickle",
        loc,
        why="from_config calls torch.load(weights_only=False) on it (CVE-2025-49655)",
        symbol="TorchModuleWrapper",
    )
    raw = cfg.get("module")
    if isinstance(raw, dict) and isinstance(raw.get("config"), dict):
        raw = raw["config"].get("value")
    if not isinstance(raw, str) or not raw:
        return
    if len(raw) > ctx.limits.max_member_bytes:
        ctx.limit("member", "TorchModuleWrapper module bytes exceed the member limit", loc)
        return
    try:
        blob = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        blob = raw.encode("latin-1", "replace")
    # torch.load reads a zip by its magic and anything else as a (legacy) pickle
    as_pickle = None if blob.startswith(b"PK\x03\x04") else "pickle"
    ctx.scan_blob(
        blob, loc.child(f"{where}.module"), depth + 1, name="module.pt", read_as=as_pickle
    )


def parse_json_bytes(raw: bytes) -> object:
    """Parse JSON; raises ValueError (incl. undecodable bytes and excessive nesting)."""
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def scan_keras_config(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """A Keras ``config.json`` / ``metadata.json`` handed over by a container scanner."""
    if len(data) > ctx.limits.max_string_bytes * 4:
        ctx.limit("json", "Keras config larger than the JSON limit was not verified", loc)
        return "keras-config"
    try:
        root = parse_json_bytes(bytes(data))
    except ValueError as exc:
        ctx.add(
            Severity.HIGH,
            "keras.malformed",
            f"Keras config is not valid JSON: {exc}",
            loc,
            why="the config could not be verified",
        )
        return "keras-config"
    check_keras_tree(root, loc, ctx, depth)
    return "keras-config"


_MAX_COLLECTIONS = 10_000  # HDF5 global heap collections searched for JSON attributes
_MAX_HEAP_OBJECTS = 100_000  # objects read per collection


def _gcol_strings(data: Blob, truncated: list[str]) -> Iterator[tuple[int, int]]:
    """(start, end) of objects in HDF5 global heap collections that start like JSON."""
    pos = data.find(b"GCOL")
    collections = 0
    while pos >= 0:
        if collections >= _MAX_COLLECTIONS:
            truncated.append(f"more than {_MAX_COLLECTIONS} global heap collections")
            return
        collections += 1
        size = int.from_bytes(bytes(data[pos + 8 : pos + 16]), "little")
        end = min(len(data), pos + size)
        p = pos + 16
        objects = 0
        while p + 16 <= end:
            if objects >= _MAX_HEAP_OBJECTS:
                truncated.append(f"a heap collection with more than {_MAX_HEAP_OBJECTS} objects")
                break
            objects += 1
            index = int.from_bytes(bytes(data[p : p + 2]), "little")
            osize = int.from_bytes(bytes(data[p + 8 : p + 16]), "little")
            if index == 0 or osize > end - p - 16:
                break
            if bytes(data[p + 16 : p + 17]) == b"{":
                yield p + 16, p + 16 + osize
            p += 16 + ((osize + 7) & ~7)
        pos = data.find(b"GCOL", pos + 4)


def _h5_candidates(data: Blob, truncated: list[str]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = list(_gcol_strings(data, truncated))
    for needle in (b'{"class_name"', b'{"module"'):
        pos = data.find(needle)
        while pos >= 0:
            if len(out) >= MAX_CANDIDATES * 4:
                truncated.append(f"more than {MAX_CANDIDATES * 4} places that start a config")
                break
            out.append((pos, -1))
            pos = data.find(needle, pos + 1)
    pos = data.find(b"model_config")
    while pos >= 0:
        if len(out) >= MAX_CANDIDATES * 5:
            truncated.append(f"more than {MAX_CANDIDATES * 5} places that start a config")
            break
        brace = data.find(b"{", pos, pos + 512)
        if brace >= 0:
            out.append((brace, -1))
        pos = data.find(b"model_config", pos + 1)
    return out


def _decode_at(
    decoder: json.JSONDecoder, data: Blob, start: int, stop: int
) -> tuple[object, str, int]:
    """raw_decode from ``start``: a 256 KiB window first, the whole range if that was short."""
    window = min(stop, start + (256 << 10))
    while True:
        text = bytes(data[start:window]).decode("utf-8", "surrogateescape")
        try:
            obj, used = decoder.raw_decode(text)
        except json.JSONDecodeError as exc:
            if window < stop and exc.pos >= len(text) - 64:
                window = stop  # the object may just continue past the window
                continue
            raise
        return obj, text, used


def extract_h5_configs(
    data: Blob, limit: int, truncated: list[str] | None = None
) -> list[tuple[int, object]]:
    """JSON objects embedded in an HDF5 file's attributes, found without h5py.

    What a cap kept from the search is described in ``truncated`` (when given).
    """
    truncated = [] if truncated is None else truncated
    decoder = json.JSONDecoder()
    docs: list[tuple[int, object]] = []
    spans: list[tuple[int, int]] = []
    candidates = sorted(set(_h5_candidates(data, truncated)))
    if len(candidates) > MAX_CANDIDATES * 5:
        truncated.append(f"more than {MAX_CANDIDATES * 5} places that start a config")
    for start, end in candidates[: MAX_CANDIDATES * 5]:
        if any(a <= start < b for a, b in spans):
            continue
        stop = end if end >= 0 else min(len(data), start + limit)
        try:
            obj, text, used = _decode_at(decoder, data, start, stop)
        except json.JSONDecodeError as exc:
            if end < 0 and stop < len(data) and exc.pos >= len(exc.doc) - 64:
                truncated.append(f"a JSON attribute longer than {limit} bytes")
            continue
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            docs.append((start, obj))
            spans.append((start, start + len(text[:used].encode("utf-8", "surrogateescape"))))
    return docs


def _h5py_configs(data: Blob) -> list[tuple[int, object]]:
    """Fallback through h5py (when installed) for attributes the raw search cannot see."""
    try:
        import io  # only on this rare path

        import h5py  # optional and heavy: imported only here
    except ImportError:
        return []
    docs: list[tuple[int, object]] = []
    try:
        with h5py.File(io.BytesIO(bytes(data)), "r") as f:
            for key in ("model_config", "training_config"):
                raw = f.attrs.get(key)
                if isinstance(raw, bytes):
                    raw = raw.decode("utf-8", "replace")
                if isinstance(raw, str):
                    docs.append((0, json.loads(raw)))
    except Exception:  # h5py raises many exception types on a hostile file
        return []
    return docs


def scan_h5(data: Blob, loc: Location, ctx: ScanContext, depth: int) -> str | None:
    """Scan an HDF5 file (Keras ``.h5``) for its model config, without loading it."""
    truncated: list[str] = []
    docs = extract_h5_configs(data, ctx.limits.max_string_bytes, truncated)
    if truncated:
        ctx.limit(
            "h5-search",
            f"HDF5 file has {truncated[0]}: configs past that point were not verified",
            loc,
        )
    if not docs and data.find(b"model_config") >= 0 and len(data) > ctx.limits.max_member_bytes:
        ctx.not_scanned(
            f"HDF5 file of {len(data)} bytes names a model_config the raw search could not "
            f"read, and is over the {ctx.limits.max_member_bytes}-byte limit for reading it "
            "with h5py",
            loc,
        )
    elif not docs and data.find(b"model_config") >= 0:
        docs = _h5py_configs(data)
        if not docs:
            ctx.add(
                Severity.HIGH,
                "keras.malformed",
                "HDF5 file names a model_config attribute that could not be read",
                loc,
                why="Keras would deserialize a config the scanner could not verify",
            )
    for offset, doc in docs:
        check_keras_tree(doc, loc.at(offset), ctx, depth)
    return "keras-h5" if docs else "hdf5"
