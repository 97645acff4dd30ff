"""Load a Python v2 function app and describe its functions; call them as the worker does.

The dev host never reimplements a function: it imports the app module, reads what the
decorators registered (``app.get_functions()``, once per app instance) and calls each
``get_user_function()`` with the arguments the Python worker would pass: the trigger value under
the trigger's ``arg_name``, a ``func.Out`` per output binding, and ``context`` when the function
declares it. ``async def`` functions run on one event loop shared by all invocations (as in the
worker); plain functions run in the calling thread.
"""
from __future__ import annotations

import asyncio
import importlib.util
import inspect
import logging
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func

log = logging.getLogger("devhost")

HTTP_TRIGGER, QUEUE_TRIGGER, TIMER_TRIGGER = "httpTrigger", "queueTrigger", "timerTrigger"
SUPPORTED_TRIGGERS = (HTTP_TRIGGER, QUEUE_TRIGGER, TIMER_TRIGGER)


class AppLoadError(RuntimeError):
    """The app module cannot be found, imported or indexed."""


# ----------------------------------------------------------------------------- locating the app

@dataclass(frozen=True)
class AppLocation:
    """Where the app lives, known before it is imported (settings must be applied first)."""

    module_name: str
    file: Path
    attr: str | None
    app_dir: Path


def locate_app(app: str | Path = "function_app", cwd: Path | None = None) -> AppLocation:
    """Find the app module without importing it.

    ``app`` is a module name (``function_app``, ``pkg.mod``), a file (``path/to/function_app.py``)
    or a directory holding function_app.py; ``:attr`` picks the FunctionApp object by name.
    The app directory (for host.json and local.settings.json) is the module file's directory.
    """
    cwd = Path.cwd() if cwd is None else Path(cwd)
    text, attr = str(app), None
    head, sep, tail = text.rpartition(":")
    if sep and tail.isidentifier() and not (len(head) == 1 and head.isalpha()):
        text, attr = head, tail
    path = Path(text)
    if not path.is_absolute():
        path = cwd / path
    if path.is_dir():
        path = path / "function_app.py"
    if text.endswith(".py") or path.suffix == ".py" or "/" in text or path.exists():
        if not path.is_file():
            raise AppLoadError(f"app file {path} does not exist")
        return AppLocation(path.stem, path.resolve(), attr, path.resolve().parent)
    # A dotted module name, looked up from the current directory like the worker's script root.
    candidate = cwd / (text.replace(".", "/") + ".py")
    if candidate.is_file():
        return AppLocation(text, candidate.resolve(), attr, candidate.resolve().parent)
    if str(cwd) not in sys.path:
        sys.path.insert(0, str(cwd))
    try:
        spec = importlib.util.find_spec(text)
    except (ImportError, ValueError) as e:
        raise AppLoadError(f"cannot find app module {text!r}: {e}") from e
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise AppLoadError(
            f"cannot find app module {text!r} from {cwd} (pass --app path/to/function_app.py)")
    file = Path(spec.origin).resolve()
    return AppLocation(text, file, attr, file.parent)


def import_app(loc: AppLocation) -> tuple[ModuleType, func.FunctionRegister]:
    """Execute the app module afresh (a new FunctionApp per host start) and return its app."""
    if str(loc.app_dir) not in sys.path:
        sys.path.insert(0, str(loc.app_dir))  # the worker puts the script root on sys.path
    spec = importlib.util.spec_from_file_location(loc.module_name, loc.file)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot load {loc.file}")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(loc.module_name)
    sys.modules[loc.module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        if previous is not None:
            sys.modules[loc.module_name] = previous
        else:
            sys.modules.pop(loc.module_name, None)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise AppLoadError(f"importing {loc.file} failed: {type(e).__name__}: {e}") from e
    return module, find_app(module, loc.attr)


def find_app(module: ModuleType, attr: str | None = None) -> func.FunctionRegister:
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, func.FunctionRegister):
            raise AppLoadError(f"{module.__name__}.{attr} is not a FunctionApp")
        return app
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    if not apps:
        raise AppLoadError(f"{module.__name__} defines no FunctionApp (azure.functions.FunctionApp)")
    if len(apps) > 1:
        raise AppLoadError(f"{module.__name__} defines {len(apps)} FunctionApp objects; the host allows one")
    return apps[0]


_INDEXED: weakref.WeakKeyDictionary[Any, list[func.Function]] = weakref.WeakKeyDictionary()
_INDEX_LOCK = threading.Lock()


def get_functions(app: func.FunctionRegister) -> list[func.Function]:
    """``app.get_functions()``, cached: a second call on one app raises (duplicate names)."""
    with _INDEX_LOCK:
        if app not in _INDEXED:
            try:
                _INDEXED[app] = app.get_functions()
            except ValueError as e:
                raise AppLoadError(f"indexing the app failed: {e}") from e
        return _INDEXED[app]


# ----------------------------------------------------------------------------- describing functions

def _prop(binding: Any, attr: str, key: str) -> Any:
    value = getattr(binding, attr, None)
    if value is None:
        value = binding.get_dict_repr().get(key)
    return value


def _enum_text(v: Any) -> str:
    return str(getattr(v, "value", v))


@dataclass
class OutputBinding:
    name: str  # the parameter name, or "$return"
    type: str  # "http" or "queue"
    queue_name: str | None = None  # raw, may hold %SETTING%
    connection: str | None = None


@dataclass
class FunctionSpec:
    """One function as the host sees it; ``error`` set means the host will not run it."""

    name: str
    trigger_type: str
    trigger_arg: str
    user_function: Callable[..., Any]
    outputs: list[OutputBinding] = field(default_factory=list)
    wants_context: bool = False
    directory: str = ""
    # httpTrigger
    route: str | None = None
    methods: tuple[str, ...] | None = None  # None: every method
    auth_level: str | None = None
    # queueTrigger
    queue_name: str | None = None
    connection: str | None = None
    # timerTrigger
    schedule: str | None = None
    run_on_startup: bool = False
    use_monitor: bool | None = None
    error: str | None = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)


def describe(fn: func.Function, app_dir: Path) -> FunctionSpec:
    """Read one decorated function's trigger and bindings."""
    trigger = fn.get_trigger()
    user = fn.get_user_function()
    name = fn.get_function_name()
    ttype = str(getattr(trigger, "type", "") or "")
    spec = FunctionSpec(name=name, trigger_type=ttype, trigger_arg=trigger.name,
                        user_function=user, directory=str(app_dir))
    problems: list[str] = []
    if ttype not in SUPPORTED_TRIGGERS:
        problems.append(f"trigger type {ttype!r} is not supported by the dev host "
                        f"(supported: {', '.join(SUPPORTED_TRIGGERS)})")
    if ttype == HTTP_TRIGGER:
        spec.route = _prop(trigger, "route", "route") or name
        methods = _prop(trigger, "methods", "methods")
        spec.methods = tuple(sorted({_enum_text(m).upper() for m in methods})) if methods else None
        level = _prop(trigger, "auth_level", "authLevel")
        spec.auth_level = _enum_text(level).lower() if level is not None else None
    elif ttype == QUEUE_TRIGGER:
        spec.queue_name = _prop(trigger, "queue_name", "queueName")
        spec.connection = _prop(trigger, "connection", "connection") or None
        if not spec.queue_name:
            problems.append("queueTrigger without a queue name")
    elif ttype == TIMER_TRIGGER:
        spec.schedule = _prop(trigger, "schedule", "schedule")
        spec.run_on_startup = bool(_prop(trigger, "run_on_startup", "runOnStartup"))
        spec.use_monitor = _prop(trigger, "use_monitor", "useMonitor")
        if not spec.schedule:
            problems.append("timerTrigger without a schedule")

    names = {trigger.name}
    for b in fn.get_bindings():
        if b is trigger:
            continue
        btype, direction = str(b.type), "out" if b.direction == 1 else "in"
        if btype == "http" and ttype == HTTP_TRIGGER:
            spec.outputs.append(OutputBinding(b.name, "http"))
        elif btype == "queue" and b.direction == 1:  # BindingDirection.OUT
            spec.outputs.append(OutputBinding(b.name, "queue", _prop(b, "queue_name", "queueName"),
                                              _prop(b, "connection", "connection") or None))
        else:
            problems.append(f"binding {b.name!r} of type {btype!r} ({direction}) is not supported "
                            "by the dev host (supported: HTTP output, queue output)")
        names.add(b.name)

    params = inspect.signature(user).parameters
    for pname, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if pname in names:
            continue
        if pname == "context":
            spec.wants_context = True
        elif p.default is inspect.Parameter.empty:
            problems.append(f"parameter {pname!r} has no binding")
    missing = [n for n in names if n != "$return" and n not in params]
    if missing:
        problems.append(f"bindings {sorted(missing)} have no parameter of that name")
    if problems:
        spec.error = "; ".join(problems)
    return spec


# ----------------------------------------------------------------------------- invocation

class _TraceContext:
    def __init__(self) -> None:
        self.trace_parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"
        self.trace_state = ""
        self.attributes: dict[str, str] = {}


class _RetryContext:
    retry_count = 0
    max_retry_count = 0
    exception = None


class InvocationContext(func.Context):
    """``func.Context`` for one invocation."""

    def __init__(self, function_name: str, function_directory: str, invocation_id: str) -> None:
        self._name, self._dir, self._id = function_name, function_directory, invocation_id
        self._trace, self._retry = _TraceContext(), _RetryContext()
        self._tls = threading.local()
        self._tls.invocation_id = invocation_id

    @property
    def invocation_id(self) -> str:
        return self._id

    @property
    def function_name(self) -> str:
        return self._name

    @property
    def function_directory(self) -> str:
        return self._dir

    @property
    def trace_context(self):
        return self._trace

    @property
    def retry_context(self):
        return self._retry

    @property
    def thread_local_storage(self):
        return self._tls


class Out(func.Out):
    """The value a function sets on an output binding."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


@dataclass
class Invocation:
    """What a call produced: the return value and the values set on output bindings."""

    id: str
    result: Any
    outputs: dict[str, Any]
    duration_ms: float


class Invoker:
    """Calls user functions; owns the event loop that ``async def`` functions run on."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                ready = threading.Event()

                def run() -> None:
                    self._loop = asyncio.new_event_loop()
                    asyncio.set_event_loop(self._loop)
                    ready.set()
                    self._loop.run_forever()

                self._thread = threading.Thread(target=run, name="devhost-asyncio", daemon=True)
                self._thread.start()
                ready.wait()
            assert self._loop is not None
            return self._loop

    def call(self, spec: FunctionSpec, trigger_value: Any) -> Invocation:
        """Call the function; exceptions from the function propagate unchanged."""
        invocation_id = str(uuid.uuid4())
        kwargs: dict[str, Any] = {spec.trigger_arg: trigger_value}
        outs: dict[str, Out] = {}
        for o in spec.outputs:
            if o.name != "$return":
                outs[o.name] = kwargs[o.name] = Out()
        if spec.wants_context:
            kwargs["context"] = InvocationContext(spec.name, spec.directory, invocation_id)
        started = time.perf_counter()
        if spec.is_async:
            fut: Future = asyncio.run_coroutine_threadsafe(
                spec.user_function(**kwargs), self._ensure_loop())
            result = fut.result()
        else:
            result = spec.user_function(**kwargs)
        duration = (time.perf_counter() - started) * 1000
        return Invocation(invocation_id, result, {k: v.get() for k, v in outs.items()}, duration)

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            loop.close()
