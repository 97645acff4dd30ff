"""The most awkward records the catalog accepts, end to end on Azurite: posted through the function app,
applied by the queue trigger, then queried by every index key, paged one by one, exported, verified
and re-imported into a fresh catalog without a single error. If any of these can be accepted, none
of them may break a later read, message or export."""
from __future__ import annotations

import base64
import json
import os

import azure.functions as func
import pytest

from catalog import codec
from catalog.bootstrap import service_for
from catalog.errors import ValidationError
from catalog.keys import FINGERPRINT_HEX, MAX_KEY_UTF16
from catalog.tools.cli import main
from tests.conftest import unique_name
from tests.hostile import JSON

ORDINARY = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
# Every character the key encoding escapes: ASCII outside the ordinary set (controls, space,
# quotes, / \ # ? %), C1 controls, non-characters, the byte order mark.
ESCAPED = ("".join(chr(c) for c in range(0x80) if chr(c) not in ORDINARY)
           + "".join(chr(c) for c in range(0x80, 0xA0)) + "\ufdd0\ufdef\ufeff\ufffe\uffff\U0001fffe\U0010ffff")
ASTRAL = "𝄞🙂𠜎\U0001f9ea"


def deepest(depth: int):
    value: object = "bottom"
    for i in range(depth - 1):  # the record is the outermost level
        value = {"l": value} if i % 2 else [value]
    return value


def largest_blob(service, base: dict) -> int:
    """The longest string field `base` can carry and still be accepted (binary search on validate)."""
    low, high = 1, codec.MAX_ENTITY_BYTES
    while low < high:
        mid = (low + high + 1) // 2
        try:
            service.validate([{**base, "blob": "x" * mid}])
            low = mid
        except ValidationError:
            high = mid - 1
    return low


def awkward(service) -> list[dict]:
    big = {"sku": "big", "category": "Awk", "name": "big"}
    return [
        {"sku": ESCAPED, "category": "AWK", "name": "ctrl " + ESCAPED, "value": ESCAPED, ESCAPED: ESCAPED,
         "": "empty field name"},
        {"sku": ASTRAL, "category": "awk", "name": ASTRAL + " astral", ASTRAL: [ASTRAL * 50, {ASTRAL: ASTRAL}]},
        {"sku": "deep", "category": "awk", "name": "deep", "tree": deepest(codec.MAX_DEPTH - 1)},
        {"sku": "k" * (MAX_KEY_UTF16 - len("sku ")), "category": "awk",
         "name": "z" * (MAX_KEY_UTF16 - 1 - FINGERPRINT_HEX)},  # the longest keys there are
        {"sku": "O'Brien %00 %27 ' \" \\ / # ? & = +", "category": "awk", "name": "a'b\"c",
         "PartitionKey": "pk", "RowKey": "rk", "Timestamp": "t", "etag": "*", "odata.etag": 1,
         "numbers": [0, -0.0, 1e308, -1e308, 5e-324, 2 ** 200, -(2 ** 200)], "nothing": None},
        {"sku": 12, "category": True, "name": 3.5, "line breaks": "a\u2028b\u2029c\r\nd"},
        {**big, "blob": "x" * largest_blob(service, big)},
    ]


def call(functions, name, method, *, params=None, body=b"", headers=None):
    req = func.HttpRequest(method=method, url="http://localhost/api/x", headers=headers or {},
                           params=params or {}, route_params={}, body=body)
    resp = functions[name].get_user_function()(req)
    return resp, json.loads(resp.get_body().decode("utf-8"))


def drain(app_env, storage_connection, functions):
    from azure.storage.queue import QueueClient

    q = QueueClient.from_connection_string(storage_connection, app_env["CATALOG_TABLE"].lower() + "-wal")
    while messages := list(q.receive_messages(max_messages=32)):
        for m in messages:
            functions["apply_wal_message"].get_user_function()(
                func.QueueMessage(body=base64.b64decode(m.content)))
            q.delete_message(m)


def key(record: dict) -> str:
    return json.dumps(record, sort_keys=True)


@pytest.fixture
def cli(app_env, tmp_path, capsys):
    def run(*args: str, env: dict | None = None):
        code = main(list(args), env=env or app_env, cwd=tmp_path)
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_awkward_records_read_page_export_verify_and_reimport_without_an_error(
        functions, app_env, storage_connection, cli, tmp_path):
    service = service_for(os.environ)
    records = awkward(service)
    assert len(records[-1]["blob"]) > 900_000  # near Azure's 1 MiB entity limit
    for record in records:
        resp, body = call(functions, "post_records", "POST", body=json.dumps(record).encode(), headers=JSON)
        assert resp.status_code == 202, body
    resp, body = call(functions, "post_records", "POST", headers=JSON,
                      body=json.dumps({"records": records[:-1]}, ensure_ascii=False).encode())
    assert resp.status_code == 202, body  # again, in one bulk request: replaces, same identities
    drain(app_env, storage_connection, functions)

    for record in records:
        for field in ("sku", "category"):
            value = record[field]
            text = value if isinstance(value, str) else json.dumps(value)
            resp, page = call(functions, "get_records", "GET", params={field: text})
            assert resp.status_code == 200, page
            assert [key(r) for r in page["items"] if r["name"] == record["name"]] == [key(record)]
        name = record["name"] if isinstance(record["name"], str) else json.dumps(record["name"])
        resp, page = call(functions, "get_records", "GET",
                          params={"sku": record["sku"] if isinstance(record["sku"], str) else "12",
                                  "row_from": name, "row_to": name})
        assert [key(r) for r in page["items"]] == [key(record)]

    paged, token = [], None
    while True:
        params = {"category": "awk", "limit": "1", **({"continuation": token} if token else {})}
        resp, page = call(functions, "get_records", "GET", params=params)
        assert resp.status_code == 200, page
        paged += page["items"]
        token = page["continuation"]
        if token is None:
            break
    assert sorted(map(key, paged)) == sorted(key(r) for r in records if r["category"] != True)  # noqa: E712

    out = tmp_path / "export.jsonl"
    code, _, err = cli("export", "--out", str(out))
    assert code == 0, err
    lines = out.read_bytes().split(b"\n")[:-1]
    assert len(lines) == len(records)
    assert sorted(key(codec.parse_json(line, max_depth=codec.MAX_DEPTH)) for line in lines) == \
        sorted(map(key, records))

    code, report, err = cli("verify", "--json")
    assert code == 0 and json.loads(report)["drift"] == 0, (report, err)

    fresh = dict(app_env, CATALOG_TABLE=unique_name("t"))
    code, report, err = cli("import", str(out), "--apply", "--json", env=fresh)
    assert code == 0 and json.loads(report)["rejected"] == 0, (report, err)
    again = tmp_path / "again.jsonl"
    assert cli("export", "--out", str(again), env=fresh)[0] == 0
    assert sorted(again.read_bytes().split(b"\n")) == sorted(out.read_bytes().split(b"\n"))
    assert cli("verify", env=fresh)[0] == 0
