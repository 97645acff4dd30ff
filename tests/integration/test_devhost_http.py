"""The dev host's HTTP trigger over real HTTP: routes, methods, headers, bodies, errors."""
from __future__ import annotations

import json
import logging

import pytest
import requests

from devhost import DevHost
from tests.integration.conftest import NEVER, TOY_APP, toy_queue_name


@pytest.fixture(scope="module")
def host(storage_connection, tmp_path_factory):
    d = tmp_path_factory.mktemp("http-host")
    (d / "host.json").write_text(json.dumps({"version": "2.0"}))
    settings = {"AzureWebJobsStorage": storage_connection, "TOY_QUEUE": toy_queue_name(),
                "TOY_TIMER_SCHEDULE": NEVER}
    h = DevHost(TOY_APP, port=0, host_json=d / "host.json", settings=settings,
                settings_file=d / "none.json", queues=False, timers=False).start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def http():
    with requests.Session() as s:  # keep-alive: many requests over one connection
        yield s


def test_route_parameter_and_query(host, http):
    r = http.get(host.url("hello/Ada"), params={"greeting": "Hi"})
    assert (r.status_code, r.text) == (200, "Hi, Ada!")
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_request_is_passed_through(host, http):
    r = http.post(host.url("echo/a/b%20c") + "?x=1&x=2&empty=", data=b'{"k": "v"}',
                  headers={"X-Custom": "yes", "Content-Type": "application/json"})
    assert r.status_code == 200
    doc = r.json()
    assert doc["method"] == "POST"
    assert doc["url"] == host.url("echo/a/b%20c") + "?x=1&x=2&empty="
    assert doc["route_params"] == {"rest": "a/b c"}
    assert doc["params"] == {"x": "1,2", "empty": ""}
    assert doc["headers"]["x-custom"] == "yes" and doc["headers"]["content-type"] == "application/json"
    assert doc["body"] == '{"k": "v"}'


def test_chunked_request_body(host, http):
    r = http.put(host.url("echo"), data=(part for part in [b"chunk-1,", b"chunk-2"]))
    assert r.json()["body"] == "chunk-1,chunk-2" and r.json()["route_params"] == {}


def test_route_precedence_and_constraints(host, http):
    assert http.get(host.url("items/new")).json() == {"route": "literal"}
    assert http.get(host.url("items/42")).json() == {"route": "int", "id": 42}
    assert http.get(host.url("items/forty-two")).json() == {"route": "slug", "slug": "forty-two", "method": "GET"}
    assert http.delete(host.url("items/42")).json()["route"] == "slug"


def test_optional_parameter_on_an_async_function(host, http):
    assert http.get(host.url("optional")).text == "<none>"
    assert http.get(host.url("optional/given")).text == "given"


def test_context_parameter(host, http):
    doc = http.get(host.url("whoami")).json()
    assert doc["function"] == "whoami" and len(doc["invocation"]) == 36


def test_response_status_headers_and_repeated_values(host, http):
    r = http.post(host.url("created"), json={"a": [1, 2]})
    assert r.status_code == 201
    assert r.json() == {"a": [1, 2]}
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Location"] == "/api/created/1"
    assert r.raw.headers.getlist("X-Multi") == ["one", "two"]
    assert r.raw.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert r.headers["Content-Length"] == str(len(r.content))


def test_unknown_route_is_404(host, http):
    for url in (host.url("no/such/route"), host.base_url + "/hello/Ada", host.base_url + "/apihello"):
        r = http.get(url)
        assert r.status_code == 404, url
        assert r.headers["Content-Type"] == "application/problem+json"


def test_wrong_method_is_405_with_allow(host, http):
    r = http.post(host.url("hello/Ada"))
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET"
    assert r.json()["status"] == 405
    assert http.get(host.url("echo/x")).headers["Allow"] == "POST, PUT"


def test_exception_is_500_problem_and_logged(host, http, caplog):
    with caplog.at_level(logging.ERROR, logger="devhost"):
        r = http.get(host.url("boom"))
    assert r.status_code == 500
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["detail"] == "Exception while executing function: Functions.boom: RuntimeError"
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "Functions.boom" in logged and "RuntimeError: the toy exploded" in logged and "Traceback" in logged
    assert http.get(host.url("hello/again")).status_code == 200  # the host keeps serving


def test_reserved_admin_route_is_refused_like_the_host(host, http):
    assert "built in routes" in host.errors["reserved_route"]
    assert http.post(host.url("admin/recover")).status_code == 404
    assert "reserved_route: [error]" in host.describe()


def test_host_status_endpoint(host, http):
    r = http.get(host.base_url + "/admin/host/status")
    assert r.status_code == 200 and r.json()["state"] == "Running"


def test_function_list(host):
    text = host.describe()
    assert f"hello: [GET] {host.base_url}/api/hello/{{name}}" in text
    assert "boom: [ALL]" in text
    assert "consume: queueTrigger (toy-" in text and "not polled" in text


def test_route_prefix_from_host_json(storage_connection, tmp_path):
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": "v1"}}}))
    settings = {"AzureWebJobsStorage": storage_connection, "TOY_QUEUE": toy_queue_name(), "TOY_TIMER_SCHEDULE": NEVER}
    with DevHost(TOY_APP, port=0, host_json=tmp_path / "host.json", settings=settings,
                 settings_file=tmp_path / "none.json", queues=False, timers=False) as h:
        assert h.url("hello/x") == f"{h.base_url}/v1/hello/x"
        assert requests.get(h.url("hello/x")).text == "Hello, x!"
        assert requests.get(f"{h.base_url}/api/hello/x").status_code == 404
