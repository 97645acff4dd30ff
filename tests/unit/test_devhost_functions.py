"""Loading a FunctionApp, describing its functions and calling them as the Python worker does."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import azure.functions as func
import pytest

from devhost.functions import (
    AppLoadError,
    InvocationContext,
    Invoker,
    describe,
    find_app,
    get_functions,
    import_app,
    locate_app,
)
from devhost.httpserver import to_response

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TOY = FIXTURES / "toy_function_app.py"


def make_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="things/{id}", methods=["GET", "post"], auth_level=func.AuthLevel.ADMIN)
    def get_thing(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(req.route_params["id"])

    @app.route(methods=["GET"])
    def unnamed_route(req: func.HttpRequest, context: func.Context) -> str:
        return context.function_name

    @app.function_name("renamed")
    @app.queue_trigger(arg_name="msg", queue_name="%Q%", connection="Conn")
    @app.queue_output(arg_name="out", queue_name="next", connection="Conn")
    def on_message(msg: func.QueueMessage, out: func.Out[str]) -> None:
        out.set(msg.get_body().decode())

    @app.timer_trigger(schedule="%S%", arg_name="timer", run_on_startup=True, use_monitor=False)
    async def on_timer(timer: func.TimerRequest) -> str:
        await asyncio.sleep(0)
        return "async done"

    @app.route(route="blobby")
    @app.blob_input(arg_name="blob", path="c/b", connection="Conn")
    def with_blob(req: func.HttpRequest, blob: func.InputStream) -> str:
        return "never"

    return app


@pytest.fixture(scope="module")
def specs():
    return {s.name: s for s in (describe(fn, Path("/app")) for fn in get_functions(make_app()))}


def test_http_function(specs):
    s = specs["get_thing"]
    assert (s.trigger_type, s.trigger_arg, s.route, s.methods, s.auth_level) == (
        "httpTrigger", "req", "things/{id}", ("GET", "POST"), "admin")
    assert [(o.name, o.type) for o in s.outputs] == [("$return", "http")]
    assert s.error is None and not s.wants_context


def test_route_defaults_to_function_name_and_auth_level_to_the_apps(specs):
    s = specs["unnamed_route"]
    assert (s.route, s.auth_level, s.wants_context) == ("unnamed_route", "function", True)


def test_queue_function_with_output_and_function_name(specs):
    s = specs["renamed"]
    assert (s.trigger_type, s.queue_name, s.connection) == ("queueTrigger", "%Q%", "Conn")
    assert [(o.name, o.type, o.queue_name, o.connection) for o in s.outputs] == [("out", "queue", "next", "Conn")]


def test_timer_function(specs):
    s = specs["on_timer"]
    assert (s.trigger_type, s.schedule, s.run_on_startup, s.is_async) == ("timerTrigger", "%S%", True, True)


def test_unsupported_binding_puts_the_function_in_error(specs):
    assert "binding 'blob' of type 'blob' (in) is not supported" in specs["with_blob"].error


def test_get_functions_is_cached_per_app():
    app = make_app()
    first = get_functions(app)
    assert get_functions(app) is first  # a second app.get_functions() would raise


def test_invoker_passes_trigger_context_and_outputs(specs):
    inv = Invoker()
    try:
        r = inv.call(specs["get_thing"], func.HttpRequest("GET", "http://x/api/things/7", route_params={"id": "7"},
                                                           body=b""))
        assert r.result.get_body() == b"7"
        r = inv.call(specs["unnamed_route"], func.HttpRequest("GET", "http://x", body=b""))
        assert r.result == "unnamed_route"
        r = inv.call(specs["renamed"], func.QueueMessage(body=b"payload"))
        assert r.outputs == {"out": "payload"}
        r = inv.call(specs["on_timer"], None)
        assert r.result == "async done"
    finally:
        inv.close()


def test_async_functions_share_one_event_loop():
    app = func.FunctionApp()
    loops = []

    @app.route(route="a")
    async def a(req: func.HttpRequest) -> str:
        loops.append((asyncio.get_running_loop(), threading.current_thread().name))
        return "ok"

    (spec,) = [describe(fn, Path(".")) for fn in get_functions(app)]
    inv = Invoker()
    try:
        inv.call(spec, None)
        inv.call(spec, None)
    finally:
        inv.close()
    assert loops[0] == loops[1]


def test_exceptions_propagate():
    app = func.FunctionApp()

    @app.route(route="a")
    def a(req: func.HttpRequest) -> str:
        raise KeyError("x")

    (spec,) = [describe(fn, Path(".")) for fn in get_functions(app)]
    with pytest.raises(KeyError):
        Invoker().call(spec, None)


def test_parameter_without_binding_is_an_error():
    app = func.FunctionApp()

    @app.route(route="a")
    def a(req: func.HttpRequest, extra) -> str:
        return ""

    (spec,) = [describe(fn, Path(".")) for fn in get_functions(app)]
    assert "parameter 'extra' has no binding" in spec.error


def test_context_object():
    ctx = InvocationContext("f", "/dir", "id-1")
    assert isinstance(ctx, func.Context)
    assert (ctx.function_name, ctx.function_directory, ctx.invocation_id) == ("f", "/dir", "id-1")
    assert ctx.thread_local_storage.invocation_id == "id-1"
    assert ctx.trace_context.trace_parent.startswith("00-") and ctx.retry_context.retry_count == 0


def test_locate_app_by_file_directory_and_module(tmp_path):
    assert locate_app(TOY).file == TOY
    assert locate_app(str(TOY) + ":app").attr == "app"
    (tmp_path / "function_app.py").write_text("import azure.functions as func\napp = func.FunctionApp()\n")
    loc = locate_app(tmp_path)
    assert (loc.module_name, loc.app_dir) == ("function_app", tmp_path.resolve())
    assert locate_app("function_app", cwd=tmp_path).file == (tmp_path / "function_app.py").resolve()
    with pytest.raises(AppLoadError, match="does not exist"):
        locate_app(tmp_path / "missing.py")
    with pytest.raises(AppLoadError, match="cannot find app module"):
        locate_app("no_such_module_here", cwd=tmp_path)


def test_import_app_runs_the_module_afresh(tmp_path):
    f = tmp_path / "fresh_app.py"
    f.write_text("import azure.functions as func\napp = func.FunctionApp()\nCOUNT = []\n")
    m1, a1 = import_app(locate_app(f))
    m2, a2 = import_app(locate_app(f))
    assert m1 is not m2 and a1 is not a2


@pytest.mark.parametrize("source, fragment", [
    ("x = 1\n", "defines no FunctionApp"),
    ("import azure.functions as func\na = func.FunctionApp()\nb = func.FunctionApp()\n", "defines 2 FunctionApp"),
    ("raise RuntimeError('broken app')\n", "RuntimeError: broken app"),
])
def test_bad_app_modules(tmp_path, source, fragment):
    f = tmp_path / "bad_app.py"
    f.write_text(source)
    with pytest.raises(AppLoadError, match=fragment):
        import_app(locate_app(f))


def test_find_app_by_attribute(tmp_path):
    f = tmp_path / "two_apps.py"
    f.write_text("import azure.functions as func\na = func.FunctionApp()\nb = func.FunctionApp()\n")
    module, app = import_app(locate_app(f"{f}:b"))
    assert app is module.b
    with pytest.raises(AppLoadError, match="is not a FunctionApp"):
        find_app(module, "nope")


def test_http_response_conversion():
    r = to_response(func.HttpResponse("hi", status_code=201, headers={"X-A": "1"}))
    assert (r.status, r.body) == (201, b"hi")
    assert ("Content-Type", "text/plain; charset=utf-8") in r.headers and ("X-A", "1") in r.headers
    resp = func.HttpResponse(b"{}", mimetype="application/json")
    resp.headers.add("Set-Cookie", "a=1")
    resp.headers.add("Set-Cookie", "b=2")
    r = to_response(resp)
    assert [v for k, v in r.headers if k == "Set-Cookie"] == ["a=1", "b=2"]
    assert ("Content-Type", "application/json") in r.headers
    r = to_response(func.HttpResponse("x", headers={"content-type": "text/csv"}))
    assert [v for k, v in r.headers if k.lower() == "content-type"] == ["text/csv"]
    assert to_response(None).status == 204
    assert to_response("plain").body == b"plain"
    with pytest.raises(TypeError, match="must return func.HttpResponse"):
        to_response({"a": 1})
