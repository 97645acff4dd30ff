"""A stand-alone Python client of the catalog's deployed HTTP API.

It imports nothing from the rest of the catalog and needs only `requests` (no Azure SDK), so an
application that talks to a deployed catalog installs nothing else::

    from catalog import CatalogHttpClient

    with CatalogHttpClient("https://<app>.azurewebsites.net/api", key=FUNCTION_KEY) as client:
        client.wait(client.insert({"sku": "A-1", "category": "Tools", "name": "hammer"}))
        for record in client.query({"category": "tools"}, limit=500):
            ...

Modules: `client` (CatalogHttpClient), `models` (Operation, Change), `errors` (the exception tree),
`wire` (query text, bodies and the bulk split), `backoff` (what is retried, and when).
"""
from .client import CatalogHttpClient
from .errors import (
    CatalogHttpError,
    HttpBadRequestError,
    HttpConflictError,
    HttpNotFoundError,
    HttpTooLargeError,
    HttpUnavailableError,
    OperationFailed,
    OperationTimeoutError,
)
from .models import Change, Operation

__all__ = [
    "CatalogHttpClient", "Operation", "Change",
    "CatalogHttpError", "HttpBadRequestError", "HttpNotFoundError", "HttpConflictError", "HttpTooLargeError",
    "HttpUnavailableError", "OperationFailed", "OperationTimeoutError",
]
