"""The one wiring place (composition root): settings in, service objects out. The only core module
that picks a storage adapter."""
from __future__ import annotations

import threading
from collections.abc import Mapping

from .adapters.azure import AzureQueue, AzureTableStore
from .index import Index
from .materializer import Materializer
from .service import CatalogService
from .settings import Settings
from .store import TableStore
from .wal import Wal

_services: dict[Settings, CatalogService] = {}
_lock = threading.Lock()


def table_store(settings: Settings) -> TableStore:
    """The table store the settings point at (Azure Storage or Azurite)."""
    return AzureTableStore.from_config(settings.storage)


def build_service(settings: Settings, *, store=None, queue=None, poison_queue=None, ensure: bool = True,
                  shard: int | None = None, deferred_marks: bool = False,
                  **materializer_options) -> CatalogService:
    """A CatalogService on Azure Storage (or the given store/queue), tables and queues created."""
    if store is None:
        store = table_store(settings)
        queue = queue or AzureQueue.from_config(settings.storage, settings.queue)
        poison_queue = poison_queue or AzureQueue.from_config(settings.storage, settings.poison_queue)
    wal = Wal(store, settings.wal_table)
    index = Index(store, settings.table, settings.schema)
    materializer_options.setdefault("concurrency", settings.apply_concurrency)
    materializer_options.setdefault("settle_window", settings.settle_window)
    materializer = Materializer(wal, index, settings.schema, **materializer_options)
    service = CatalogService(settings.schema, wal, index, materializer, queue, poison_queue, shard=shard,
                             deferred_marks=deferred_marks)
    return service.ensure() if ensure else service


def service_for(env: Mapping[str, str]) -> CatalogService:
    """The process-wide service for these settings (clients are reused across invocations)."""
    settings = Settings.from_env(env)
    service = _services.get(settings)
    if service is None:
        with _lock:
            service = _services.get(settings)
            if service is None:
                service = _services[settings] = build_service(settings)
    return service
