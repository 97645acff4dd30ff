"""App settings, host.json and storage connections, resolved the way the Functions host does.

- ``local.settings.json`` ``Values`` are app settings; real environment variables override them
  (as with ``func start``). The merged values are applied to ``os.environ`` *before* the app is
  imported, so the app's own settings code sees them.
- ``%NAME%`` in a binding property is replaced by the app setting NAME; a missing setting is an
  error that names it.
- A binding's ``connection`` names a setting prefix: the setting itself holds a connection string
  (``UseDevelopmentStorage=true`` means Azurite on ports 10000-10002), or ``<name>__queueServiceUri``
  / ``<name>__serviceUri`` / ``<name>__accountName`` select the identity-based form.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catalog.settings import SettingsError as CatalogSettingsError
from catalog.settings import read_local_settings
from devhost.schedule import ScheduleError, parse_timespan

DEFAULT_CONNECTION = "AzureWebJobsStorage"
_EXPR = re.compile(r"%([^%]+)%")


class HostConfigError(RuntimeError):
    """A setting, host.json value or binding expression the host cannot use."""


def load_local_settings(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """(Values, Host) from a local.settings.json; empty when the file does not exist (the catalog's
    reader, so the CLI and the dev host read the file alike)."""
    try:
        return read_local_settings(path)
    except CatalogSettingsError as e:
        raise HostConfigError(str(e)) from None


def apply_settings(local_values: Mapping[str, str], overrides: Mapping[str, str] | None = None,
                   environ: os._Environ | dict | None = None) -> dict[str, str | None]:
    """Apply settings to the environment: env beats local.settings.json; ``overrides`` beat both.

    Returns the previous values of every key it changed (None = was unset), for ``restore_settings``.
    """
    env = os.environ if environ is None else environ
    previous: dict[str, str | None] = {}
    for k, v in local_values.items():
        if k not in env:
            previous[k] = None
            env[k] = v
    for k, v in (overrides or {}).items():
        if k not in previous:
            previous[k] = env.get(k)
        env[k] = str(v)
    return previous


def restore_settings(previous: Mapping[str, str | None], environ: os._Environ | dict | None = None) -> None:
    env = os.environ if environ is None else environ
    for k, v in previous.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v


def resolve(value: str, environ: Mapping[str, str] | None = None, *, what: str = "binding") -> str:
    """Replace every ``%NAME%`` in ``value`` by the app setting NAME."""
    env = os.environ if environ is None else environ

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in env:
            raise HostConfigError(
                f"{what}: '%{name}%' does not resolve to a value: app setting {name} is not set "
                "(add it to local.settings.json Values or the environment)")
        return env[name]

    return _EXPR.sub(sub, value)


# ----------------------------------------------------------------------------- host.json

@dataclass(frozen=True)
class QueueOptions:
    """host.json ``extensions.queues`` with the host's defaults (seconds for durations)."""

    batch_size: int = 16
    new_batch_threshold: int | None = None  # None: batch_size // 2 (the Consumption-plan default)
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @property
    def threshold(self) -> int:
        return self.batch_size // 2 if self.new_batch_threshold is None else self.new_batch_threshold


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)


def _seconds(value: Any, key: str, path: Path) -> float:
    try:
        return parse_timespan(value).total_seconds()
    except ScheduleError as e:
        raise HostConfigError(f"{path}: extensions.queues.{key}: {e}") from e


def _int(value: Any, key: str, path: Path, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().lstrip("-").isdigit():
        raise HostConfigError(f"{path}: extensions.queues.{key} must be an integer, got {value!r}")
    v = int(value)
    if v < low or (high is not None and v > high):
        bound = f"{low}-{high}" if high is not None else f">= {low}"
        raise HostConfigError(f"{path}: extensions.queues.{key} must be {bound}, got {v}")
    return v


def load_host_json(path: Path) -> HostConfig:
    """Read host.json (missing file: the host's defaults)."""
    path = Path(path)
    if not path.exists():
        return HostConfig()
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        raise HostConfigError(f"{path}: cannot read it as JSON: {e}") from e
    ext = (doc or {}).get("extensions") or {}
    http = ext.get("http") or {}
    prefix = http.get("routePrefix", "api")
    if not isinstance(prefix, str):
        raise HostConfigError(f"{path}: extensions.http.routePrefix must be a string")
    q = ext.get("queues") or {}
    d = QueueOptions()
    opts = QueueOptions(
        batch_size=_int(q["batchSize"], "batchSize", path, 1, 32) if "batchSize" in q else d.batch_size,
        new_batch_threshold=(_int(q["newBatchThreshold"], "newBatchThreshold", path, 0)
                             if "newBatchThreshold" in q else None),
        visibility_timeout=(_seconds(q["visibilityTimeout"], "visibilityTimeout", path)
                            if "visibilityTimeout" in q else d.visibility_timeout),
        max_polling_interval=(_seconds(q["maxPollingInterval"], "maxPollingInterval", path)
                              if "maxPollingInterval" in q else d.max_polling_interval),
        max_dequeue_count=(_int(q["maxDequeueCount"], "maxDequeueCount", path, 1)
                           if "maxDequeueCount" in q else d.max_dequeue_count),
        message_encoding=str(q.get("messageEncoding", d.message_encoding)).lower(),
    )
    if opts.message_encoding not in ("base64", "none"):
        raise HostConfigError(f"{path}: extensions.queues.messageEncoding must be base64 or none")
    if opts.visibility_timeout < 0:
        raise HostConfigError(f"{path}: extensions.queues.visibilityTimeout must not be negative")
    if opts.max_polling_interval < 0.1:
        raise HostConfigError(f"{path}: extensions.queues.maxPollingInterval must be at least 00:00:00.100")
    return HostConfig(route_prefix=prefix.strip("/"), queues=opts)


# ----------------------------------------------------------------------------- connections

@dataclass(frozen=True)
class StorageConnection:
    """Where a binding's storage lives: a connection string, or an account URL plus identity."""

    setting: str
    connection_string: str | None = None
    queue_service_url: str | None = None
    client_id: str | None = None
    use_managed_identity: bool = False

    def queue_client(self, queue_name: str, **kwargs: Any):
        from catalog.adapters.azure import queue_client

        # No message encode/decode policy: the host reads raw text and applies messageEncoding
        # itself, and a poison copy must carry the original bytes unchanged. The transport is the
        # catalog's: proxy and CA settings read once, requests sent without requests' Session
        # machinery, so polling and deleting cost this process little CPU (in Azure the Functions
        # host does them, outside the Python worker).
        if self.connection_string is not None:
            return queue_client(queue_name, connection_string=self.connection_string, **kwargs)
        return queue_client(queue_name, url=self.queue_service_url, credential=self._credential(), **kwargs)

    def _credential(self):
        from catalog.adapters.azure import identity_credential

        return identity_credential(self.use_managed_identity, self.client_id)


def storage_connection(name: str | None, environ: Mapping[str, str] | None = None,
                       *, what: str = "binding") -> StorageConnection:
    """Resolve a binding's ``connection`` (default AzureWebJobsStorage) from the app settings."""
    env = os.environ if environ is None else environ
    setting = resolve(name, env, what=what) if name else DEFAULT_CONNECTION
    for key in (setting, f"AzureWebJobs{setting}"):
        value = env.get(key)
        if value:
            return StorageConnection(setting, connection_string=value)
    url = env.get(f"{setting}__queueServiceUri") or env.get(f"{setting}__serviceUri")
    account = env.get(f"{setting}__accountName")
    if not url and account:
        url = f"https://{account}.queue.core.windows.net"
    if url:
        return StorageConnection(
            setting, queue_service_url=url, client_id=env.get(f"{setting}__clientId"),
            use_managed_identity=env.get(f"{setting}__credential", "").lower() == "managedidentity")
    if setting in env:
        raise HostConfigError(f"{what}: connection setting {setting} is empty")
    raise HostConfigError(
        f"{what}: connection setting {setting} is not set (neither {setting} nor "
        f"{setting}__queueServiceUri / __serviceUri / __accountName)")
