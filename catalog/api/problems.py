"""Problem details (RFC 9457) for every error a route can raise: what the caller did wrong for a 4xx,
and for a 5xx nothing of what the catalog knows about its storage."""
from __future__ import annotations

import uuid
from typing import Any

from .. import codec
from ..errors import (
    CatalogError,
    IndexNotBuiltError,
    NotFoundError,
    RequestInFlightError,
    SchemaMismatchError,
    SettingsError,
    TransientStorageError,
    ValidationError,
)

PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> dict:
    """RFC 9457 problem details; `about:blank` because the status and title say it all."""
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}


_TITLES = {400: "Invalid request", 413: "Payload too large", 415: "Unsupported media type",
           422: "Idempotency key reused"}


def problem_for(error: Exception) -> tuple[int, dict, dict[str, str]]:
    """(status, problem body, extra headers) for an exception raised while serving a request.

    A 4xx says what the caller sent wrong. A 5xx never carries what the catalog knows of its
    storage (endpoints, account, table and queue names, raw storage messages) or a traceback:
    it says what to do and gives an error id; the function log has the whole story under it
    (error_response in function_app.py logs it)."""
    if isinstance(error, ValidationError):
        extra: dict[str, Any] = {}
        if error.field is not None:
            extra["field"] = codec.escape_surrogates(error.field)  # a caller's name: keep it encodable
        if error.index is not None:
            extra["index"] = error.index
        title = _TITLES.get(error.status, "Invalid request")
        return error.status, problem(error.status, title, str(error), **extra), {}
    if isinstance(error, NotFoundError):
        return 404, problem(404, "Not found", str(error)), {}
    if isinstance(error, RequestInFlightError):
        return 409, problem(409, "Request in progress", str(error)), {"Retry-After": "1"}
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
