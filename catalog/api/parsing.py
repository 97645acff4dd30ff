"""Requests as the HTTP contract reads them: the body of a write, the query parameters of a read or a
delete, the content type. Everything a route needs validated before it calls the service."""
from __future__ import annotations

import email.message
import re
from collections.abc import Mapping
from typing import Any

from .. import codec
from ..errors import RecordTooLargeError, UnsupportedMediaTypeError, ValidationError
from ..service import DEFAULT_LIMIT, MAX_LIMIT
from ..settings import Schema

MAX_BODY_BYTES = 16 * 1024 * 1024
# Query parameters that are not filters. `code` carries a function key on Azure.
RESERVED_PARAMS = ("row_from", "row_to", "limit", "continuation", "code")
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


def parse_query(params: Mapping[str, str], schema: Schema, *, paging: bool = True) -> dict:
    """Split query parameters into filters and options; unknown fields and bad values are 400s.
    Filter values and row bounds are checked as keys by the index before anything reaches storage."""
    filters = {k: v for k, v in params.items() if k not in RESERVED_PARAMS}
    unknown = [k for k in filters if k not in schema.index_keys]
    if unknown:
        raise ValidationError(f"unknown filter field(s) {', '.join(map(codec.printable, unknown))}: filter by the "
                              f"index keys {', '.join(schema.index_keys)}", field=unknown[0])
    if not filters:
        raise ValidationError(f"at least one filter is required, on an index key ({', '.join(schema.index_keys)})")
    options: dict[str, Any] = {"row_from": params.get("row_from"), "row_to": params.get("row_to")}
    if paging:
        raw = params.get("limit")
        if raw is None:
            options["limit"] = DEFAULT_LIMIT
        else:
            if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
                raise ValidationError(f"limit must be a whole number from 1 to {MAX_LIMIT} in plain digits, got "
                                      f"{codec.printable(raw)}", field="limit")
            options["limit"] = int(raw)
        options["continuation"] = params.get("continuation") or None
    else:
        extra = [k for k in ("limit", "continuation") if k in params]
        if extra:
            raise ValidationError(f"{', '.join(extra)} does not apply to a delete", field=extra[0])
    return {"filters": filters, **options}
