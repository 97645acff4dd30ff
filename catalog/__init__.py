"""az-table-catalog: an event-sourced, multi-index catalog on Azure Table Storage.

The library API is compatible with az-table-catalog 1.0.x:

    from catalog import TableCatalogClient, configure, query, insert, delete, recover

and a deployed catalog is one import away over HTTP:

    from catalog import CatalogHttpClient

Every public name is loaded when first used (PEP 562), so the HTTP client, which needs only
`requests`, works where the Azure SDK the library needs is not installed.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and the layering test see; at run time __getattr__ loads them
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
    from .remote import (
        CatalogHttpClient,
        CatalogHttpError,
        Change,
        HttpBadRequestError,
        HttpConflictError,
        HttpNotFoundError,
        HttpTooLargeError,
        HttpUnavailableError,
        Operation,
        OperationFailed,
        OperationTimeoutError,
    )
    from .settings import Schema, Settings

__all__ = [
    "TableCatalogClient", "configure", "query", "insert", "delete", "recover",
    "CatalogError", "ValidationError", "RecordTooLargeError", "SchemaMismatchError", "SettingsError",
    "NotFoundError", "StorageError", "TransientStorageError", "ConflictError", "EntryError",
    "Schema", "Settings",
    "CatalogHttpClient", "Operation", "Change", "OperationFailed", "OperationTimeoutError",
    "CatalogHttpError", "HttpBadRequestError", "HttpNotFoundError", "HttpConflictError", "HttpTooLargeError",
    "HttpUnavailableError",
]

# Where each public name lives (the TYPE_CHECKING imports above say the same to the tools).
_MODULE_OF = {
    **dict.fromkeys(("TableCatalogClient", "configure", "query", "insert", "delete", "recover"), ".client"),
    **dict.fromkeys(("CatalogError", "ValidationError", "RecordTooLargeError", "SchemaMismatchError",
                     "SettingsError", "NotFoundError", "StorageError", "TransientStorageError", "ConflictError",
                     "EntryError"), ".errors"),
    **dict.fromkeys(("Schema", "Settings"), ".settings"),
    **dict.fromkeys(("CatalogHttpClient", "Operation", "Change", "OperationFailed", "OperationTimeoutError",
                     "CatalogHttpError", "HttpBadRequestError", "HttpNotFoundError", "HttpConflictError",
                     "HttpTooLargeError", "HttpUnavailableError"), ".remote"),
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'catalog' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
