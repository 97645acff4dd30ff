"""`catalog status` and `catalog recover`: plain functions over a CatalogService that the CLI prints.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from ..index_meta import read_index_meta
from ..materializer import ApplyResult
from ..service import CatalogService
from ..wal import SHARDS, parse_time
from .progress import NO_PROGRESS, Progress


# -- status ------------------------------------------------------------------------------------
def status(service: CatalogService, now: datetime | None = None, *, failures: int = 5) -> dict:
    """Schema, per-shard checkpoints and lag, pending and failed operations, queue depths."""
    view: dict[str, Any] = {"schema": service.schema_view()}
    view.update(service.health(now, failures=failures))
    for key, queue in (("queue", service.queue), ("poison_queue", service.poison_queue)):
        view[key] = {"name": queue.name, "depth": queue.depth()} if queue is not None else None
    meta = read_index_meta(service.index)
    view["index_table"] = meta.view() if meta else None
    return view


# -- recover -----------------------------------------------------------------------------------
def recover(service: CatalogService, since: str | datetime | None = None, *, progress: Progress = NO_PROGRESS,
            now: datetime | None = None) -> ApplyResult:
    """`CatalogService.recover`, with a progress bar that follows the shards."""
    moment = parse_time(since) if since is not None else None
    progress.begin("recover", SHARDS, "shards")
    total = service.materializer.replay(moment, now, on_shard=lambda _: progress.advance())
    progress.end()
    return total


