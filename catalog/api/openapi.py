"""The OpenAPI 3 description of the HTTP API, generated for the configured schema."""
from __future__ import annotations

from typing import Any

from ..changes import DEFAULT_FEED_LIMIT, MAX_FEED_LIMIT
from ..service import DEFAULT_LIMIT, MAX_BULK_RECORDS, MAX_DELETE_MATCHES, MAX_LIMIT
from ..settings import Schema
from .parsing import MAX_WAIT, RESERVED_PARAMS
from .problems import PROBLEM_JSON

ROUTES = {
    # (route, method): (operationId, summary); function_app.py registers exactly these.
    ("records", "POST"): ("post_records", "Accept one record or many for indexing"),
    ("records", "GET"): ("get_records", "Query records by index keys"),
    ("records/count", "GET"): ("count_records", "Count the records matching a query"),
    ("records", "DELETE"): ("delete_records", "Delete the records matching a filter"),
    ("records/history", "GET"): ("get_record_history", "Every version of one record, or the one in effect at a time"),
    ("changes", "GET"): ("get_changes", "The change feed: every accepted put and delete once, in order"),
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
    row_params: list[dict] = [{"name": n, "in": "query", "required": False, "schema": string,
                   "description": f"inclusive {'lower' if n == 'row_from' else 'upper'} bound on {schema.row_key!r}"}
                  for n in ("row_from", "row_to")]
    row_params.append({"name": "row_prefix", "in": "query", "required": False,
                       "schema": {"type": "string", "minLength": 1},
                       "description": f"only records whose {schema.row_key!r} starts with this (not with "
                                      "row_from/row_to)"})
    paging = [{"name": "fields", "in": "query", "required": False, "schema": {"type": "string", "minLength": 1},
               "description": "comma-separated top-level fields each item keeps (absent or unknown ones are left "
                              "out)"},
              {"name": "limit", "in": "query", "required": False,
               "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
              {"name": "continuation", "in": "query", "required": False, "schema": string,
               "description": "the continuation of the previous page"}]
    wait = {"name": "wait", "in": "query", "required": False,
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT, "default": 0},
            "description": "seconds to wait for the operation to finish (long-poll)"}
    idempotency_key = {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                   "pattern": r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$"},
        "description": "makes the write safe to send again: a repeat with the same key and the same request within "
                       "24 hours answers the first answer (the same operation) and writes nothing; the same key "
                       "with another request is a 422; a repeat while the first is still being written waits for it "
                       "(up to 10 s), else 409 with Retry-After"}
    filters_note = ("Filters: `<field>=<value>` on any top-level field, ANDed, at least one on an index key "
                    f"({', '.join(schema.index_keys)}). Values compare as index values do: strings "
                    + ("exactly" if schema.case_sensitive else "case-insensitively")
                    + ", numbers and booleans as their JSON text; a field that is missing, an object, a list or "
                    "null never matches. The query reads only the smallest of the filtered index partitions.")
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

    paths: dict[str, dict[str, dict[str, Any]]] = {
        "/records": {
            "post": {"operationId": "post_records", "summary": ROUTES[("records", "POST")][1],
                     "requestBody": {"required": True, "content": {j: {"schema": {"oneOf": [
                         {"$ref": "#/components/schemas/Record"},
                         {"type": "array", "minItems": 1, "maxItems": MAX_BULK_RECORDS,
                          "items": {"$ref": "#/components/schemas/Record"}},
                         {"type": "object", "required": ["records"], "additionalProperties": False,
                          "properties": {"records": {"type": "array", "minItems": 1, "maxItems": MAX_BULK_RECORDS,
                                                     "items": {"$ref": "#/components/schemas/Record"}}}}]}}}},
                     "parameters": [idempotency_key],
                     "responses": {**ok("Accepted", "202", accepted_headers),
                                   **_problem_responses(400, 409, 413, 415, 422, 503)}},
            "get": {"operationId": "get_records", "summary": ROUTES[("records", "GET")][1],
                    "description": filters_note, "parameters": filter_params + row_params + paging,
                    "responses": {**ok("Page"), **_problem_responses(400, 503)}},
            "delete": {"operationId": "delete_records", "summary": ROUTES[("records", "DELETE")][1],
                       "description": f"Resolves the filter to records when accepted (at most {MAX_DELETE_MATCHES}). "
                                      "A filter that matches nothing writes nothing: 200 with `matched: 0` and "
                                      "`operation: null`.",
                       "parameters": filter_params + row_params + [idempotency_key],
                       "responses": {**ok("DeleteAccepted", "202", accepted_headers), **ok("DeleteAccepted"),
                                     **_problem_responses(400, 409, 422, 503)}},
        },
        "/records/count": {"get": {"operationId": "count_records", "summary": ROUTES[("records/count", "GET")][1],
                                   "description": filters_note + " Exact; it reads the smallest partition to its "
                                                                 "end.",
                                   "parameters": filter_params + row_params,
                                   "responses": {**ok("Count"), **_problem_responses(400, 503)}}},
        "/records/history": {"get": {
            "operationId": "get_record_history", "summary": ROUTES[("records/history", "GET")][1],
            "description": "The record is named by every index key and its row key. Versions are puts and deletes "
                           "(a delete carries the record it removed), oldest first; with `as_of`, only the one "
                           "in effect at that time (none if nothing had been written yet).",
            "parameters": [{"name": k, "in": "query", "required": True, "schema": string}
                           for k in dict.fromkeys((*schema.index_keys, schema.row_key)) if k not in RESERVED_PARAMS]
                          + [{"name": "as_of", "in": "query", "required": False,
                              "schema": {"type": "string", "format": "date-time"}}],
            "responses": {**ok("History"), **_problem_responses(400, 503)}}},
        "/changes": {"get": {
            "operationId": "get_changes", "summary": ROUTES[("changes", "GET")][1],
            "description": "Every accepted put and delete exactly once, in position order, up to `frontier` (a "
                           "time before which no entry can still appear); resume with `after=<next>`. Without "
                           "`after` or `since`, from the beginning.",
            "parameters": [{"name": "after", "in": "query", "required": False, "schema": string,
                            "description": "a position (`position` of an item, or `next`) to read after"},
                           {"name": "since", "in": "query", "required": False,
                            "schema": {"type": "string", "format": "date-time"},
                            "description": "changes accepted at or after this time (not with after)"},
                           {"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_FEED_LIMIT,
                                       "default": DEFAULT_FEED_LIMIT}},
                           {**wait, "description": "seconds to wait, when nothing new is final, for a change"}],
            "responses": {**ok("Changes"), **_problem_responses(400, 503)}}},
        "/operations/{id}": {"get": {"operationId": "get_operation", "summary": ROUTES[("operations/{id}", "GET")][1],
                                     "parameters": [{"name": "id", "in": "path", "required": True, "schema": string},
                                                    wait],
                                     "responses": {**ok("Operation"), **_problem_responses(400, 404, 503)}}},
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
        "Change": {"type": "object", "required": ["position", "operation", "kind", "record", "time"],
                   "properties": {"position": string, "operation": string,
                                  "kind": {"type": "string", "enum": ["put", "delete"]},
                                  "record": {"type": "object"}, "time": string}},
        "Changes": {"type": "object", "required": ["items", "next", "frontier"],
                    "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Change"}},
                                   "next": string, "frontier": string}},
        "History": {"type": "object", "required": ["items"],
                    "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Change"}}}},
        "Count": {"type": "object", "required": ["count"], "properties": {"count": {"type": "integer"}}},
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
                                  "pending_at_least": {"type": "boolean"},
                                  "oldest_pending_age_seconds": {"type": "number", "nullable": True},
                                  "failed_operations": {}, "latest_failures": {"type": "array"},
                                  "status_marks_unwritten": {"type": "integer"},
                                  "shards": {"type": "array"}}},
        "Recovery": {"type": "object", "required": ["operations", "entries", "failed"],
                     "properties": {"operations": {"type": "integer"}, "entries": {"type": "integer"},
                                    "failed": {"type": "integer"}, "changed": {"type": "integer"},
                                    "stopped_shards": {"type": "array", "items": {"type": "integer"}},
                                    "checkpoints": {"type": "object", "additionalProperties": string}}},
    }
    # Keys (deployed; locally none is needed): data routes take a function key, the recover route
    # the host's admin (master) key, the document itself none. Each in a header or in `code`.
    function_key: list[dict[str, list[str]]] = [{"functionKeyHeader": []}, {"functionKeyQuery": []}]
    for route, methods in paths.items():
        for op in methods.values():
            if route == "/openapi.json":
                op["security"] = []
            elif route.startswith("/manage/"):
                op["security"] = [{"adminKeyHeader": []}, {"adminKeyQuery": []}]
                op["responses"].update(_problem_responses(401))
            else:
                op["security"] = function_key
                op["responses"].update(_problem_responses(401))
    key = "a function key (Function App > App keys, or a function's own key)"
    admin = "the host's master key (admin routes)"
    security_schemes = {
        "functionKeyHeader": {"type": "apiKey", "in": "header", "name": "x-functions-key", "description": key},
        "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code", "description": key},
        "adminKeyHeader": {"type": "apiKey", "in": "header", "name": "x-functions-key", "description": admin},
        "adminKeyQuery": {"type": "apiKey", "in": "query", "name": "code", "description": admin},
    }
    return {"openapi": "3.0.3",
            "info": {"title": "az-table-catalog", "version": "2.0.0",
                     "description": f"Catalog indexed by {', '.join(schema.index_keys)}; "
                                    f"rows sorted by {schema.row_key}."},
            "servers": [{"url": "/api"}],
            "security": function_key,
            "paths": paths,
            "components": {"schemas": schemas, "securitySchemes": security_schemes}}
