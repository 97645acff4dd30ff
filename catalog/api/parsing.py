"""Requests as the HTTP contract reads them: the body of a write, the query parameters of a read or a
delete, the content type. Everything a route needs validated before it calls the service."""
from __future__ import annotations

import email.message
import re
from collections.abc import Mapping
from typing import Any

from .. import codec
from ..changes import DEFAULT_FEED_LIMIT, MAX_FEED_LIMIT
from ..errors import RecordTooLargeError, UnsupportedMediaTypeError, ValidationError
from ..idempotency import KeyedRequest, check_key, fingerprint
from ..keys import LONE_SURROGATE
from ..service import DEFAULT_LIMIT, MAX_LIMIT
from ..settings import Schema

MAX_BODY_BYTES = 16 * 1024 * 1024
# Query parameters that are not filters. `code` carries a function key on Azure.
RESERVED_PARAMS = ("row_from", "row_to", "row_prefix", "fields", "limit", "continuation", "code", "wait")
BULK_KEY = "records"


def records_from_body(body: Any) -> tuple[list[Any], bool]:
    """One record (object), many (array), or `{"records": [...]}` (an object whose only key is
    `records` holding an array). Returns (records, is_bulk)."""
    if isinstance(body, list):
        return body, True
    if isinstance(body, dict):
        if set(body) == {BULK_KEY} and isinstance(body[BULK_KEY], list):
            return body[BULK_KEY], True
        return [body], False
    raise ValidationError(f"body must be a JSON object or an array of objects, not {type(body).__name__}")


def check_json_content_type(value: str | None) -> None:
    """POST bodies must be `application/json` (UTF-8, the only charset JSON has): anything else is a
    415, so a cross-site form or text/plain post, which a browser sends without asking, is refused."""
    if not value:
        raise UnsupportedMediaTypeError("send the body as application/json (the Content-Type header is missing)")
    message = email.message.Message()
    message["content-type"] = value
    if value.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaTypeError(f"send the body as application/json, not {codec.printable(value)}")
    charset = message.get_param("charset")
    if charset is not None and str(charset).strip().lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaTypeError(f"JSON is UTF-8: charset {codec.printable(str(charset))} is not accepted")


def parse_body(body: bytes) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise RecordTooLargeError(f"request body is {len(body)} bytes; at most {MAX_BODY_BYTES}")
    if not body.strip():
        raise ValidationError("request body is empty: send a JSON object or an array of objects")
    return codec.parse_json(body)


_LIMIT = re.compile(r"[0-9]{1,7}")
_WAIT = re.compile(r"[0-9]{1,2}")
MAX_WAIT = 60  # seconds a long-poll may hold a request (Functions allows 230 s for an HTTP trigger)
RANGE_PARAMS = ("row_from", "row_to", "row_prefix")
PAGING_PARAMS = ("fields", "limit", "continuation")


def parse_query(params: Mapping[str, str], schema: Schema, *, kind: str = "query") -> dict:
    """Split query parameters into filters and options for a `query`, a `count` or a `delete`.

    Every parameter that is not reserved is an equality filter on a top-level field; at least one
    must be on an index key (the planner checks that, and every value, before storage is read).
    Options that do not apply to the route (`limit` on a count, `fields` on a delete...) are 400s."""
    filters = {k: v for k, v in params.items() if k not in RESERVED_PARAMS}
    options: dict[str, Any] = {name: params.get(name) for name in RANGE_PARAMS}
    allowed = PAGING_PARAMS if kind == "query" else ()
    extra = [k for k in RESERVED_PARAMS if k in params and k not in (*RANGE_PARAMS, *allowed, "code")]
    if extra:
        raise ValidationError(f"{', '.join(extra)} does not apply to a {kind}", field=extra[0])
    if kind == "query":
        options["limit"] = parse_limit(params, DEFAULT_LIMIT, MAX_LIMIT)
        options["continuation"] = params.get("continuation") or None
        options["fields"] = parse_fields(params.get("fields"))
    return {"filters": filters, **options}


def parse_limit(params: Mapping[str, str], default: int, maximum: int) -> int:
    """`limit=N`: a whole number from 1 to `maximum` in plain ASCII digits (an empty one too is a 400)."""
    raw = params.get("limit")
    if raw is None:
        return default
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= maximum:
        raise ValidationError(f"limit must be a whole number from 1 to {maximum} in plain digits, got "
                              f"{codec.printable(raw)}", field="limit")
    return int(raw)


def parse_fields(raw: str | None) -> list[str] | None:
    """`fields=a,b,c`: the top-level fields each item keeps (names as given; unknown ones are fine)."""
    if raw is None:
        return None
    names = raw.split(",")
    if any(not name for name in names):
        raise ValidationError("fields is a comma-separated list of field names, none of them empty, got "
                              f"{codec.printable(raw)}", field="fields")
    if any(LONE_SURROGATE.search(name) for name in names):
        raise ValidationError("a name in fields holds a lone surrogate, which no record can hold", field="fields")
    return names


def parse_wait(params: Mapping[str, str]) -> int:
    """`wait=S`: whole seconds from 0 to 60 in plain digits (default 0)."""
    raw = params.get("wait")
    if raw is None:
        return 0
    if not _WAIT.fullmatch(raw) or int(raw) > MAX_WAIT:
        raise ValidationError(f"wait must be a whole number of seconds from 0 to {MAX_WAIT} in plain digits, "
                              f"got {codec.printable(raw)}", field="wait")
    return int(raw)


def keyed_request(key: str | None, method: str, route: str, params: Mapping[str, str],
                  body: bytes) -> KeyedRequest | None:
    """The `Idempotency-Key` of a write (None without one), with the fingerprint of the request it
    was sent with: a repeat must be the same method, route, query and body to get the first answer."""
    if key is None:
        return None
    return KeyedRequest(check_key(key), fingerprint(method, route, dict(params), body))


CHANGES_PARAMS = ("after", "since", "limit", "wait", "code")


def parse_changes(params: Mapping[str, str]) -> dict:
    """`GET /changes`: `after` (a position) or `since` (an ISO time), `limit` 1..1000 (default 100),
    `wait` 0..60 seconds. Anything else is a 400."""
    unknown = [k for k in params if k not in CHANGES_PARAMS]
    if unknown:
        raise ValidationError(f"unknown parameter {codec.printable(unknown[0])}: the change feed takes after or "
                              "since, limit and wait", field=unknown[0])
    return {"after": params.get("after"), "since": params.get("since"),
            "limit": parse_limit(params, DEFAULT_FEED_LIMIT, MAX_FEED_LIMIT), "wait": parse_wait(params)}


def parse_history(params: Mapping[str, str], schema: Schema) -> dict:
    """`GET /records/history`: the identity (every index key and the row key, nothing else) and `as_of`."""
    identity = {k: v for k, v in params.items() if k not in ("as_of", "code")}
    extra = [k for k in identity if k not in schema.key_fields]
    if extra:
        raise ValidationError(f"{codec.printable(extra[0])} is not part of a record's identity (the index keys "
                              f"{', '.join(schema.index_keys)} and the row key {schema.row_key})", field=extra[0])
    return {"identity": identity, "as_of": params.get("as_of")}
