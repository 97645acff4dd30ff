"""Record codec: any JSON object <-> entity properties, and Azure's entity size rules.

A record is stored as its JSON text (UTF-8, lone surrogates kept) split into binary properties
`d0`, `d1`, ... of at most 64 KiB each, so no field name of the record is ever a table property:
`PartitionKey`, `Timestamp`, `etag`, `operation` are ordinary record fields. Binary keeps the
size accounting at one byte per byte, so records close to the 1 MiB entity limit fit.
"""
from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from .errors import EntryError, RecordTooLargeError, ValidationError
from .keys import LONE_SURROGATE as _SURROGATE
from .keys import utf16_len

MAX_ENTITY_BYTES = 1024 * 1024
MAX_BINARY_PROPERTY = 64 * 1024
MAX_PROPERTIES = 252  # custom properties besides PartitionKey, RowKey, Timestamp
CHUNK_COUNT = "n"


MAX_DEPTH = 64  # nesting levels of a record; a request body may add two (`{"records": [...]}`)
MAX_BODY_DEPTH = MAX_DEPTH + 2

# Strings (with their escapes) are skipped; what is left of the brackets gives the nesting depth.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (or any text: brackets inside
    strings do not count). Linear, and it never recurses, so it is safe on hostile input."""
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", data))
    if not brackets:
        return 0
    return max(itertools.accumulate(1 if b in b"[{" else -1 for b in brackets))


def _reject_constant(name: str):
    raise ValidationError(f"{name} is not valid JSON: send numbers only")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValidationError(f"an object has the key {printable(key)} more than once", field=key)
            seen.add(key)
    return obj


def strict_decoder() -> json.JSONDecoder:
    """The decoder parse_json uses, for readers that stream (catalog import): no duplicate keys, no
    NaN/Infinity. Its caller bounds the nesting (or catches RecursionError)."""
    return json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)


def parse_json(text: str | bytes, *, max_depth: int = MAX_BODY_DEPTH, what: str = "body") -> Any:
    """Strict JSON (RFC 8259 as an interoperable parser reads it): UTF-8 only, no duplicate keys,
    no NaN/Infinity, at most `max_depth` levels of nesting. Lone surrogates parse (`"\\ud800"` is
    valid JSON text); `dumps` refuses them in records."""
    if isinstance(text, str):
        source, data = text, text.encode("utf-8", "surrogatepass")
    else:
        data = bytes(text)
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValidationError(f"{what} is not valid UTF-8 (byte {e.start})") from None
    depth = nesting_depth(data)
    if depth > max_depth:
        raise ValidationError(f"{what} nests {depth} levels deep; at most {max_depth} are allowed")
    try:
        return strict_decoder().decode(source)
    except ValidationError as e:
        raise ValidationError(f"{what}: {e.detail}", field=e.field) from None
    except RecursionError:  # unreachable below max_depth; kept so no input can become a 500
        raise ValidationError(f"{what} nests too deeply") from None
    except json.JSONDecodeError as e:
        raise ValidationError(f"{what}: invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ValidationError(f"{what}: invalid JSON: {e}") from None


def printable(text: str, limit: int = 80) -> str:
    """A quoted, ASCII-only rendering of a caller's text for an error message (lone surrogates and
    control characters escaped, long texts cut), so a message can always be encoded and logged."""
    shown = text if len(text) <= limit else text[:limit] + "..."
    return json.dumps(shown, ensure_ascii=True)


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def _find_problem(value: Any) -> tuple[str, str] | None:
    """(field path, what is wrong) for the first value no stored record may hold; None if none.
    Iterative, so a deep structure cannot overflow the stack."""
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        path, v, depth = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                return path, "holds a lone surrogate (text must be valid Unicode)"
        elif isinstance(v, bool) or v is None or isinstance(v, int):
            continue
        elif isinstance(v, float):
            if not math.isfinite(v):
                return path, "is a number out of range (JSON numbers must be finite)"
        elif isinstance(v, (dict, list)):
            if depth >= MAX_DEPTH:
                return path, f"nests more than {MAX_DEPTH} levels deep"
            items = v.items() if isinstance(v, dict) else enumerate(v)
            for k, child in items:
                if isinstance(v, dict):
                    if not isinstance(k, str):
                        return path, f"has a key that is not a string ({type(k).__name__})"
                    if _SURROGATE.search(k):
                        return _path(path, k), "is a field name with a lone surrogate"
                stack.append((_path(path, k), child, depth + 1))
        else:
            return path, f"is a {type(v).__name__}, which JSON cannot hold"
    return None


def escape_surrogates(text: str) -> str:
    """`text` with each lone surrogate written out as `\\udXXX`, so it encodes as UTF-8."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _refuse(record: Any, fallback: str) -> ValidationError:
    found = _find_problem(record)
    if found is None:
        return ValidationError(fallback)
    path, problem = found
    top = path.split(".", 1)[0].split("[", 1)[0] or None
    return ValidationError(f"field {printable(path)} {problem}" if path else f"the record {problem}", field=top)


def dumps(record: Mapping[str, Any]) -> bytes:
    """A new record as stored: compact JSON in UTF-8. Refuses (ValidationError naming the field)
    anything a stored record must never hold: lone surrogates, non-finite numbers, values JSON
    has no type for, more than MAX_DEPTH levels."""
    try:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        data = text.encode("utf-8")
    except (ValueError, TypeError, RecursionError, UnicodeEncodeError):
        raise _refuse(record, "the record is not representable as JSON") from None
    if nesting_depth(data) > MAX_DEPTH:
        raise _refuse(record, f"the record nests more than {MAX_DEPTH} levels deep")
    return data


def dumps_stored(record: Mapping[str, Any]) -> bytes:
    """A record read back from storage, as stored (lone surrogates of records accepted before they
    were refused are kept, so a delete still names exactly that record)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def loads(data: bytes) -> Any:
    return json.loads(data.decode("utf-8", "surrogatepass"))


def response_bytes(body: Any) -> bytes:
    """A JSON response body that always encodes: UTF-8, with `\\uXXXX` escapes only where text
    holds a lone surrogate (a record stored before they were refused)."""
    text = json.dumps(body, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body, ensure_ascii=True).encode("ascii")  # valid JSON; RFC 8259 allows the escapes


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
