"""How values go on the wire: filter values and times as query text, records as JSON bodies, and an
iterable of records cut into bodies the API accepts (1,000 records and 16 MiB each), lazily, so
`insert_many` holds one request's records at a time whatever it is given.

The limits repeat the server's (catalog/service.py MAX_BULK_RECORDS, catalog/api/parsing.py
MAX_BODY_BYTES, RESERVED_PARAMS, MAX_WAIT): this package imports nothing from the catalog, so a unit
test keeps the two in step."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

MAX_RECORDS = 1000
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_WAIT = 60
RESERVED_PARAMS = ("row_from", "row_to", "row_prefix", "fields", "limit", "continuation", "code", "wait")
BULK_KEY = "records"


class BodyTooLarge(ValueError):
    """One record whose JSON alone exceeds a request body (`index`: its position in the input)."""

    def __init__(self, index: int | None, size: int, limit: int) -> None:
        self.index = index
        which = "the record" if index is None else f"record {index}"
        super().__init__(f"{which} is {size} bytes of JSON; a request body takes at most {limit}")


def query_text(value: Any) -> str:
    """A filter value as the API compares it: strings as they are, numbers and booleans as their JSON
    text (True -> "true", 12.5 -> "12.5"). None, lists and objects never match a filter, so they are
    refused here rather than sent as text that would match a string."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value, allow_nan=False)
    raise TypeError(f"a filter value must be a string, number or boolean, not {type(value).__name__}")


def time_text(value: datetime | str) -> str:
    """An ISO 8601 time for `since`/`as_of`; a datetime must say its time zone (a naive one is ambiguous)."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("give an aware datetime (with tzinfo), e.g. datetime.now(UTC)")
    return value.isoformat()


def filter_params(filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
                  row_prefix: str | None = None) -> list[tuple[str, str]]:
    """Query parameters of a read, count or delete. A filter on a reserved name would be read as the
    option of that name, so it is refused rather than silently misread."""
    params = []
    for name, value in filters.items():
        if name in RESERVED_PARAMS:
            raise ValueError(f"{name!r} is a reserved query parameter: the HTTP API cannot filter on it")
        params.append((name, query_text(value)))
    for name, bound in (("row_from", row_from), ("row_to", row_to), ("row_prefix", row_prefix)):
        if bound is not None:
            params.append((name, query_text(bound)))
    return params


def fields_text(fields: Sequence[str]) -> str:
    if isinstance(fields, str):
        raise TypeError("fields is a list of field names, not one string")
    for name in fields:
        if "," in name:
            raise ValueError(f"field {name!r} has a comma: it cannot be projected over HTTP")
    return ",".join(fields)


def record_json(record: Any) -> bytes:
    """Compact UTF-8 JSON. A string with a lone surrogate cannot be UTF-8: that record is sent with
    ASCII escapes, so the API refuses it with a 400 naming the field rather than a decoding error."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("ascii")


def single_body(record: Any, *, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The body of a one-record POST: the object itself, or a one-item array when the record would
    read as the bulk envelope (`{"records": [...]}`)."""
    envelope = isinstance(record, Mapping) and set(record) == {BULK_KEY} and isinstance(record[BULK_KEY], list)
    body = record_json([record] if envelope else record)
    if len(body) > max_bytes:
        raise BodyTooLarge(None, len(body), max_bytes)
    return body


def bulk_bodies(records: Iterable[Any], *, max_records: int = MAX_RECORDS,
                max_bytes: int = MAX_BODY_BYTES) -> Iterator[tuple[bytes, int, int]]:
    """(JSON array body, index of its first record, records in it) for each request, in order, each
    filled as far as the limits allow. Records are read from `records` only as the bodies are taken."""
    parts: list[bytes] = []
    size = 2  # the brackets
    first = 0
    for i, record in enumerate(records):
        part = record_json(record)
        if len(part) + 2 > max_bytes:
            raise BodyTooLarge(i, len(part), max_bytes)
        if parts and (len(parts) == max_records or size + 1 + len(part) > max_bytes):
            yield b"[" + b",".join(parts) + b"]", first, len(parts)
            parts, size, first = [], 2, i
        size += len(part) + (1 if parts else 0)
        parts.append(part)
    if parts:
        yield b"[" + b",".join(parts) + b"]", first, len(parts)
