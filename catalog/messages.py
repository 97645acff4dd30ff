"""The queue message format: which operations a message names, and for small operations a copy of
their WAL entries (so applying them needs no WAL read).

A message is `{"op": <op id>, "e": [[seq, kind, json text], ...]}` for one operation or
`{"ops": [...]}` for a group; an operation too large to embed is named alone (`{"op": <op id>}`)
and read from the WAL. The text is what the queue carries (base64-encoded by the adapter, as the
Functions queue trigger expects).
"""
from __future__ import annotations

import json
from collections.abc import Sequence

from . import codec
from .errors import EntryError, ValidationError
from .wal import WalEntry, parse_operation_id, shard_partition

MAX_EMBEDDED_MESSAGE = 40 * 1024  # queue messages hold 64 KiB of base64, 48 KiB of text


def encode(ops: Sequence[tuple[str, Sequence[WalEntry]]]) -> str:
    """The message naming these operations, their entries embedded when the message stays small."""
    items = [{"op": op_id, "e": [[e.stamp.rsplit("-", 1)[1], e.kind,
                                  codec.join_chunks(e.entity).decode("utf-8", "surrogatepass")] for e in entries]}
             for op_id, entries in ops]
    body = items[0] if len(items) == 1 else {"ops": items}
    text = json.dumps(body, ensure_ascii=False)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate (a record stored before they were refused): escaped
        text = json.dumps(body, ensure_ascii=True)
        size = len(text)
    if size > MAX_EMBEDDED_MESSAGE:
        refs = [{"op": op_id} for op_id, _ in ops]
        text = json.dumps(refs[0] if len(refs) == 1 else {"ops": refs})
    return text


def parse(text: str) -> list[tuple[str, list[list] | None]]:
    """[(operation id, embedded entries or None)] of a message: `{"op", "e"?}` or `{"ops": [...]}`."""
    try:
        message = json.loads(text)
        items = message["ops"] if "ops" in message else [message]
        ops = []
        for item in items:
            op_id = item["op"]
            parse_operation_id(op_id)
            embedded = item.get("e")
            if embedded is not None and not (isinstance(embedded, list) and
                                             all(isinstance(x, list) and len(x) == 3 for x in embedded)):
                raise ValueError("bad embedded entries")
            ops.append((op_id, embedded))
        if not ops:
            raise ValueError("no operations")
        return ops
    except (ValueError, KeyError, TypeError, AttributeError, ValidationError, RecursionError) as e:
        raise EntryError(f"queue message is not a catalog message: {codec.printable(text, 200)}") from e


def embedded_entries(op_id: str, embedded: list[list]) -> list[WalEntry]:
    """The WAL entries a message carries for one operation, as the WAL holds them."""
    shard = parse_operation_id(op_id)
    entries = []
    for seq, kind, data in embedded:
        rk = f"{op_id}-{seq}"
        entity = {"PartitionKey": shard_partition(shard), "RowKey": rk, "kind": kind,
                  **codec.chunk_properties(str(data).encode("utf-8", "surrogatepass"))}
        entries.append(WalEntry(shard, rk, op_id, kind, entity))
    return entries
