"""CatalogHttpClient: the catalog's HTTP API from Python, with the chores every caller would otherwise
hand-write: paging, waiting for operations, splitting bulk writes at the API's limits, the function
key, and retries that can never write twice (every POST and DELETE carries an Idempotency-Key that
each retry of that call repeats, so the server answers a repeat with the first attempt's operation).
"""
from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from .backoff import Backoff, retry_after_seconds, retryable_status
from .errors import (
    CatalogHttpError,
    HttpBadRequestError,
    HttpTooLargeError,
    HttpUnavailableError,
    OperationFailed,
    OperationTimeoutError,
    error_from_answer,
)
from .models import FAILED, PENDING, Change, Operation
from .wire import (
    MAX_BODY_BYTES,
    MAX_RECORDS,
    MAX_WAIT,
    BodyTooLarge,
    bulk_bodies,
    fields_text,
    filter_params,
    query_text,
    single_body,
    time_text,
)

log = logging.getLogger("catalog.remote")

# No answer, or half of one: worth another attempt. (requests' SSLError is a ConnectionError too,
# but a certificate problem does not heal by itself.)
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
_PERMANENT = (requests.exceptions.SSLError, requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
              requests.exceptions.MissingSchema)
_Params = Sequence[tuple[str, str]]


class CatalogHttpClient:
    """A client of one deployed catalog (`base_url` as `https://<app>.azurewebsites.net/api`).

    `key` is a function key, sent as `x-functions-key` (none is needed locally). `timeout` bounds
    each attempt in seconds (a long-poll is given its wait on top). `retries` is how many times a
    request is sent again after a connection error, a timeout, 429, 502, 503 or 504 (and 409 on a
    write), waiting `backoff` * 2**n seconds with jitter (at most `max_backoff`), or the server's
    `Retry-After` if longer. Connections are pooled (`pool_size` per host): reuse one client, and
    close it (or use it as a context manager) when done."""

    def __init__(self, base_url: str, *, key: str | None = None, timeout: float = 30.0, retries: int = 5,
                 backoff: float = 0.5, max_backoff: float = 30.0, pool_size: int = 10) -> None:
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = Backoff(backoff, max_backoff)
        self._sleep: Callable[[float], None] = time.sleep
        self._schema: dict | None = None
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update({"Accept": "application/json", "User-Agent": "az-table-catalog-http-client"})
        if key:
            self._session.headers["x-functions-key"] = key

    def __repr__(self) -> str:
        return f"CatalogHttpClient({self.base_url!r})"  # never the key

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> CatalogHttpClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- writes --------------------------------------------------------------------------------------
    def insert(self, record: Mapping[str, Any]) -> Operation:
        """Accept one record (a record with the same identity is replaced when it is applied)."""
        try:
            body = single_body(record)
        except BodyTooLarge as e:
            raise _too_large(e) from None
        return Operation.from_json(self._json("POST", "records", body=body), "insert")

    def insert_many(self, records: Iterable[Mapping[str, Any]]) -> list[Operation]:
        """Accept any number of records, from any iterable (a generator is read as it is sent): one
        request per 1,000 records or 16 MiB of JSON, one operation each, in order.

        If a request is refused, the error's `index` counts from the start of `records`, and its
        `accepted` holds the operations of the requests before it: the records those carried are
        written, the refused request's and any after it are not."""
        if isinstance(records, Mapping):
            raise TypeError("insert_many takes an iterable of records; use insert for one record")
        operations: list[Operation] = []
        bodies = bulk_bodies(records, max_records=MAX_RECORDS, max_bytes=MAX_BODY_BYTES)
        first = count = 0
        try:
            for body, first, count in bodies:  # noqa: B007 (the except clauses read `first`, `count`)
                operations.append(Operation.from_json(self._json("POST", "records", body=body), "insert"))
        except BodyTooLarge as e:
            error = _too_large(e)
            error.accepted = tuple(operations)
            raise error from None
        except CatalogHttpError as e:
            if e.index is None and count == 1 and isinstance(e, HttpBadRequestError | HttpTooLargeError):
                e.index = 0  # the API names no index when a request holds one record
            if e.index is not None:
                e.index += first
                e.add_note(f"insert_many: record {e.index} of the records given (request of records from {first} on)")
            e.accepted = tuple(operations)
            raise
        return operations

    def delete(self, filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
               row_prefix: str | None = None) -> Operation:
        """Delete every record matching (at most 10,000 per call). A filter that matches nothing writes
        nothing: the Operation has no id and is already applied."""
        params = filter_params(filters, row_from=row_from, row_to=row_to, row_prefix=row_prefix)
        return Operation.from_json(self._json("DELETE", "records", params=params), "delete")

    # -- reads ---------------------------------------------------------------------------------------
    def query(self, filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
              row_prefix: str | None = None, fields: Sequence[str] | None = None,
              limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Every matching record, in row-key order, fetched a page of `limit` (1-1000, the server's
        default 100) at a time as the iterator is consumed. Filters are ANDed equalities on top-level
        fields, at least one on an index key; `fields` keeps only those fields of each record."""
        params = filter_params(filters, row_from=row_from, row_to=row_to, row_prefix=row_prefix)
        if fields is not None:
            params.append(("fields", fields_text(fields)))
        if limit is not None:
            params.append(("limit", query_text(int(limit))))
        return self._pages(params)  # parameters checked now; pages read when iterated

    def _pages(self, params: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = self._json("GET", "records", params=[*params, ("continuation", token)] if token else params)
            yield from page["items"]
            token = page.get("continuation")
            if not token:
                return

    def count(self, filters: Mapping[str, Any], *, row_from: str | None = None, row_to: str | None = None,
              row_prefix: str | None = None) -> int:
        """How many records the same query returns (exact)."""
        params = filter_params(filters, row_from=row_from, row_to=row_to, row_prefix=row_prefix)
        return int(self._json("GET", "records/count", params=params)["count"])

    # -- operations ----------------------------------------------------------------------------------
    def operation(self, op_id: str) -> Operation:
        """An operation's status now (HttpNotFoundError if there is no such operation)."""
        return self._operation(op_id, wait=None)

    def _operation(self, op_id: str, wait: int | None) -> Operation:
        params = [("wait", str(wait))] if wait is not None else None
        body = self._json("GET", f"operations/{quote(op_id, safe='')}", params=params, wait=wait or 0)
        return Operation.from_json(body, "insert")

    def wait(self, operation: Operation | str, timeout: float = 60.0) -> Operation:
        """The operation once applied, long-polling the server (at most 60 s per request).

        Raises OperationFailed (with the reason) if it failed, OperationTimeoutError (a TimeoutError,
        carrying the last status) if it is still pending after `timeout` seconds, rounded up to a
        whole second. An Operation without an id (a delete that matched nothing) is returned as is."""
        if isinstance(operation, Operation):
            if operation.id is None:
                return operation
            op_id = operation.id
        else:
            op_id = operation
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            wait = min(MAX_WAIT, max(0, math.ceil(left)))
            asked = time.monotonic()
            current = self._operation(op_id, wait=wait)
            if current.status == FAILED:
                raise OperationFailed(current)
            if current.status != PENDING:
                return current
            now = time.monotonic()
            if now >= deadline:
                raise OperationTimeoutError(current, timeout)
            if now - asked < wait / 2:  # a server that did not hold the request: do not spin
                self._sleep(min(0.2, deadline - now))

    # -- change feed ---------------------------------------------------------------------------------
    def changes(self, after: str | None = None, since: datetime | str | None = None, follow: bool = False, *,
                limit: int | None = None, wait: int = MAX_WAIT) -> Iterator[Change]:
        """Changes in log order from the start, after a `position`, or from a time (`since`), a page
        (of `limit`) at a time. Without `follow` it ends at the first empty page; with it, it waits
        for new changes (long-polling `wait` seconds per request) and never ends."""
        if after is not None and since is not None:
            raise ValueError("give after or since, not both")
        if not 0 <= wait <= MAX_WAIT:
            raise ValueError(f"wait is 0 to {MAX_WAIT} seconds")
        cursor: list[tuple[str, str]] = []
        if after is not None:
            cursor = [("after", str(after))]
        elif since is not None:
            cursor = [("since", time_text(since))]
        extra = [("limit", query_text(int(limit)))] if limit is not None else []
        return self._changes(cursor, extra, wait if follow else None)

    def _changes(self, cursor: list[tuple[str, str]], extra: list[tuple[str, str]],
                 wait: int | None) -> Iterator[Change]:
        while True:
            params = [*cursor, *extra, *([("wait", str(wait))] if wait is not None else [])]
            page = self._json("GET", "changes", params=params, wait=wait or 0)
            items = [Change.from_json(item) for item in page["items"]]
            yield from items
            position = page.get("next")
            if position is None and items:
                position = items[-1].position
            if position is not None:
                cursor = [("after", str(position))]
            if not items and wait is None:
                return

    def history(self, identity: Mapping[str, Any], as_of: datetime | str | None = None) -> list[Change]:
        """Every logged change of one record, oldest first (up to `as_of` if given). `identity` holds
        its index key and row key values; a whole record will do (other fields are not sent)."""
        schema = self._schema or self.schema()
        keys = [*schema["index_keys"], schema["row_key"]]
        params = [(name, query_text(identity[name])) for name in keys if name in identity]
        if as_of is not None:
            params.append(("as_of", time_text(as_of)))
        return [Change.from_json(item) for item in self._json("GET", "records/history", params=params)["items"]]

    # -- about the deployment ------------------------------------------------------------------------
    def schema(self) -> dict[str, Any]:
        """The locked schema: `index_keys`, `row_key`, `case_sensitive`, ..."""
        self._schema = dict(self._json("GET", "schema"))
        return self._schema

    def health(self) -> dict[str, Any]:
        """WAL shards' checkpoints and lag, pending operations, failures."""
        return dict(self._json("GET", "health"))

    # -- transport -----------------------------------------------------------------------------------
    def _json(self, method: str, path: str, *, params: _Params | None = None, body: bytes | None = None,
              wait: int = 0) -> Any:
        response = self._send(method, path, params=params, body=body, wait=wait)
        try:
            return response.json()
        except ValueError:
            raise CatalogHttpError(f"{method} {response.url}: {response.status_code} answer is not JSON",
                                   status=response.status_code, title="Invalid answer") from None

    def _send(self, method: str, path: str, *, params: _Params | None, body: bytes | None,
              wait: int) -> requests.Response:
        """One call: the first attempt and its retries. A write carries one Idempotency-Key for all of
        them, so whichever attempt the server saw first is the one applied and every answer names it."""
        url = f"{self.base_url}/{path}"
        keyed = method in ("POST", "DELETE")
        headers = {"Idempotency-Key": uuid.uuid4().hex} if keyed else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        timeout = (self.timeout, self.timeout + wait)  # (connect, read): a long-poll answers after `wait`
        attempts = self.retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._session.request(method, url, params=params, data=body, headers=headers,
                                                 timeout=timeout)
            except _PERMANENT:
                raise
            except _TRANSIENT as e:
                if last:
                    raise HttpUnavailableError(f"{method} {url}: no answer after {attempts} attempts: {e}") from e
                self._pause(attempt, None, f"{method} {url}: {type(e).__name__}")
                continue
            status = response.status_code
            if status < 400:
                return response
            if retryable_status(status, keyed=keyed) and not last:
                self._pause(attempt, retry_after_seconds(response.headers.get("Retry-After")),
                            f"{method} {url}: {status}")
                continue
            raise error_from_answer(method, response.url, status, response.reason or "",
                                    response.headers.get("Content-Type", ""), response.content)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _pause(self, attempt: int, retry_after: float | None, why: str) -> None:
        delay = self.backoff.delay(attempt, retry_after)
        log.info("%s; retry %d of %d in %.2f s", why, attempt + 1, self.retries, delay)
        self._sleep(delay)


def _too_large(e: BodyTooLarge) -> HttpTooLargeError:
    return HttpTooLargeError(str(e), status=413, title="Payload too large", detail=str(e), index=e.index)
