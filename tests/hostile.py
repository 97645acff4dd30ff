"""Hostile requests, one table for every edge that serves them: the function app called in-process
(tests/integration/test_hostile_input.py) and the dev host over a real socket
(tests/e2e/test_hostile_input_e2e.py). Each names what it sends and what must come back; both
suites also count the WAL table, the index table and the queue before and after: nothing written.

The schema is tests.conftest.APP_SCHEMA_ENV: index keys sku, category; row key name.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field

from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient

JSON = {"Content-Type": "application/json"}


def _token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _good_token_shape(rk: str, pk: str = "sku a") -> str:
    tag = hashlib.sha256(pk.encode()).hexdigest()[:16]
    return _token(json.dumps({"v": 1, "p": tag, "r": rk}).encode())


def _record(**extra) -> dict:
    return {"sku": "a", "category": "c", "name": "n", **extra}


def _body(text: str) -> bytes:
    return text.encode("utf-8")


def _nested(depth: int) -> dict:
    value: object = 1
    for _ in range(depth - 1):  # the record itself is the outermost level
        value = {"x": value}
    return _record(deep=value)


@dataclass(frozen=True)
class Hostile:
    id: str
    method: str
    route: str  # below /api
    status: int
    params: dict = field(default_factory=dict)
    body: bytes = b""
    headers: dict = field(default_factory=lambda: dict(JSON))
    field: str | None = None  # the problem's `field`
    index: int | None = None  # the problem's `index` (a bulk request's record)
    detail: str = ""  # a part of the problem's `detail`


LONG = "x" * 600  # encoded longer than any table key
CASES = [
    # -- lone surrogates and bytes that are not UTF-8 -------------------------------------------------
    Hostile("lone surrogate in a value", "POST", "records", 400,
            body=_body('{"sku": "a", "category": "c", "name": "n", "note": "\\ud800"}'), field="note",
            detail="lone surrogate"),
    Hostile("lone surrogate in an index key", "POST", "records", 400,
            body=_body('{"sku": "\\udc00", "category": "c", "name": "n"}'), field="sku", detail="lone surrogate"),
    Hostile("lone surrogate in a field name", "POST", "records", 400,
            body=_body('{"sku": "a", "category": "c", "name": "n", "k\\ud83d": 1}'), detail="lone surrogate"),
    Hostile("lone surrogate deep in a bulk record", "POST", "records", 400,
            body=_body('[{"sku": "a", "category": "c", "name": "n"},'
                       ' {"sku": "b", "category": "c", "name": "n", "l": [{"t": "\\udfff"}]}]'),
            field="l", index=1, detail="lone surrogate"),
    Hostile("bytes that are not UTF-8", "POST", "records", 400,
            body=b'{"sku": "\xff\xfe", "category": "c", "name": "n"}', detail="UTF-8"),
    Hostile("UTF-16 body", "POST", "records", 400, body=json.dumps(_record()).encode("utf-16"), detail="UTF-8"),
    # -- malformed JSON that used to be a 500 ---------------------------------------------------------
    Hostile("4 KB of nesting", "POST", "records", 400, body=b"[" * 2048 + b"]" * 2048, detail="levels deep"),
    Hostile("a record one level too deep", "POST", "records", 400, body=_body(json.dumps(_nested(65))),
            field="deep", detail="nests more than"),
    Hostile("1e400 as an index key", "POST", "records", 400,
            body=b'{"sku": 1e400, "category": "c", "name": "n"}', field="sku", detail="out of range"),
    Hostile("-1e400 as the row key", "POST", "records", 400,
            body=b'{"sku": "a", "category": "c", "name": -1e400}', field="name", detail="out of range"),
    Hostile("1e400 in another field", "POST", "records", 400,
            body=b'{"sku": "a", "category": "c", "name": "n", "price": 1e400}', field="price", detail="out of range"),
    Hostile("NaN", "POST", "records", 400, body=b'{"sku": "a", "category": "c", "name": "n", "p": NaN}',
            detail="NaN"),
    Hostile("duplicate keys", "POST", "records", 400,
            body=b'{"sku": "a", "category": "c", "name": "n", "sku": "b"}', field="sku", detail="more than once"),
    # -- content types ---------------------------------------------------------------------------------
    Hostile("text/plain (a cross-site form can send it)", "POST", "records", 415,
            body=_body(json.dumps(_record())), headers={"Content-Type": "text/plain"}),
    Hostile("form-encoded", "POST", "records", 415, body=b"sku=a&category=c&name=n",
            headers={"Content-Type": "application/x-www-form-urlencoded"}),
    Hostile("XML", "POST", "records", 415, body=b"<r sku='a'/>", headers={"Content-Type": "application/xml"}),
    Hostile("no content type", "POST", "records", 415, body=_body(json.dumps(_record())), headers={}),
    Hostile("JSON in Latin-1", "POST", "records", 415, body=_body(json.dumps(_record())),
            headers={"Content-Type": "application/json; charset=iso-8859-1"}, detail="UTF-8"),
    # -- read parameters: checked like keys before they reach storage ----------------------------------
    Hostile("continuation holding a lone surrogate", "GET", "records", 400,
            params={"sku": "a", "continuation": _good_token_shape("\ud800 " + "0" * 24)}, field="continuation"),
    Hostile("continuation of deeply nested JSON", "GET", "records", 400,
            params={"sku": "a", "continuation": _token(b"[" * 3000)}, field="continuation"),
    Hostile("continuation far too long", "GET", "records", 400,
            params={"sku": "a", "continuation": "A" * 20_000}, field="continuation"),
    Hostile("continuation of another query", "GET", "records", 400,
            params={"sku": "a", "continuation": _good_token_shape("n " + "0" * 24, pk="sku b")},
            field="continuation", detail="another query"),
    Hostile("continuation with a key storage would refuse", "GET", "records", 400,
            params={"sku": "a", "continuation": _good_token_shape("bad#key " + "0" * 24)}, field="continuation"),
    Hostile("filter value longer than a key", "GET", "records", 400, params={"sku": LONG}, field="sku",
            detail="too long"),
    Hostile("row_from longer than a key", "GET", "records", 400, params={"sku": "a", "row_from": LONG},
            field="row_from", detail="too long"),
    Hostile("row_to longer than a key", "GET", "records", 400, params={"sku": "a", "row_to": LONG},
            field="row_to", detail="too long"),
    Hostile("limit=1_0", "GET", "records", 400, params={"sku": "a", "limit": "1_0"}, field="limit"),
    Hostile("limit in other digits", "GET", "records", 400, params={"sku": "a", "limit": "\u0661\u0660"},
            field="limit"),
    Hostile("limit empty", "GET", "records", 400, params={"sku": "a", "limit": ""}, field="limit"),
    Hostile("limit with a sign", "GET", "records", 400, params={"sku": "a", "limit": "+5"}, field="limit"),
    Hostile("delete with a filter longer than a key", "DELETE", "records", 400, params={"category": LONG},
            field="category", detail="too long"),
    Hostile("delete with row_to longer than a key", "DELETE", "records", 400,
            params={"sku": "a", "row_to": LONG}, field="row_to"),
    Hostile("recover since a time UTC cannot hold", "POST", "manage/recover", 400,
            params={"since": "0001-01-01T00:00:00+14:00"}, field="since"),
    Hostile("recover since no time at all", "POST", "manage/recover", 400, params={"since": "yesterday"},
            field="since"),
]

FUNCTION_FOR = {("POST", "records"): "post_records", ("GET", "records"): "get_records",
                ("DELETE", "records"): "delete_records", ("POST", "manage/recover"): "post_recover"}


def check_problem(case: Hostile, status: int, content_type: str, problem: dict) -> None:
    """The answer is the case's 4xx as problem+json, saying what it should."""
    assert status == case.status, (case.id, status, problem)
    assert content_type.split(";")[0].strip() == "application/problem+json", content_type
    assert problem["status"] == case.status and problem["title"] and problem["detail"]
    if case.field is not None:
        assert problem.get("field") == case.field, problem
    if case.index is not None:
        assert problem.get("index") == case.index, problem
    assert case.detail in problem["detail"], problem


class StorageCounts:
    """How many entities the catalog's WAL and index tables hold and how many messages its queue."""

    def __init__(self, connection: str, table: str, queue: str):
        self.tables = TableServiceClient.from_connection_string(connection)
        self.table, self.wal = table, table + "wal"
        self.queue = QueueClient.from_connection_string(connection, queue)

    def _entities(self, name: str) -> int:
        return sum(1 for _ in self.tables.get_table_client(name).list_entities(select=["RowKey"]))

    def __call__(self) -> dict[str, int]:
        return {"wal": self._entities(self.wal), "index": self._entities(self.table),
                "queue": self.queue.get_queue_properties().approximate_message_count}
