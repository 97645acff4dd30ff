"""What the HTTP client raises: one exception per class of answer, each carrying the problem details
(RFC 9457) the API sent, so a caller can branch on the class and show the `detail`, `field` and
record `index` without parsing text."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Operation


class CatalogHttpError(Exception):
    """Base of everything `CatalogHttpClient` raises on purpose.

    `status` is the HTTP status (None when no answer came: the host was unreachable after the
    retries); `title`, `detail`, `field`, `index` and `error_id` are the problem's members (the
    server logs a 5xx's story under its `error_id`); `problem` is the whole problem body.
    `accepted` lists the operations an `insert_many` had already been given when it failed."""

    def __init__(self, message: str, *, status: int | None = None, title: str | None = None,
                 detail: str | None = None, field: str | None = None, index: int | None = None,
                 error_id: str | None = None, problem: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field
        self.index = index
        self.error_id = error_id
        self.problem: Mapping[str, Any] = problem or {}
        self.accepted: tuple[Operation, ...] = ()


class HttpBadRequestError(CatalogHttpError):
    """400, 415 or 422: the request itself is wrong (a record, a filter, an option); retrying the same
    request cannot help. Nothing was written."""


class HttpNotFoundError(CatalogHttpError):
    """404: no such operation (or route)."""


class HttpConflictError(CatalogHttpError):
    """409 that outlived the retries: the first request under the same Idempotency-Key is still
    being written."""


class HttpTooLargeError(CatalogHttpError):
    """413: a record over Azure's 1 MiB entity limit, or a body over the API's 16 MiB (the client
    refuses one record that alone would not fit a body before sending it)."""


class HttpUnavailableError(CatalogHttpError):
    """The API did not serve the request: 429, 502, 503 or 504 or no answer at all (`status` None,
    `__cause__` the connection error) after every retry, or a 500 (a bug or a misconfiguration on the
    server, which a retry would not mend; its `error_id` finds the story in the function log)."""


class OperationFailed(CatalogHttpError):
    """`wait` found the operation failed: an entry could not be applied even after the queue's
    retries. `reason` is the server's account of it; `operation` the Operation as last read."""

    def __init__(self, operation: Operation) -> None:
        self.operation = operation
        self.reason = operation.reason or "no reason given"
        super().__init__(f"operation {operation.id} failed: {self.reason}", detail=self.reason)


class OperationTimeoutError(CatalogHttpError, TimeoutError):
    """`wait` gave up while the operation was still pending; `operation` is the last status read
    (the write is accepted and will still be applied: wait again or look it up later)."""

    def __init__(self, operation: Operation, timeout: float) -> None:
        self.operation = operation
        super().__init__(f"operation {operation.id} still {operation.status} after {timeout:g} s")


_CLASSES: dict[int, type[CatalogHttpError]] = {
    400: HttpBadRequestError, 415: HttpBadRequestError, 422: HttpBadRequestError,
    404: HttpNotFoundError, 409: HttpConflictError, 413: HttpTooLargeError,
    429: HttpUnavailableError,
}


def error_class(status: int) -> type[CatalogHttpError]:
    """The exception class for an answer's status (401/403/405 and other 4xx: the base class)."""
    if status >= 500:
        return HttpUnavailableError
    return _CLASSES.get(status, CatalogHttpError)


def error_from_answer(method: str, url: str, status: int, reason: str, content_type: str,
                      body: bytes) -> CatalogHttpError:
    """The exception for an error answer: its problem details when the body is a JSON object,
    else the status line and the start of the body."""
    problem: dict[str, Any] = {}
    if "json" in content_type.lower():
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            problem = parsed
    title = _text(problem.get("title")) or reason or None
    detail = _text(problem.get("detail"))
    if detail is None and not problem:
        detail = body[:500].decode("utf-8", "replace").strip() or None
    index = problem.get("index")
    message = f"{method} {url}: {status} {title or ''}".rstrip() + (f": {detail}" if detail else "")
    return error_class(status)(
        message, status=status, title=title, detail=detail, field=_text(problem.get("field")),
        index=index if isinstance(index, int) and not isinstance(index, bool) else None,
        error_id=_text(problem.get("error_id")), problem=problem)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
