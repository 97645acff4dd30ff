"""Table key encoding: any JSON string value -> a valid, injective, order-keeping PartitionKey/RowKey part.

Azure Table keys forbid `/ \\ # ?` and control characters and hold at most 1 KiB (counted here as
512 UTF-16 code units, the conservative reading of the limit). The encoding:

- letters, digits and `-_.:` stand for themselves, a space becomes `!`: so strings made of
  those ("ordinary" values) keep their order, and the key parts stay readable;
- every other ASCII character becomes `~XX` (two hex digits); a non-ASCII character stands for
  itself unless it is a C1 control, a lone surrogate, a non-character or the BOM, which become
  `~XX` / `~uXXXX` / `~UXXXXXX`. Fixed ranges only, never the Unicode database, so a key
  does not change with the Python version. The escapes are prefix-free, so the encoding is injective.

The encoded text never contains a space, so a space can join parts (`field value`, `row fingerprint`)
and sorts below every encoded character: a row key range over ordinary values stays exact.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ValidationError

MAX_KEY_UTF16 = 512  # 1 KiB of UTF-16
FINGERPRINT_HEX = 24  # 96 bits: collisions negligible at billions of records
SEP = " "
_ORDINARY = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def _escape_char(ch: str) -> str:
    cp = ord(ch)
    if cp < 0x100:
        return f"~{cp:02x}"
    if cp < 0x10000:
        return f"~u{cp:04x}"
    return f"~U{cp:06x}"


def _needs_escape(ch: str) -> bool:
    # Fixed ranges, never the Unicode database: a key must not change with the Python version.
    cp = ord(ch)
    return (
        cp < 0xA0  # ASCII outside the ordinary set, C0 and C1 controls
        or 0xD800 <= cp <= 0xDFFF  # lone surrogates (JSON can carry them)
        or 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE  # non-characters
        or cp == 0xFEFF  # byte order mark: some tools strip it
    )


def encode_part(text: str) -> str:
    """Encode one key part. Injective; identity on letters, digits and `-_.:`."""
    out = []
    for ch in text:
        if ch in _ORDINARY:
            out.append(ch)
        elif ch == " ":
            out.append("!")
        elif _needs_escape(ch):
            out.append(_escape_char(ch))
        else:
            out.append(ch)
    return "".join(out)


def decode_part(encoded: str) -> str:
    """Inverse of encode_part (used by tools and tests)."""
    out, i = [], 0
    while i < len(encoded):
        ch = encoded[i]
        if ch == "!":
            out.append(" ")
            i += 1
        elif ch == "~":
            kind = encoded[i + 1]
            if kind == "u":
                out.append(chr(int(encoded[i + 2:i + 6], 16)))
                i += 6
            elif kind == "U":
                out.append(chr(int(encoded[i + 2:i + 8], 16)))
                i += 8
            else:
                out.append(chr(int(encoded[i + 1:i + 3], 16)))
                i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def utf16_len(text: str) -> int:
    return sum(2 if ord(c) > 0xFFFF else 1 for c in text)


def value_text(value: Any, field: str) -> str:
    """The text a scalar field value is indexed under: strings as they are, numbers and booleans as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"field {field!r} is a key field and its number is out of range", field=field)
        return json.dumps(value)
    kind = "null" if value is None else type(value).__name__
    raise ValidationError(f"field {field!r} is a key field and must be a string, number or boolean, not {kind}",
                          field=field)


def normalize(text: str, case_sensitive: bool) -> str:
    return text if case_sensitive else text.casefold()


def partition_key(field: str, normalized_text: str) -> str:
    return encode_part(field) + SEP + encode_part(normalized_text)


def fingerprint(normalized_texts: tuple[str, ...]) -> str:
    payload = json.dumps(list(normalized_texts), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return hashlib.sha256(payload).hexdigest()[:FINGERPRINT_HEX]


def row_key(normalized_row_text: str, fp: str) -> str:
    return encode_part(normalized_row_text) + SEP + fp


LONE_SURROGATE = re.compile("[\\ud800-\\udfff]")


def check_read_value(text: str, field: str, *, room: int = MAX_KEY_UTF16) -> None:
    """A filter value or row bound given to a read or a delete, checked as a key would be before it
    reaches storage: a value no record can hold is a 400, never a refused request URL."""
    if not isinstance(text, str):
        raise ValidationError(f"{field!r} must be text", field=field)
    if LONE_SURROGATE.search(text):
        raise ValidationError(f"the value of {field!r} holds a lone surrogate, which no record can hold", field=field)
    encoded = utf16_len(encode_part(text))
    if encoded > room:
        raise ValidationError(f"the value of {field!r} is too long for a table key: encoded it takes {encoded} of "
                              f"{room} allowed characters", field=field)


def row_range(row_from: str | None, row_to: str | None, case_sensitive: bool) -> tuple[str | None, str | None]:
    """(RowKey >= low, RowKey < high) bounds for an inclusive range of row key values."""
    room = MAX_KEY_UTF16 - len(SEP) - FINGERPRINT_HEX
    for name, bound in (("row_from", row_from), ("row_to", row_to)):
        if bound is not None:
            check_read_value(normalize(bound, case_sensitive), name, room=room)
    low = encode_part(normalize(row_from, case_sensitive)) + SEP if row_from is not None else None
    high = encode_part(normalize(row_to, case_sensitive)) + "!" if row_to is not None else None
    # "!" is the character right after SEP: every key "<row_to> <fingerprint>" sorts below it.
    return low, high


def prefix_range(prefix: str, case_sensitive: bool) -> tuple[str, str]:
    """(RowKey >= low, RowKey < high) bounds for the row key values that start with `prefix`.

    The encoding is a concatenation of prefix-free codes, so a value starts with the prefix exactly
    when its encoded key starts with the encoded prefix. The upper bound is that encoded prefix with
    its last character raised by one (past the surrogates, which no key holds); a character the
    bound skips over (`/` after `.`) is one no encoded key contains."""
    if not isinstance(prefix, str) or not prefix:
        raise ValidationError("row_prefix must be at least one character", field="row_prefix")
    text = normalize(prefix, case_sensitive)
    check_read_value(text, "row_prefix", room=MAX_KEY_UTF16 - len(SEP) - FINGERPRINT_HEX)
    low = encode_part(text)
    following = ord(low[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:
        following = 0xE000
    return low, low[:-1] + chr(following)


@dataclass(frozen=True)
class RecordKeys:
    """Where one record identity lives in the index table: one (PartitionKey, RowKey) per index key."""

    row_key: str
    partition_keys: tuple[str, ...]
    texts: Mapping[str, str]  # field -> normalized text, for matching filters

    def entities(self) -> list[tuple[str, str]]:
        return [(pk, self.row_key) for pk in self.partition_keys]


def record_keys(schema, record: Mapping[str, Any]) -> RecordKeys:
    """Compute a record's identity and index keys. Raises ValidationError if a key field is unusable."""
    missing = [f for f in dict.fromkeys((*schema.index_keys, schema.row_key)) if f not in record]
    if missing:
        names = ", ".join(map(repr, missing))
        raise ValidationError(f"missing required field{'s' if len(missing) > 1 else ''} {names}", field=missing[0])
    texts = {f: normalize(value_text(record[f], f), schema.case_sensitive) for f in schema.key_fields}
    ordered = tuple(texts[f] for f in schema.key_fields)
    rk = row_key(texts[schema.row_key], fingerprint(ordered))
    pks = tuple(partition_key(f, texts[f]) for f in schema.index_keys)
    for field, key in [(schema.row_key, rk), *zip(schema.index_keys, pks, strict=True)]:
        if utf16_len(key) > MAX_KEY_UTF16:
            raise ValidationError(
                f"value of {field!r} is too long for a table key: encoded it takes {utf16_len(key)} of "
                f"{MAX_KEY_UTF16} allowed characters", field=field)
    return RecordKeys(rk, pks, texts)


def is_valid_table_key(key: str) -> bool:
    """Azure's rules for PartitionKey/RowKey values (used by tests and as a last check)."""
    if not key or utf16_len(key) > MAX_KEY_UTF16:
        return False
    for ch in key:
        cp = ord(ch)
        if ch in "/\\#?" or cp <= 0x1F or 0x7F <= cp <= 0x9F or 0xD800 <= cp <= 0xDFFF:
            return False
    return True
