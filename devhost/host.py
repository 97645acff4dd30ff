"""DevHost: hosts every function of a FunctionApp locally (HTTP, queue and timer triggers).

Start-up order follows the Functions host: app settings (local.settings.json ``Values``,
overridden by the environment) are applied to ``os.environ``, then the app module is imported
and indexed, binding expressions are resolved, and only then do the HTTP server, the queue
pollers and the timers start. A function the host would refuse (reserved route, unsupported
binding, duplicate route) is reported and skipped, the others still run; a missing setting or
a bad host.json stops the start with an error naming it.

Typical use::

    with DevHost("function_app.py", port=0, settings={"AzureWebJobsStorage": conn}) as host:
        requests.get(host.url("health"))
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func

from catalog.settings import is_queue_name
from devhost.functions import (
    HTTP_TRIGGER,
    QUEUE_TRIGGER,
    TIMER_TRIGGER,
    FunctionSpec,
    Invoker,
    describe,
    get_functions,
    import_app,
    locate_app,
)
from devhost.httpserver import Dispatcher, HttpRoute, HttpServer, Router
from devhost.queues import QueueListener, client_options, encode_body, ensure_queue
from devhost.routes import RouteTemplate, RouteTemplateError, is_reserved
from devhost.schedule import ScheduleError, parse_schedule
from devhost.settings import (
    HostConfig,
    HostConfigError,
    StorageConnection,
    apply_settings,
    load_host_json,
    load_local_settings,
    resolve,
    restore_settings,
    storage_connection,
)
from devhost.timers import TimerRunner

log = logging.getLogger("devhost")

DEFAULT_PORT = 7071


class DevHost:
    """A local Functions host for one app.

    :param app: module name (``function_app``), file (``path/function_app.py``), directory, with an
        optional ``:attr``; or an already-built ``func.FunctionApp`` (then ``app_dir`` says where
        host.json and local.settings.json are; default: the current directory).
    :param settings: app settings applied on top of local.settings.json and the environment
        (restored when the host stops).
    :param settings_file: local.settings.json path (default: in the app directory; missing is fine).
    :param host_json: host.json path (default: in the app directory; missing means defaults).
    :param port: HTTP port; 0 picks a free one; None uses local.settings.json Host.LocalHttpPort or 7071.
    :param queues/timers: False leaves those triggers unstarted (their functions are still listed).
    :param max_polling_interval: seconds; overrides host.json maxPollingInterval for local runs.
    """

    def __init__(self, app: str | Path | func.FunctionRegister = "function_app", *,
                 app_dir: str | Path | None = None, settings: Mapping[str, str] | None = None,
                 settings_file: str | Path | None = None, host_json: str | Path | None = None,
                 host: str = "127.0.0.1", port: int | None = DEFAULT_PORT,
                 queues: bool = True, timers: bool = True,
                 max_polling_interval: float | None = None) -> None:
        self._app_arg = app
        self._app_dir_arg = Path(app_dir) if app_dir is not None else None
        self._settings_override = dict(settings or {})
        self._settings_file = Path(settings_file) if settings_file is not None else None
        self._host_json = Path(host_json) if host_json is not None else None
        self.bind_host = host
        self._port_arg = port
        self.enable_queues = queues
        self.enable_timers = timers
        self.max_polling_interval = max_polling_interval

        self.app: func.FunctionRegister | None = None
        self.module: ModuleType | None = None
        self.app_dir: Path | None = None
        self.config = HostConfig()
        self.functions: list[FunctionSpec] = []
        self.errors: dict[str, str] = {}
        self.listeners: list[QueueListener] = []
        self.timers: list[TimerRunner] = []
        self._server: HttpServer | None = None
        self._invoker = Invoker()
        self._previous_env: dict[str, str | None] = {}
        self.requested_port: int | None = port
        self._stopped = threading.Event()
        self._started = False
        self.triggers: dict[str, str] = {}  # function name -> resolved route/queue/schedule
        self._out_clients: dict[tuple[str, str], Any] = {}
        self._out_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> DevHost:
        if self._started:
            raise RuntimeError("DevHost.start() was already called")
        self._started = True
        try:
            self._load()
            self._start_triggers()
        except BaseException:
            self._teardown()
            raise
        return self

    def _load(self) -> None:
        if isinstance(self._app_arg, func.FunctionRegister):
            loc = None
            self.app_dir = (self._app_dir_arg or Path.cwd()).resolve()
        else:
            loc = locate_app(self._app_arg)
            self.app_dir = (self._app_dir_arg or loc.app_dir).resolve()
        settings_file = self._settings_file or self.app_dir / "local.settings.json"
        values, host_section = load_local_settings(settings_file)
        self._previous_env = apply_settings(values, self._settings_override)
        self.config = load_host_json(self._host_json or self.app_dir / "host.json")
        port = self._port_arg
        if port is None:
            port = int(host_section.get("LocalHttpPort") or DEFAULT_PORT)
        self.requested_port = port
        if loc is not None:
            self.module, self.app = import_app(loc)
        else:
            self.app = self._app_arg  # type: ignore[assignment]
        self.functions = [describe(fn, self.app_dir) for fn in get_functions(self.app)]

    def _start_triggers(self) -> None:
        routes: list[HttpRoute] = []
        listeners: list[tuple[FunctionSpec, str, StorageConnection]] = []
        timers: list[tuple[FunctionSpec, Any]] = []
        for spec in self.functions:
            if spec.error:
                self._fail(spec, spec.error)
                continue
            what = f"function {spec.name}"
            if spec.trigger_type == HTTP_TRIGGER:
                route = self._http_route(spec, routes)
                if route is not None:
                    routes.append(route)
                    self.triggers[spec.name] = route.template.text
            elif spec.trigger_type == QUEUE_TRIGGER:
                queue = resolve(spec.queue_name or "", what=what).strip()
                _check_queue_name(queue, what)
                self.triggers[spec.name] = queue
                listeners.append((spec, queue, storage_connection(spec.connection, what=what)))
            elif spec.trigger_type == TIMER_TRIGGER:
                expr = resolve(spec.schedule or "", what=what)
                self.triggers[spec.name] = expr
                try:
                    timers.append((spec, parse_schedule(expr)))
                except ScheduleError as e:
                    raise HostConfigError(f"{what}: invalid schedule: {e}") from e
            for out in spec.outputs:
                if out.type == "queue":
                    _check_queue_name(resolve(out.queue_name or "", what=what), what)
                    storage_connection(out.connection, what=what)

        router = Router(routes, self.config.route_prefix)
        self._server = HttpServer((self.bind_host, self.requested_port), Dispatcher(router, self._call_http))
        self._server.start()
        if self.enable_queues:
            for spec, queue, conn in listeners:
                listener = QueueListener(spec.name, queue, conn, self.config.queues,
                                         self._queue_runner(spec), self.max_polling_interval)
                self.listeners.append(listener.start())
        if self.enable_timers:
            for spec, schedule in timers:
                self.timers.append(TimerRunner(spec.name, schedule, spec.run_on_startup,
                                               self._timer_runner(spec)).start())
        log.info("devhost listening on %s (%d functions)", self.base_url, len(self.functions))

    def _http_route(self, spec: FunctionSpec, existing: list[HttpRoute]) -> HttpRoute | None:
        route_text = resolve(spec.route or spec.name, what=f"function {spec.name}")
        if is_reserved(route_text):
            self._fail(spec, f"route {route_text!r}: The specified route conflicts with one or more "
                             "built in routes (the Functions host reserves routes starting with 'admin')")
            return None
        try:
            template = RouteTemplate(route_text)
        except RouteTemplateError as e:
            self._fail(spec, str(e))
            return None
        methods = frozenset(spec.methods) if spec.methods else None
        for other in existing:
            overlap = methods is None or other.methods is None or methods & other.methods
            if overlap and template.same_as(other.template):
                self._fail(spec, f"The route specified conflicts with the route defined by function "
                                 f"'{other.spec.name}'")
                return None
        return HttpRoute(spec, template, methods)

    def _fail(self, spec: FunctionSpec, why: str) -> None:
        self.errors[spec.name] = why
        log.error("function %s is in error and will not run: %s", spec.name, why)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server, the pollers (waiting for messages in flight) and the timers."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._teardown(timeout)

    def _teardown(self, timeout: float = 30.0) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        # Stop all pollers first so none fetches more while another drains.
        for listener in self.listeners:
            listener.request_stop()
        for listener in self.listeners:
            listener.stop(timeout)
        for timer in self.timers:
            timer.stop(timeout)
        self._invoker.close()
        restore_settings(self._previous_env)
        self._previous_env = {}

    def __enter__(self) -> DevHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the host is not started")
        return self._server.port

    @property
    def base_url(self) -> str:
        """``http://host:port`` (without the route prefix)."""
        host = self.bind_host if self.bind_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        """``http://host:port/api`` (the route prefix from host.json)."""
        prefix = self.config.route_prefix
        return f"{self.base_url}/{prefix}" if prefix else self.base_url

    def url(self, route: str = "") -> str:
        """The URL of a route, e.g. ``url("operations/42")``."""
        return f"{self.api_url}/{route.lstrip('/')}"

    def describe(self) -> str:
        """The function list, as ``func start`` prints it."""
        lines = ["Functions:", ""]
        for spec in self.functions:
            if spec.name in self.errors:
                lines.append(f"        {spec.name}: [error] {self.errors[spec.name]}")
            elif spec.trigger_type == HTTP_TRIGGER:
                methods = ",".join(spec.methods) if spec.methods else "ALL"
                lines.append(f"        {spec.name}: [{methods}] {self.url(self.triggers.get(spec.name, ''))}")
            else:
                detail = ""
                if spec.trigger_type == QUEUE_TRIGGER:
                    detail = f" ({self.triggers.get(spec.name, '')}"
                    detail += ")" if self.enable_queues else ", not polled: --no-queues)"
                elif spec.trigger_type == TIMER_TRIGGER:
                    detail = f" ({self.triggers.get(spec.name, '')}"
                    detail += ")" if self.enable_timers else ", not scheduled: --no-timers)"
                lines.append(f"        {spec.name}: {spec.trigger_type}{detail}")
            lines.append("")
        return "\n".join(lines)

    # ------------------------------------------------------------------ invocation

    def invoke(self, spec: FunctionSpec, trigger_value: Any) -> Any:
        """Call a function as the host does (outputs sent after success); returns its result."""
        inv = self._invoker.call(spec, trigger_value)
        for out in spec.outputs:
            if out.type == "queue":
                value = inv.result if out.name == "$return" else inv.outputs.get(out.name)
                if value is not None:
                    self._send_queue_output(spec, out, value)
        return inv

    def _call_http(self, spec: FunctionSpec, request: func.HttpRequest) -> Any:
        inv = self.invoke(spec, request)
        for out in spec.outputs:  # an HTTP output bound to a parameter instead of $return
            if out.type == "http" and out.name != "$return":
                return inv.outputs.get(out.name)
        return inv.result

    def _run_trigger(self, spec: FunctionSpec, value: Any, reason: str) -> bool:
        started = time.perf_counter()
        try:
            inv = self.invoke(spec, value)
        except Exception as e:
            ms = (time.perf_counter() - started) * 1000
            log.error("Executed 'Functions.%s' (Failed, %s, Duration=%.0fms): %s: %s\n%s", spec.name,
                      reason, ms, type(e).__name__, e, traceback.format_exc())
            return False
        log.info("Executed 'Functions.%s' (Succeeded, %s, Id=%s, Duration=%.0fms)",
                 spec.name, reason, inv.id, inv.duration_ms)
        return True

    def _queue_runner(self, spec: FunctionSpec):
        def run(message) -> bool:
            return self._run_trigger(
                spec, message, f"New queue message detected on '{self.triggers.get(spec.name)}', "
                               f"message {message.id}, dequeue count {message.dequeue_count}")
        return run

    def _timer_runner(self, spec: FunctionSpec):
        def run(request) -> bool:
            reason = "Timer fired" + (" (past due)" if request.past_due else "")
            return self._run_trigger(spec, request, reason)
        return run

    def _send_queue_output(self, spec: FunctionSpec, out, value: Any) -> None:
        queue = resolve(out.queue_name or "", what=f"function {spec.name}")
        conn = storage_connection(out.connection, what=f"function {spec.name}")
        key = (conn.setting, queue)
        with self._out_lock:
            client = self._out_clients.get(key)
            if client is None:
                client = conn.queue_client(queue, **client_options())
                ensure_queue(client)
                self._out_clients[key] = client
        items = value if isinstance(value, (list, tuple)) else [value]
        encoding = self.config.queues.message_encoding
        for item in items:
            if isinstance(item, func.QueueMessage):
                item = item.get_body()
            elif not isinstance(item, (str, bytes, bytearray)):
                raise TypeError(f"queue output {out.name!r}: cannot send a {type(item).__name__}")
            client.send_message(encode_body(item, encoding))
        for listener in self.listeners:
            if listener.queue_name == queue:
                listener.notify()


def _check_queue_name(name: str, what: str) -> None:
    if not is_queue_name(name):
        raise HostConfigError(
            f"{what}: {name!r} is not a valid queue name (3-63 lowercase letters, digits and single hyphens)")
