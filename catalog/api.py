"""The HTTP contract (DESIGN §7) without a web framework: request parsing, problem details, OpenAPI.

function_app.py adapts azure.functions requests and responses to these plain functions, so the
contract is testable without the Functions runtime and the app stays a thin edge.
"""
from __future__ import annotations

import email.message
import re
import uuid
from typing import Any, Mapping

from . import codec
from .errors import (CatalogError, IndexNotBuiltError, NotFoundError, RecordTooLargeError, SchemaMismatchError,
                     SettingsError, TransientStorageError, UnsupportedMediaTypeError, ValidationError)
from .service import DEFAULT_LIMIT, MAX_BULK_RECORDS, MAX_DELETE_MATCHES, MAX_LIMIT
from .settings import Schema

PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 16 * 1024 * 1024
# Query parameters that are not filters. `code` carries a function key on Azure.
RESERVED_PARAMS = ("row_from", "row_to", "limit", "continuation", "code")


def problem(status: int, title: str, detail: str, **extra: Any) -> dict:
    """RFC 9457 problem details; `about:blank` because the status and title say it all."""
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}


_TITLES = {400: "Invalid request", 413: "Payload too large", 415: "Unsupported media type"}


def problem_for(error: Exception) -> tuple[int, dict, dict[str, str]]:
    """(status, problem body, extra headers) for an exception raised while serving a request.

    A 4xx says what the caller sent wrong. A 5xx never carries what the catalog knows of its
    storage (endpoints, account, table and queue names, raw storage messages) or a traceback:
    it says what to do and gives an error id; the function log has the whole story under it
    (error_response in function_app.py logs it)."""
    if isinstance(error, ValidationError):
        extra = {k: v for k, v in (("field", error.field), ("index", error.index)) if v is not None}
        if "field" in extra:
            extra["field"] = codec.escape_surrogates(extra["field"])  # a caller's name: keep it encodable
        title = _TITLES.get(error.status, "Invalid request")
        return error.status, problem(error.status, title, str(error), **extra), {}
    if isinstance(error, NotFoundError):
        return 404, problem(404, "Not found", str(error)), {}
    error_id = uuid.uuid4().hex[:12]
    if isinstance(error, TransientStorageError):
        return 503, problem(503, "Storage busy", "storage is busy or unreachable; retry after the Retry-After "
                            f"seconds (error id {error_id})", error_id=error_id), {"Retry-After": "5"}
    if isinstance(error, (SettingsError, SchemaMismatchError, IndexNotBuiltError)):
        return 500, problem(500, "Misconfigured", "the catalog's configuration does not match its storage; the "
                            f"function logs say what to change (error id {error_id})", error_id=error_id), {}
    if isinstance(error, CatalogError):
        return 502, problem(502, "Storage error", "a storage request failed; the function logs have the detail "
                            f"(error id {error_id})", error_id=error_id), {}
    return 500, problem(500, "Internal error", "the request failed unexpectedly; the function logs have the "
                        f"detail (error id {error_id})", error_id=error_id), {}


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


# -- OpenAPI ---------------------------------------------------------------------------------------
ROUTES = {
    # (route, method): (operationId, summary); function_app.py registers exactly these.
    ("records", "POST"): ("post_records", "Accept one record or many for indexing"),
    ("records", "GET"): ("get_records", "Query records by index keys"),
    ("records", "DELETE"): ("delete_records", "Delete the records matching a filter"),
    ("operations/{id}", "GET"): ("get_operation", "Status of an accepted operation"),
    ("schema", "GET"): ("get_schema", "The locked schema"),
    ("health", "GET"): ("get_health", "Liveness, checkpoints, pending operations and lag"),
    ("manage/recover", "POST"): ("post_recover", "Replay the WAL from the checkpoints or a time"),
    ("openapi.json", "GET"): ("get_openapi", "This OpenAPI description"),
}


def _problem_responses(*codes: int) -> dict:
    return {str(c): {"description": "problem", "content": {PROBLEM_JSON: {"schema": {"$ref":
            "#/components/schemas/Problem"}}}} for c in codes}


def openapi(schema: Schema) -> dict:
    """OpenAPI 3.0 description of the API for this schema (its index keys are the filter parameters)."""
    string = {"type": "string"}
    filter_params = [{"name": k, "in": "query", "required": False, "schema": string,
                      "description": f"equality filter on index key {k!r}"
                                     + ("" if schema.case_sensitive else " (case-insensitive)")}
                     for k in schema.index_keys if k not in RESERVED_PARAMS]
    row_params = [{"name": n, "in": "query", "required": False, "schema": string,
                   "description": f"inclusive {'lower' if n == 'row_from' else 'upper'} bound on {schema.row_key!r}"}
                  for n in ("row_from", "row_to")]
    paging = [{"name": "limit", "in": "query", "required": False,
               "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
              {"name": "continuation", "in": "query", "required": False, "schema": string,
               "description": "the continuation of the previous page"}]
    record = {"type": "object", "required": [schema.row_key, *schema.index_keys],
              "properties": {k: {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
                             for k in (schema.row_key, *schema.index_keys)},
              "additionalProperties": True}
    accepted_headers = {"Location": {"schema": string, "description": "/api/operations/{id}"}}
    j = "application/json"

    def ok(ref: str, code: str = "200", headers: dict | None = None) -> dict:
        resp = {"description": "ok", "content": {j: {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}
        if headers:
            resp["headers"] = headers
        return {code: resp}

    paths = {
        "/records": {
            "post": {"operationId": "post_records", "summary": ROUTES[("records", "POST")][1],
                     "requestBody": {"required": True, "content": {j: {"schema": {"oneOf": [
                         {"$ref": "#/components/schemas/Record"},
                         {"type": "array", "minItems": 1, "maxItems": MAX_BULK_RECORDS,
                          "items": {"$ref": "#/components/schemas/Record"}},
                         {"type": "object", "required": ["records"], "additionalProperties": False,
                          "properties": {"records": {"type": "array", "minItems": 1, "maxItems": MAX_BULK_RECORDS,
                                                     "items": {"$ref": "#/components/schemas/Record"}}}}]}}}},
                     "responses": {**ok("Accepted", "202", accepted_headers),
                                   **_problem_responses(400, 413, 415, 503)}},
            "get": {"operationId": "get_records", "summary": ROUTES[("records", "GET")][1],
                    "parameters": filter_params + row_params + paging,
                    "responses": {**ok("Page"), **_problem_responses(400, 503)}},
            "delete": {"operationId": "delete_records", "summary": ROUTES[("records", "DELETE")][1],
                       "description": f"Resolves the filter to records when accepted (at most {MAX_DELETE_MATCHES}). "
                                      "A filter that matches nothing writes nothing: 200 with `matched: 0` and "
                                      "`operation: null`.",
                       "parameters": filter_params + row_params,
                       "responses": {**ok("DeleteAccepted", "202", accepted_headers), **ok("DeleteAccepted"),
                                     **_problem_responses(400, 503)}},
        },
        "/operations/{id}": {"get": {"operationId": "get_operation", "summary": ROUTES[("operations/{id}", "GET")][1],
                                     "parameters": [{"name": "id", "in": "path", "required": True, "schema": string}],
                                     "responses": {**ok("Operation"), **_problem_responses(404, 503)}}},
        "/schema": {"get": {"operationId": "get_schema", "summary": ROUTES[("schema", "GET")][1],
                            "responses": ok("Schema")}},
        "/health": {"get": {"operationId": "get_health", "summary": ROUTES[("health", "GET")][1],
                            "responses": {**ok("Health"), **_problem_responses(503)}}},
        "/manage/recover": {"post": {"operationId": "post_recover", "summary": ROUTES[("manage/recover", "POST")][1],
                                     "description": "Admin key. `admin/...` routes are reserved by the Functions host.",
                                     "parameters": [{"name": "since", "in": "query", "required": False,
                                                     "schema": {"type": "string", "format": "date-time"}}],
                                     "responses": {**ok("Recovery"), **_problem_responses(400, 503)}}},
        "/openapi.json": {"get": {"operationId": "get_openapi", "summary": ROUTES[("openapi.json", "GET")][1],
                                  "responses": {"200": {"description": "ok", "content": {j: {"schema":
                                                {"type": "object"}}}}}}},
    }
    nullable_string = {"type": "string", "nullable": True}
    schemas = {
        "Record": record,
        "Problem": {"type": "object", "required": ["title", "status", "detail"],
                    "properties": {"type": string, "title": string, "status": {"type": "integer"},
                                   "detail": string, "field": string, "index": {"type": "integer"},
                                   "error_id": string}},
        "Accepted": {"type": "object", "required": ["operation", "status", "records"],
                     "properties": {"operation": string, "status": {"type": "string", "enum": ["pending", "applied"]},
                                    "records": {"type": "integer"}}},
        "DeleteAccepted": {"type": "object", "required": ["operation", "status", "matched"],
                           "properties": {"operation": nullable_string,
                                          "status": {"type": "string", "enum": ["pending", "applied"]},
                                          "matched": {"type": "integer"}}},
        "Page": {"type": "object", "required": ["items", "continuation"],
                 "properties": {"items": {"type": "array", "items": {"type": "object"}},
                                "continuation": nullable_string}},
        "Operation": {"type": "object", "required": ["operation", "status"],
                      "properties": {"operation": string,
                                     "status": {"type": "string", "enum": ["pending", "applied", "failed"]},
                                     "action": string, "records": {"type": "integer"}, "matched": {"type": "integer"},
                                     "accepted": string, "finished": string, "error": string,
                                     "last_error": string, "failed": {"type": "integer"}}},
        "Schema": {"type": "object", "required": ["index_keys", "row_key", "case_sensitive"],
                   "properties": {"index_keys": {"type": "array", "items": string}, "row_key": string,
                                  "case_sensitive": {"type": "boolean"}, "table": string, "wal_table": string,
                                  "queue": nullable_string}},
        "Health": {"type": "object", "required": ["status", "pending", "shards"],
                   "properties": {"status": string, "pending": {"type": "integer"},
                                  "oldest_pending_age_seconds": {"type": "number", "nullable": True},
                                  "failed_operations": {}, "latest_failures": {"type": "array"},
                                  "status_marks_unwritten": {"type": "integer"},
                                  "shards": {"type": "array"}}},
        "Recovery": {"type": "object", "required": ["operations", "entries", "failed"],
                     "properties": {"operations": {"type": "integer"}, "entries": {"type": "integer"},
                                    "failed": {"type": "integer"}, "changed": {"type": "integer"},
                                    "stopped_shards": {"type": "array", "items": {"type": "integer"}}}},
    }
    return {"openapi": "3.0.3",
            "info": {"title": "az-table-catalog", "version": "2.0.0",
                     "description": f"Catalog indexed by {', '.join(schema.index_keys)}; rows sorted by {schema.row_key}."},
            "servers": [{"url": "/api"}],
            "paths": paths,
            "components": {"schemas": schemas}}
