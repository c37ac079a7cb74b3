"""Record validation whose work is bounded by the request, not by what it makes the validator do.

Pydantic collects every error of an input before it returns, and each error of a JSON input
carries its own copy of the offending value (a missing field: the whole record). A body of
a million empty records, or one record with a million unknown keys, makes millions of errors
(seconds on the event loop, gigabytes) before a 422 keeps 50 of them. Here:

- the number of records is capped (``max_rows``: :class:`TooManyRecords`, answered 413);
- a record with more keys than the model has fields is invalid whatever it holds: it never
  reaches the validator whole (only its fields and its first :data:`EXTRA_KEPT` unknown keys);
- the whole request is validated once, failing fast (the validator stops at the first invalid
  record); only then are the following records checked, a few at a time, until
  :data:`MAX_ERRORS` errors are known (:class:`InvalidRecords`);
- errors are taken without their inputs, and each echoed input is looked up in the parsed body
  and clipped (:func:`clip`): an error body stays a few kilobytes whatever was sent.

Pydantic is imported only when a validator is needed (an all-float model's valid requests never
need one). Valid requests pay one fast parse (orjson, for the record count and key counts) on
top of the validator's own ``validate_json``; the messages are the validator's (JSON mode, as
before).
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic import TypeAdapter, ValidationError

MAX_ERRORS = 50  # errors reported for one request
EXTRA_KEPT = MAX_ERRORS  # unknown keys of one record passed on to the validator
CHUNK_ERRORS = 2048  # at most this many errors from one validator call while reporting
CLIP_CHARS = 100  # of an echoed string, a key or a value shown in a message
CLIP_ITEMS = 10  # of an echoed object or list
CLIP_BUDGET = 400  # characters of strings in one echoed input, all together

Loc = tuple[str | int, ...]


class TooManyRecords(Exception):
    """More records (rows) in one request than the server takes."""

    def __init__(self, count: int, limit: int, what: str = "records") -> None:
        super().__init__(
            f"the request has {count} {what}; this server takes at most {limit} per request "
            "(modelcrate serve --max-rows): send them in several requests"
        )
        self.count = count
        self.limit = limit


class InvalidRecords(Exception):
    """Validation errors: at most :data:`MAX_ERRORS` of them, each ``{"type", "loc", "msg",
    "input"}`` with the input clipped; ``more`` when others were found or left unchecked."""

    def __init__(self, errors: list[dict[str, Any]], more: bool) -> None:
        super().__init__(f"{len(errors)} invalid value(s)")
        self.errors = errors
        self.more = more


class _Invalid:
    """Marks a body that is not JSON."""


INVALID_JSON: Any = _Invalid()


def loads(body: bytes) -> Any:
    """The JSON document of ``body`` as the validator reads it (NaN/Infinity literals and
    integers beyond 64 bits included), or :data:`INVALID_JSON`."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:  # what orjson refuses but the validator's parser takes (NaN, Infinity)
        return _from_json(body)
    except ValueError:
        return INVALID_JSON


def _from_json(body: bytes) -> Any:
    import pydantic_core

    return pydantic_core.from_json(body, allow_inf_nan=True)


class RecordValidator:
    """Bounded validation of one model's records (``schema``: a ``serve.schema.PredictSchema``,
    whose ``one`` validates a record, ``many_fast`` a non-empty list failing fast at its first
    invalid record and ``chunk`` a list reporting every error)."""

    def __init__(self, schema: Any, names: Sequence[str]) -> None:
        self.schema = schema
        self.one: TypeAdapter[Any] = schema.one
        self.many: TypeAdapter[Any] = schema.many_fast
        self.names = frozenset(names)
        self.width = len(self.names)
        self.chunk_records = max(1, CHUNK_ERRORS // (self.width + EXTRA_KEPT + 1))

    def validate_json(
        self, body: bytes, max_rows: int, doc: Any = INVALID_JSON
    ) -> tuple[list[Any], bool]:
        """The records of a JSON body (one record or a non-empty list) and whether it was one
        record. ``doc`` is the body already parsed (:func:`loads`), if it was.

        Raises :class:`TooManyRecords` or :class:`InvalidRecords`."""
        if doc is INVALID_JSON:
            doc = loads(body)
        if doc is INVALID_JSON:  # not JSON: one error, the parser's
            raise _not_json(body)
        single = type(doc) is not list
        records = [doc] if single else doc
        if max_rows and len(records) > max_rows:
            raise TooManyRecords(len(records), max_rows)
        if self._oversized(records):
            raise self._report(body, doc, single, None, json=True)
        from pydantic import ValidationError

        try:
            if single:
                return [self.one.validate_json(body)], True
            return self.many.validate_json(body), False
        except ValidationError as exc:
            raise self._report(body, doc, single, exc, json=True) from None

    def validate_python(self, records: list[Any], max_rows: int) -> list[Any]:
        """Records already decoded (a non-empty list), validated as :meth:`validate_json` does.

        Raises :class:`TooManyRecords` or :class:`InvalidRecords`."""
        if max_rows and len(records) > max_rows:
            raise TooManyRecords(len(records), max_rows)
        if self._oversized(records):
            raise self._report(b"", records, False, None, json=False)
        from pydantic import ValidationError

        try:
            return self.many.validate_python(records)  # type: ignore[no-any-return]
        except ValidationError as exc:
            raise self._report(b"", records, False, exc, json=False) from None

    # -- the error report ------------------------------------------------------------------

    def _oversized(self, records: list[Any]) -> bool:
        """True when a record has more keys than there are fields (so, unknown keys): the
        validator would make one error per key."""
        width = self.width
        return any(type(r) is dict and len(r) > width for r in records)

    def _report(
        self,
        body: bytes,
        doc: Any,  # the parsed body (orjson's reading: an integer beyond 64 bits is a float)
        single: bool,
        first: ValidationError | None,
        *,
        json: bool,
    ) -> InvalidRecords:
        errors: list[dict[str, Any]] = []
        first_errors = _details(first) if first is not None else []
        if first_errors and first_errors[0]["type"] == "json_invalid":
            error = first_errors[0]
            return InvalidRecords([_error(error, (), _clip_bytes(body))], False)
        records = [doc] if single else doc
        for error in first_errors:  # the first invalid record's (the validator failed fast)
            errors.append(_error(error, error["loc"], _input_at(records, single, error)))
        if first_errors and (single or not first_errors[0]["loc"]):
            return InvalidRecords(errors[:MAX_ERRORS], len(errors) > MAX_ERRORS)
        start = int(first_errors[0]["loc"][0]) + 1 if first_errors else 0
        step = self.chunk_records
        dropped = 0
        while start < len(records) and len(errors) <= MAX_ERRORS:
            part = records[start : start + step]
            trimmed = []
            for record in part:
                kept, left_out = self._trim(record)
                trimmed.append(kept)
                dropped += left_out
            for error in self._chunk_errors(trimmed, json):
                index = int(error["loc"][0]) + start
                loc = error["loc"][1:] if single else (index, *error["loc"][1:])
                errors.append(_error(error, loc, _input_at(records, False, error, index)))
            start += step
        more = len(errors) > MAX_ERRORS or start < len(records) or dropped > 0
        return InvalidRecords(errors[:MAX_ERRORS], more)

    def _trim(self, record: Any) -> tuple[Any, int]:
        """The record with its fields and only its first :data:`EXTRA_KEPT` unknown keys, and
        how many unknown keys were left out (without going through all of them)."""
        if type(record) is not dict or len(record) <= self.width:
            return record, 0
        kept = {name: record[name] for name in self.names if name in record}
        extra = len(record) - len(kept)
        names = self.names
        taken = 0
        for key in record:
            if key not in names:
                kept[key] = record[key]
                taken += 1
                if taken == EXTRA_KEPT:
                    break
        return kept, extra - taken

    def _chunk_errors(self, records: list[Any], json: bool) -> list[dict[str, Any]]:
        if json:  # through JSON again: the validator's JSON-mode messages, as for the body
            import pydantic_core

            try:
                data = pydantic_core.to_json(records, inf_nan_mode="constants")
            except (ValueError, TypeError, pydantic_core.PydanticSerializationError):
                data = None
            if data is not None:
                errors = _details(_failure(self.schema.chunk, data, json=True))
                if all(error["loc"] for error in errors):  # else: JSON the parser refuses
                    return errors
        return _details(_failure(self.schema.chunk, records, json=False))


def _not_json(body: bytes) -> InvalidRecords:
    """The validator's error for a body its JSON parser refuses."""
    try:
        _from_json(body)
        message = "Invalid JSON"
    except ValueError as exc:
        message = f"Invalid JSON: {exc}"
    error = {"type": "json_invalid", "loc": (), "msg": message}
    return InvalidRecords([_error(error, (), _clip_bytes(body))], False)


def _failure(adapter: TypeAdapter[Any], data: Any, *, json: bool) -> ValidationError | None:
    from pydantic import ValidationError

    try:
        if json:
            adapter.validate_json(data)
        else:
            adapter.validate_python(data)
    except ValidationError as exc:
        return exc
    return None


def _details(exc: ValidationError | None) -> list[dict[str, Any]]:
    """The errors, without their inputs (pydantic copies the input into every error: a missing
    field copies the whole record)."""
    if exc is None:
        return []
    return exc.errors(  # type: ignore[return-value]
        include_url=False, include_context=False, include_input=False
    )


def _error(error: dict[str, Any], loc: Loc, value: Any) -> dict[str, Any]:
    return {
        "type": error["type"],
        "loc": [clip_str(p) if isinstance(p, str) else p for p in loc],
        "msg": clip_str(str(error["msg"]), 200),
        "input": clip(value),
    }


def _input_at(
    records: list[Any], single: bool, error: dict[str, Any], index: int | None = None
) -> Any:
    """What the validator would have echoed for ``error``: the value at its location in the
    parsed body; for a missing field, the record that lacks it."""
    loc = list(error["loc"])
    if index is not None:
        loc[0] = index
    elif single:
        loc = [0, *loc]
    elif not loc:
        return records
    if error["type"] == "missing":
        loc = loc[:-1]
    value: Any = records
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def clip_str(text: str, limit: int = CLIP_CHARS) -> str:
    """``text``, cut to ``limit`` characters with a note of what was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def shown(value: object, limit: int = CLIP_CHARS) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters (a value sent by a
    client can be megabytes long; ``repr`` of a long list or string is never built whole)."""
    if isinstance(value, str | bytes) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value) - limit} more)"
    if isinstance(value, list | tuple) and len(value) > CLIP_ITEMS:
        head = ", ".join(shown(v, 20) for v in value[:CLIP_ITEMS])
        return f"[{head}, ... ({len(value) - CLIP_ITEMS} more)]"
    if isinstance(value, dict) and len(value) > CLIP_ITEMS:
        return f"an object of {len(value)} keys"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def clip(value: Any) -> Any:
    """A copy of an echoed input small enough for an error body: strings cut, at most
    :data:`CLIP_ITEMS` items per object or list, two levels deep, :data:`CLIP_BUDGET`
    characters of strings in all. Left-out parts are named (``"..."``)."""
    budget = [CLIP_BUDGET]
    return _clip(value, budget, 0)


def _clip(value: Any, budget: list[int], depth: int) -> Any:
    if isinstance(value, str):
        limit = max(0, min(CLIP_CHARS, budget[0]))
        budget[0] -= min(len(value), limit)
        return value if len(value) <= limit else clip_str(value, limit)
    if isinstance(value, dict):
        if depth >= 2 or budget[0] <= 0:
            return f"... (an object of {len(value)} keys)"
        out: dict[str, Any] = {}
        for key, item in islice(value.items(), CLIP_ITEMS):
            out[_clip(str(key), budget, depth + 1)] = _clip(item, budget, depth + 1)
        if len(value) > CLIP_ITEMS:
            out["..."] = f"{len(value) - CLIP_ITEMS} more keys"
        return out
    if isinstance(value, list | tuple):
        if depth >= 2 or budget[0] <= 0:
            return f"... (a list of {len(value)} items)"
        items = [_clip(item, budget, depth + 1) for item in value[:CLIP_ITEMS]]
        if len(value) > CLIP_ITEMS:
            items.append(f"... ({len(value) - CLIP_ITEMS} more items)")
        return items
    if isinstance(value, bytes | bytearray):
        return _clip(_bytes_text(value), budget, depth)
    return value  # a number, a bool, None


def _clip_bytes(body: bytes) -> str:
    """A body that is not JSON, echoed as the validator would (``repr`` of the bytes), cut."""
    return clip_str(_bytes_text(body))


def _bytes_text(data: bytes | bytearray) -> str:
    head = bytes(data[: CLIP_CHARS + 1])
    text = repr(head)
    return text if len(data) <= CLIP_CHARS else f"{text}... ({len(data)} bytes)"
