"""Settings: parsed once from the environment into frozen values, with errors naming the setting
(docs/architecture.md §11 lists them)."""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from .errors import SettingsError

# Every app setting the code reads. The deploy templates and local.settings.json.example set the
# same names (tests/unit/test_infra.py keeps them in step).
STORAGE_SETTING = "AzureWebJobsStorage"
CATALOG_STORAGE = "CATALOG_STORAGE"
IDENTITY_SUFFIXES = ("tableServiceUri", "queueServiceUri", "blobServiceUri", "credential", "clientId")
APP_SETTINGS = (
    STORAGE_SETTING,
    CATALOG_STORAGE,
    "CATALOG_TABLE",
    "CATALOG_WAL_TABLE",
    "CATALOG_QUEUE",
    "CATALOG_INDEX_KEYS",
    "CATALOG_ROW_KEY",
    "CATALOG_CASE_SENSITIVE",
    "CATALOG_SWEEP_SCHEDULE",
    "CATALOG_APPLY_CONCURRENCY",
    "CATALOG_SETTLE_SECONDS",
)
# The seed library's names, still honoured by the library API.
SEED_SETTINGS = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "TABLE_CATALOG_NAME",
    "TABLE_CATALOG_WAL_NAME",
    "TABLE_CATALOG_INDEX_KEYS",
    "TABLE_CATALOG_ROW_KEY",
)

DEFAULT_TABLE = "catalog"
DEFAULT_SWEEP_SCHEDULE = "0 */1 * * * *"
DEFAULT_APPLY_CONCURRENCY = 32  # the storage client's connection pool holds 32
MAX_APPLY_CONCURRENCY = 256

# -- how late a WAL write can land, and the settle window that follows from it (docs §5) --------
# One WAL write (an insert or an entity-group transaction) is bounded by the service and the client:
SERVER_TIMEOUT = 10  # s, sent with every WAL write: the service abandons the request after this
CONNECT_TIMEOUT = 5  # s, to open the connection (CLIENT_OPTIONS)
WAL_WRITE_ATTEMPTS = 2  # a WAL write is sent at most twice (one retry, after at most 1 s of back-off)
WAL_READ_TIMEOUT = 12  # s, the client waits this long for an answer (longer than SERVER_TIMEOUT)
# An attempt has landed, or never will, CONNECT_TIMEOUT + SERVER_TIMEOUT after it starts; the
# second starts at most CONNECT_TIMEOUT + WAL_READ_TIMEOUT + 1 s after the first. So a write lands
# within WRITE_BOUND of its start or not at all:
WRITE_BOUND = (WAL_WRITE_ATTEMPTS - 1) * (CONNECT_TIMEOUT + WAL_READ_TIMEOUT + 1) + CONNECT_TIMEOUT + SERVER_TIMEOUT
# An append starts a write only while its stamp is younger than WRITE_DEADLINE - WRITE_BOUND (12 s;
# a 1,000-record request takes well under one), so every WAL row lands within WRITE_DEADLINE of
# the time in its stamp, or the request fails.
WRITE_DEADLINE = 45
CLOCK_SKEW = 5  # s, between any two instances' clocks (Azure's hosts keep NTP time; 5 s is a margin)
# Entries stamped before now - settle window can no longer appear: the sweep and the change feed
# trust the WAL up to there. The smallest safe window is the deadline plus the skew.
DEFAULT_SETTLE_SECONDS = WRITE_DEADLINE + CLOCK_SKEW
MAX_SETTLE_SECONDS = 3600

_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
_QUEUE_RE = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]$")
POISON_SUFFIX = "-poison"


@dataclass(frozen=True)
class Schema:
    """Which fields a record is indexed by, which field sorts it, and how values match."""

    index_keys: tuple[str, ...]
    row_key: str
    case_sensitive: bool = False

    def __post_init__(self):
        if not self.index_keys:
            raise SettingsError("CATALOG_INDEX_KEYS", "at least one index key is required")
        if len(set(self.index_keys)) != len(self.index_keys):
            raise SettingsError("CATALOG_INDEX_KEYS", f"duplicate index key in {list(self.index_keys)}")
        for name in (*self.index_keys, self.row_key):
            if not isinstance(name, str) or not name:
                raise SettingsError("CATALOG_INDEX_KEYS/CATALOG_ROW_KEY",
                                    f"field names must be non-empty strings, got {name!r}")

    @property
    def key_fields(self) -> tuple[str, ...]:
        """Fields that make up a record's identity: the row key, then the index keys."""
        return (self.row_key, *[k for k in self.index_keys if k != self.row_key])

    def view(self) -> dict:
        return {"index_keys": list(self.index_keys), "row_key": self.row_key, "case_sensitive": self.case_sensitive}

    def to_props(self, prefix: str = "") -> dict[str, Any]:
        """The schema as table entity properties (the WAL's schema lock, an index table's meta)."""
        return {f"{prefix}index_keys": json.dumps(list(self.index_keys)), f"{prefix}row_key": self.row_key,
                f"{prefix}case_sensitive": self.case_sensitive}

    @classmethod
    def from_props(cls, entity: Mapping[str, Any], prefix: str = "") -> Schema:
        return cls(tuple(json.loads(entity[f"{prefix}index_keys"])), entity[f"{prefix}row_key"],
                   bool(entity[f"{prefix}case_sensitive"]))

    def describe(self) -> str:
        return (
            f"index_keys={list(self.index_keys)} row_key={self.row_key!r} "
            f"case_sensitive={str(self.case_sensitive).lower()}"
        )

    @classmethod
    def parse(cls, index_keys: str | list[str] | tuple[str, ...] | None, row_key: str | None,
              case_sensitive: bool | str | None = False, *, names=("CATALOG_INDEX_KEYS", "CATALOG_ROW_KEY")) -> Schema:
        if isinstance(index_keys, str):
            keys = tuple(k.strip() for k in index_keys.split(",") if k.strip())
        else:
            keys = tuple(index_keys or ())
        if not keys:
            raise SettingsError(names[0], "required: comma-separated names of the fields to index by")
        if not row_key or not str(row_key).strip():
            raise SettingsError(names[1], "required: the name of the field records sort by")
        if isinstance(case_sensitive, str) or case_sensitive is None:
            case_sensitive = parse_bool("CATALOG_CASE_SENSITIVE", case_sensitive, False)
        return cls(keys, str(row_key).strip(), bool(case_sensitive))


@dataclass(frozen=True)
class StorageConfig:
    """Where the catalog's tables and queue live: a connection string, or identity-based URIs."""

    setting: str  # the setting (prefix) this came from, for error messages
    connection_string: str | None = None
    table_uri: str | None = None
    queue_uri: str | None = None
    blob_uri: str | None = None
    credential: str | None = None  # "managedidentity" or None (DefaultAzureCredential)
    client_id: str | None = None

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None

    def __repr__(self) -> str:  # never print an account key
        if self.connection_string is not None:
            return f"StorageConfig({self.setting}=<connection string>)"
        return (f"StorageConfig({self.setting}: table={self.table_uri} queue={self.queue_uri} "
                f"credential={self.credential} client_id={self.client_id})")


def parse_storage(env: Mapping[str, str], setting: str) -> StorageConfig | None:
    """The connection-string form `<setting>` or the identity form `<setting>__tableServiceUri` etc."""
    value = (env.get(setting) or "").strip()
    if value:
        return StorageConfig(setting, connection_string=value)
    parts = {s: (env.get(f"{setting}__{s}") or "").strip() or None for s in (*IDENTITY_SUFFIXES, "accountName")}
    if not any(parts.values()):
        return None
    account = parts["accountName"]
    table_uri = parts["tableServiceUri"] or (account and f"https://{account}.table.core.windows.net")
    queue_uri = parts["queueServiceUri"] or (account and f"https://{account}.queue.core.windows.net")
    blob_uri = parts["blobServiceUri"] or (account and f"https://{account}.blob.core.windows.net")
    for name, uri in (("tableServiceUri", table_uri), ("queueServiceUri", queue_uri)):
        if not uri:
            raise SettingsError(f"{setting}__{name}", "required for an identity-based connection "
                                f"(or set {setting}__accountName)")
        if not re.match(r"^https?://", uri):
            raise SettingsError(f"{setting}__{name}", f"must be an http(s) URI, got {uri!r}")
    credential = parts["credential"]
    if credential is not None and credential.lower() != "managedidentity":
        raise SettingsError(f"{setting}__credential", f"only 'managedidentity' is supported, got {credential!r}")
    return StorageConfig(setting, table_uri=table_uri, queue_uri=queue_uri, blob_uri=blob_uri,
                         credential=credential and credential.lower(), client_id=parts["clientId"])


def parse_bool(setting: str, value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise SettingsError(setting, f"expected true or false, got {value!r}")


def parse_int(setting: str, value: str | None, default: int, low: int, high: int) -> int:
    if value is None or value.strip() == "":
        return default
    text = value.strip()
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise SettingsError(setting, f"expected a whole number from {low} to {high}, got {value!r}")
    return int(text)


def check_table_name(setting: str, name: str) -> str:
    if not _TABLE_RE.match(name) or name.lower() == "tables":
        raise SettingsError(setting, f"{name!r} is not a valid table name (letters and digits, "
                            "starting with a letter, 3-63 characters)")
    return name


def is_queue_name(name: str, *, room: int = 0) -> bool:
    """Azure's queue name rule (3-63 lowercase letters, digits, single hyphens), leaving `room`
    characters for a suffix such as POISON_SUFFIX. The one home of the rule (the dev host uses it)."""
    return 3 <= len(name) <= 63 - room and bool(_QUEUE_RE.match(name))


def check_queue_name(setting: str, name: str) -> str:
    if not is_queue_name(name, room=len(POISON_SUFFIX)):
        raise SettingsError(setting, f"{name!r} is not a valid queue name (lowercase letters, digits and "
                            f"single hyphens, 3-{63 - len(POISON_SUFFIX)} characters so that "
                            f"'<queue>{POISON_SUFFIX}' is valid too)")
    return name


def check_schedule(setting: str, value: str) -> str:
    if len(value.split()) != 6:
        raise SettingsError(setting, f"expected an NCRONTAB expression with 6 fields "
                            f"(second minute hour day month weekday), got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    storage: StorageConfig
    schema: Schema
    table: str = DEFAULT_TABLE
    wal_table: str = DEFAULT_TABLE + "wal"
    queue: str = DEFAULT_TABLE + "-wal"
    sweep_schedule: str = DEFAULT_SWEEP_SCHEDULE
    apply_concurrency: int = DEFAULT_APPLY_CONCURRENCY  # index writes in flight per instance, all units
    settle_seconds: int = DEFAULT_SETTLE_SECONDS  # how old a WAL entry must be for the sweep and the feed

    @property
    def settle_window(self) -> timedelta:
        return timedelta(seconds=self.settle_seconds)

    @property
    def poison_queue(self) -> str:
        return self.queue + POISON_SUFFIX

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """The Functions app's settings (docs/architecture.md §11). Raises SettingsError naming the bad setting."""
        storage = parse_storage(env, CATALOG_STORAGE) or parse_storage(env, STORAGE_SETTING)
        if storage is None:
            raise SettingsError(STORAGE_SETTING, f"not set: set {STORAGE_SETTING} (a connection string, "
                                f"UseDevelopmentStorage=true for Azurite, or the identity form "
                                f"{STORAGE_SETTING}__tableServiceUri/__queueServiceUri/__credential/__clientId), "
                                f"or {CATALOG_STORAGE}")
        table = check_table_name("CATALOG_TABLE", (env.get("CATALOG_TABLE") or DEFAULT_TABLE).strip())
        wal = check_table_name("CATALOG_WAL_TABLE", (env.get("CATALOG_WAL_TABLE") or table + "wal").strip())
        queue = check_queue_name("CATALOG_QUEUE", (env.get("CATALOG_QUEUE") or f"{table.lower()}-wal").strip())
        if wal.lower() == table.lower():
            raise SettingsError("CATALOG_WAL_TABLE", "must differ from CATALOG_TABLE")
        schema = Schema.parse(env.get("CATALOG_INDEX_KEYS"), env.get("CATALOG_ROW_KEY"),
                              env.get("CATALOG_CASE_SENSITIVE"))
        schedule = check_schedule("CATALOG_SWEEP_SCHEDULE",
                                  (env.get("CATALOG_SWEEP_SCHEDULE") or DEFAULT_SWEEP_SCHEDULE).strip())
        concurrency = parse_int("CATALOG_APPLY_CONCURRENCY", env.get("CATALOG_APPLY_CONCURRENCY"),
                                DEFAULT_APPLY_CONCURRENCY, 1, MAX_APPLY_CONCURRENCY)
        settle = parse_int("CATALOG_SETTLE_SECONDS", env.get("CATALOG_SETTLE_SECONDS"), DEFAULT_SETTLE_SECONDS, 0,
                           MAX_SETTLE_SECONDS)
        return cls(storage, schema, table, wal, queue, schedule, concurrency, settle)

    @classmethod
    def for_library(cls, env: Mapping[str, str], *, connection_string: str | None = None,
                    table_name: str | None = None, wal_name: str | None = None,
                    index_keys: str | list[str] | None = None, row_key: str | None = None,
                    case_sensitive: bool | None = None) -> Settings:
        """The seed's constructor arguments, then its environment names, then the CATALOG_* names."""
        merged = dict(env)
        seed_map = {
            "AZURE_STORAGE_CONNECTION_STRING": CATALOG_STORAGE,
            "TABLE_CATALOG_NAME": "CATALOG_TABLE",
            "TABLE_CATALOG_WAL_NAME": "CATALOG_WAL_TABLE",
            "TABLE_CATALOG_INDEX_KEYS": "CATALOG_INDEX_KEYS",
            "TABLE_CATALOG_ROW_KEY": "CATALOG_ROW_KEY",
        }
        for seed, ours in seed_map.items():
            if env.get(seed):
                merged[ours] = env[seed]
        explicit = {
            CATALOG_STORAGE: connection_string,
            "CATALOG_TABLE": table_name,
            "CATALOG_WAL_TABLE": wal_name,
        }
        for name, value in explicit.items():
            if value:
                merged[name] = value
        if isinstance(index_keys, (list, tuple)):
            index_keys = ",".join(index_keys)
        if index_keys:
            merged["CATALOG_INDEX_KEYS"] = index_keys
        if row_key:
            merged["CATALOG_ROW_KEY"] = row_key
        if case_sensitive is not None:
            merged["CATALOG_CASE_SENSITIVE"] = "true" if case_sensitive else "false"
        return cls.from_env(merged)


LOCAL_SETTINGS = "local.settings.json"


def read_local_settings(path: str | Path) -> tuple[dict[str, str], dict[str, Any]]:
    """(`Values`, `Host`) of a local.settings.json, values as the Functions host reads them (booleans
    as true/false, nulls left out); both empty when the file does not exist. The one reader of
    that file: the CLI and the dev host both use it."""
    path = Path(path)
    if not path.is_file():
        return {}, {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        raise SettingsError(str(path), f"cannot read it as JSON: {e}") from e
    if not isinstance(data, dict):
        raise SettingsError(str(path), "must hold a JSON object")
    if data.get("IsEncrypted"):
        raise SettingsError(str(path), "IsEncrypted is true; only plain-text settings can be read here")
    raw, host = data.get("Values", {}), data.get("Host", {})
    if not isinstance(raw, dict):
        raise SettingsError(str(path), "'Values' must be an object of setting names to values")
    if not isinstance(host, dict):
        raise SettingsError(str(path), "'Host' must be an object")
    values = {name: ("true" if value else "false") if isinstance(value, bool) else str(value)
              for name, value in raw.items() if value is not None}
    return values, host


def load_app_settings(settings_path: str | Path | None, environ: Mapping[str, str],
                      cwd: str | Path = ".") -> dict[str, str]:
    """local.settings.json `Values` (the given file, or the one in `cwd` if there is one), overlaid by
    the environment: the same precedence the Functions host applies."""
    explicit = settings_path is not None
    path = Path(settings_path) if settings_path is not None else Path(cwd) / LOCAL_SETTINGS
    if explicit and not path.is_file():
        raise SettingsError("--settings", f"{path} does not exist")
    values, _ = read_local_settings(path)
    values.update(environ)
    return values
