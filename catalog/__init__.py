"""az-table-catalog: an event-sourced, multi-index catalog on Azure Table Storage.

The library API is compatible with az-table-catalog 1.0.x:

    from catalog import TableCatalogClient, configure, query, insert, delete, recover
"""
from .client import TableCatalogClient, configure, delete, insert, query, recover
from .errors import (
                     CatalogError,
                     ConflictError,
                     EntryError,
                     NotFoundError,
                     RecordTooLargeError,
                     SchemaMismatchError,
                     SettingsError,
                     StorageError,
                     TransientStorageError,
                     ValidationError,
)
from .settings import Schema, Settings

__all__ = [
    "TableCatalogClient", "configure", "query", "insert", "delete", "recover",
    "CatalogError", "ValidationError", "RecordTooLargeError", "SchemaMismatchError", "SettingsError",
    "NotFoundError", "StorageError", "TransientStorageError", "ConflictError", "EntryError",
    "Schema", "Settings",
]
