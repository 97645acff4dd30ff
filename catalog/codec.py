"""Record codec: any JSON object <-> entity properties, and Azure's entity size rules.

A record is stored as its JSON text (UTF-8, lone surrogates kept) split into binary properties
`d0`, `d1`, ... of at most 64 KiB each, so no field name of the record is ever a table property:
`PartitionKey`, `Timestamp`, `etag`, `operation` are ordinary record fields. Binary keeps the
size accounting at one byte per byte, so records close to the 1 MiB entity limit fit.
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping

from .errors import EntryError, RecordTooLargeError, ValidationError
from .keys import utf16_len

MAX_ENTITY_BYTES = 1024 * 1024
MAX_BINARY_PROPERTY = 64 * 1024
MAX_PROPERTIES = 252  # custom properties besides PartitionKey, RowKey, Timestamp
CHUNK_COUNT = "n"


def _reject_constant(name: str):
    raise ValidationError(f"{name} is not valid JSON")


def parse_json(text: str | bytes) -> Any:
    """Strict JSON: NaN/Infinity refused."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValidationError:
        raise
    except (ValueError, UnicodeDecodeError) as e:
        raise ValidationError(f"body is not valid JSON: {e}") from e


def dumps(record: Mapping[str, Any]) -> bytes:
    try:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError as e:
        raise ValidationError(f"record is not representable as JSON: {e}") from e
    except TypeError as e:
        raise ValidationError(f"record contains a value that is not JSON: {e}") from e
    return text.encode("utf-8", "surrogatepass")


def loads(data: bytes) -> Any:
    return json.loads(data.decode("utf-8", "surrogatepass"))


def chunk_properties(data: bytes) -> dict[str, Any]:
    count = max(1, math.ceil(len(data) / MAX_BINARY_PROPERTY))
    # Most records fit one chunk: then the count is left out (one property less to send and store).
    props: dict[str, Any] = {CHUNK_COUNT: count} if count > 1 else {}
    for i in range(count):
        props[f"d{i}"] = data[i * MAX_BINARY_PROPERTY:(i + 1) * MAX_BINARY_PROPERTY]
    return props


def join_chunks(entity: Mapping[str, Any]) -> bytes:
    try:
        count = int(entity.get(CHUNK_COUNT, 1))
        return b"".join(bytes(entity[f"d{i}"]) for i in range(count))
    except (KeyError, TypeError, ValueError) as e:
        raise EntryError(f"entity {entity.get('PartitionKey')!r}/{entity.get('RowKey')!r} has no readable "
                         f"payload: {e!r}") from e


def decode_payload(entity: Mapping[str, Any]) -> Any:
    data = join_chunks(entity)
    try:
        return loads(data)
    except ValueError as e:
        raise EntryError(f"entity {entity.get('RowKey')!r} payload is not JSON: {e}") from e


def property_size(name: str, value: Any) -> int:
    """Bytes a property takes under Azure's entity size formula."""
    size = 8 + 2 * len(name)
    if isinstance(value, bool):
        return size + 1
    if isinstance(value, int):
        return size + 8
    if isinstance(value, float):
        return size + 8
    if isinstance(value, (bytes, bytearray, memoryview)):
        return size + 4 + len(value)
    if isinstance(value, str):
        return size + 4 + 2 * utf16_len(value)
    return size + 16  # datetime/guid and others: generous


def entity_size(entity: Mapping[str, Any]) -> int:
    total = 4 + 2 * (utf16_len(entity["PartitionKey"]) + utf16_len(entity["RowKey"]))
    for name, value in entity.items():
        if name not in ("PartitionKey", "RowKey"):
            total += property_size(name, value)
    return total


def check_entity_size(entity: Mapping[str, Any], what: str = "record") -> None:
    size = entity_size(entity)
    if size > MAX_ENTITY_BYTES:
        raise RecordTooLargeError(
            f"{what} is too large: stored it would take {size} bytes, over Azure Table's entity limit of "
            f"{MAX_ENTITY_BYTES} bytes")
    if len(entity) - 2 > MAX_PROPERTIES:
        raise RecordTooLargeError(f"{what} would need more than {MAX_PROPERTIES} properties")
