"""The storage ports the catalog needs: a table store and a queue. Adapters implement them.

Two table stores implement this contract: `adapters.azure.AzureTableStore` (Azure Storage and
Azurite) and `adapters.memory.MemoryTableStore` (fast property tests). One contract suite
(tests/contract) runs against both, so the fake cannot drift from the real thing.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar


class Entity(dict):
    """A table entity's properties (PartitionKey and RowKey included) plus its ETag and the time
    the service last wrote it (Table storage's Timestamp, UTC; None where a store has none)."""

    etag: str | None = None
    timestamp: datetime | None = None

    def __init__(self, props: Mapping[str, Any] | None = None, etag: str | None = None,
                 timestamp: datetime | None = None):
        super().__init__({} if props is None else props)
        self.etag = etag
        self.timestamp = timestamp


# Azure's entity-group transaction: one partition, at most 100 entities and 4 MiB per request. Binary
# properties travel base64-encoded, so 2 MiB of payload keeps a batch well under the 4 MiB.
MAX_BATCH = 100
MAX_BATCH_BYTES = 2 * 1024 * 1024


E = TypeVar("E", bound=Mapping[str, Any])


def transactions(entities: Iterable[E]) -> Iterator[list[E]]:
    """Entities of one partition, in the order given, cut into entity-group transactions Azure
    accepts: at most MAX_BATCH entities and MAX_BATCH_BYTES of binary payload each."""
    batch: list[E] = []
    size = 0
    for entity in entities:
        weight = sum(len(v) for v in entity.values() if isinstance(v, (bytes, bytearray)))
        if batch and (len(batch) == MAX_BATCH or size + weight > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entity)
        size += weight
    if batch:
        yield batch


class TableStore(Protocol):
    def create_table(self, table: str) -> None:
        """Create the table if it does not exist."""

    def get(self, table: str, pk: str, rk: str) -> Entity | None: ...

    def insert(self, table: str, entity: Mapping[str, Any], *, timeout: int | None = None) -> str:
        """Create; ConflictError if the entity exists. `timeout`: server-side seconds. Returns the ETag."""

    def replace(self, table: str, entity: Mapping[str, Any], etag: str) -> str:
        """Replace only if the stored ETag matches; ConflictError otherwise (or if it is gone)."""

    def merge(self, table: str, entity: Mapping[str, Any]) -> None:
        """Insert-or-merge, unconditionally."""

    def merge_batch(self, table: str, entities: Sequence[Mapping[str, Any]]) -> None:
        """Insert-or-merge entities of one partition in entity-group transactions of up to 100."""

    def delete(self, table: str, pk: str, rk: str, etag: str | None = None) -> None:
        """Delete (only if `etag` matches, when given; ConflictError if not). A missing entity is no error."""

    def query(self, table: str, pk: str, *, rk_gt: str | None = None, rk_ge: str | None = None,
              rk_lt: str | None = None, rk_le: str | None = None, equals: Mapping[str, Any] | None = None,
              page_size: int | None = None, select: Sequence[str] | None = None) -> Iterator[Entity]:
        """Entities of one partition in RowKey order, with optional RowKey bounds and property equalities.
        `select`: only these properties (PartitionKey and RowKey always; the ETag as ever)."""

    def query_page(self, table: str, pk: str, *, page_size: int, resume: object | None = None,
                   rk_gt: str | None = None, rk_ge: str | None = None, rk_lt: str | None = None,
                   rk_le: str | None = None, equals: Mapping[str, Any] | None = None,
                   select: Sequence[str] | None = None) -> tuple[list[Entity], object | None]:
        """One page of `query`: at most `page_size` entities (a page may hold fewer, even none, and
        still not be the last), and an opaque token to pass as `resume` with the same bounds for
        the next page, or None when the query has no more. The token is the store's own (Azure's
        is its continuation, which only the same filter understands), never a RowKey."""

    def insert_batch(self, table: str, entities: Sequence[Mapping[str, Any]], *,
                     timeout: int | None = None) -> None:
        """Insert entities of one partition atomically (an entity-group transaction, <= 100)."""

    def write_batch(self, table: str, creates: Sequence[Mapping[str, Any]],
                    replaces: Sequence[tuple[Mapping[str, Any], str]], *, timeout: int | None = None) -> list[str]:
        """One entity-group transaction in one partition (<= 100 in all): create `creates`, replace each
        of `replaces` only if its stored ETag still matches. All or nothing: ConflictError if any
        entity exists already, changed, or is gone. `timeout`: server-side seconds. Returns the new
        ETags, creates first, in the order given."""

    def scan_table(self, table: str, *, pk_ge: str | None = None, pk_lt: str | None = None,
                   page_size: int | None = None) -> Iterator[Entity]:
        """Every entity of the table (with pk_ge <= PartitionKey < pk_lt, when given), in (PartitionKey,
        RowKey) order: for operations tools (verify, export, reindex), never on a request path."""


class MessageQueue(Protocol):
    name: str

    def create(self) -> None: ...

    def send(self, text: str) -> None:
        """Enqueue one message (the adapter base64-encodes it, as the Functions trigger expects)."""

    def depth(self) -> int: ...
