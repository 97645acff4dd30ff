"""The catalog's exception tree. Adapters translate azure.core errors into these with `raise ... from`."""
from __future__ import annotations


class CatalogError(Exception):
    """Base of every error the catalog raises on purpose."""


class SettingsError(CatalogError):
    """A missing or invalid setting; the message names the setting."""

    def __init__(self, setting: str, problem: str):
        self.setting = setting
        super().__init__(f"{setting}: {problem}")


class ValidationError(CatalogError):
    """Bad input from a caller. Nothing was written. HTTP 400 (or `status`)."""

    status = 400

    def __init__(self, detail: str, *, field: str | None = None, index: int | None = None):
        self.detail = detail
        self.field = field
        self.index = index
        where = f"record {index}: " if index is not None else ""
        super().__init__(where + detail)


class RecordTooLargeError(ValidationError):
    """A record that would not fit Azure's 1 MiB entity limit. HTTP 413."""

    status = 413


class UnsupportedMediaTypeError(ValidationError):
    """A request body in another media type than the one the route reads. HTTP 415."""

    status = 415


class IdempotencyKeyReusedError(ValidationError):
    """An Idempotency-Key sent again with another request than the one it was first used for. HTTP 422."""

    status = 422


class RequestInFlightError(CatalogError):
    """The first request under this Idempotency-Key is still being written: retry shortly. HTTP 409."""


class SchemaMismatchError(CatalogError):
    """This process is configured with another schema than the one persisted with the tables."""

    def __init__(self, configured, persisted):
        self.configured = configured
        self.persisted = persisted
        super().__init__(
            "the tables were created with another schema: "
            f"persisted {persisted.describe()}, configured {configured.describe()}. "
            "Point the settings at the persisted schema, or build a new index table "
            "(python -m catalog reindex) for the new one."
        )


class WalLayoutError(CatalogError):
    """The WAL table was written with another layout (shard count) than this version uses."""


class IndexNotBuiltError(CatalogError):
    """The configured index table is new to a WAL that already feeds another: it must be built first."""


class NotFoundError(CatalogError):
    """The thing asked for does not exist. HTTP 404."""


class StorageError(CatalogError):
    """Storage failed in a way the catalog does not handle itself."""


class TableNotFoundError(StorageError):
    """The table does not exist (yet)."""


class TransientStorageError(StorageError):
    """Throttling, timeouts, 5xx: worth retrying later; never a reason to mark data failed."""


class ConflictError(StorageError):
    """An ETag or existence precondition failed (someone else wrote first)."""


class EntryError(CatalogError):
    """A WAL entry that cannot be applied (corrupt, or invalid under the schema)."""
