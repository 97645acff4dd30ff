"""import and export: records in and out of a catalog as files, streamed, in bounded memory.

Import reads JSON Lines, a JSON array (or concatenated JSON values), or CSV with a header row, one
row at a time, and sends the rows through the same validation and WAL path as the HTTP API
(`CatalogService.validate`, then `CatalogService.submit`). Every row is validated on its own first,
so a bad row is rejected alone (with its line number and reason, into the rejected file) and never
takes its batch down with it. The good rows go in batches of up to 99 records: 99 WAL entries and
the operation's header make exactly one entity-group transaction of 100.

Export writes every current record once, as JSON Lines: the partitions of the first index key hold
one entity per record, so only those are read, tombstones skipped.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from .. import codec
from ..errors import CatalogError, ValidationError
from ..service import CatalogService
from .progress import NO_PROGRESS, Progress

FORMATS = ("jsonl", "json", "csv")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
BATCH = 99  # + the header = one transaction of 100
CHUNK = 1 << 20
MAX_ELEMENT_CHARS = 16 << 20  # a JSON array element this long without parsing is not a record
MAX_CSV_FIELD = 8 << 20
_WS = " \t\r\n"


class MalformedFileError(CatalogError):
    """The file cannot be read past this point (e.g. broken JSON inside an array)."""

    def __init__(self, line: int, problem: str):
        self.line = line
        super().__init__(f"line {line}: {problem}")


@dataclass(frozen=True)
class Row:
    line: int
    record: Any = None
    error: str | None = None
    text: str | None = None  # the raw text of a row that could not be parsed


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise ValidationError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise ValidationError(f"cannot tell the format of {path} from its extension: use --format "
                              f"({', '.join(FORMATS)})")
    return EXTENSIONS[suffix]


# -- readers ------------------------------------------------------------------------------------
def read_jsonl(text: TextIO) -> Iterator[Row]:
    """One JSON value per line; a line that is not JSON is rejected alone. Blank lines are skipped."""
    for number, line in enumerate(text, 1):
        if not line.strip():
            continue
        try:
            record = codec.parse_json(line, max_depth=codec.MAX_DEPTH, what="line")
        except ValidationError as e:
            yield Row(number, error=e.detail, text=line.rstrip("\r\n"))
        else:
            yield Row(number, record)


class _Buffer:
    """A sliding window over a text stream for `JSONDecoder.raw_decode`: holds at most one element
    plus one chunk, whatever the file's size."""

    def __init__(self, text: TextIO):
        self.text = text
        self.buf = ""
        self.pos = 0
        self.line = 1
        self.eof = False
        self.decoder = codec.strict_decoder()

    def fill(self) -> bool:
        chunk = self.text.read(CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + chunk
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end), without consuming it."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                if self.buf[self.pos] == "\n":
                    self.line += 1
                self.pos += 1
            if self.pos < len(self.buf) or not self.fill():
                return self.buf[self.pos:self.pos + 1]

    def take(self) -> None:
        self.pos += 1

    def value(self) -> Any:
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except ValidationError as e:  # a duplicate key or NaN: the element parses, as a reject
                try:
                    _, end = json.JSONDecoder().raw_decode(self.buf, self.pos)
                except ValueError:
                    raise MalformedFileError(self.line, e.detail) from None
                if end == len(self.buf) and not self.eof and self.fill():
                    continue
                text = self.buf[self.pos:end]
                self.line += text.count("\n")
                self.pos = end
                return Rejected(e.detail, text)
            except RecursionError:
                raise MalformedFileError(self.line, f"an element nests deeper than {codec.MAX_DEPTH} levels") from None
            except json.JSONDecodeError as e:
                if len(self.buf) - self.pos < MAX_ELEMENT_CHARS and self.fill():
                    continue  # maybe just cut off at the window's end
                line = self.line + self.buf.count("\n", self.pos, e.pos)
                raise MalformedFileError(line, f"invalid JSON: {e.msg}") from None
            if end == len(self.buf) and not self.eof and self.fill():
                continue  # a number at the window's end may go on in the next chunk
            self.line += self.buf.count("\n", self.pos, end)
            self.pos = end
            return value


@dataclass(frozen=True)
class Rejected:
    """An element that parses but that no record may be (duplicate keys, NaN)."""

    reason: str
    text: str


def _row(line: int, value: Any) -> Row:
    return Row(line, error=value.reason, text=value.text) if isinstance(value, Rejected) else Row(line, value)


def read_json(text: TextIO) -> Iterator[Row]:
    """A JSON array of records, streamed; or JSON values one after another (JSON Lines included).

    Inside an array a syntax error ends the import at that line: no element boundary can be trusted
    after it. Values that parse but are not valid records are rejected one by one."""
    buf = _Buffer(text)
    if buf.peek() != "[":
        while buf.peek():
            line = buf.line
            yield _row(line, buf.value())
        return
    buf.take()
    if buf.peek() == "]":
        buf.take()
    else:
        while True:
            if not buf.peek():
                raise MalformedFileError(buf.line, "the array is not closed")
            line = buf.line
            yield _row(line, buf.value())
            c = buf.peek()
            if c == ",":
                buf.take()
            elif c == "]":
                buf.take()
                break
            else:
                raise MalformedFileError(buf.line, f"expected ',' or ']' after an element, found {c or 'the end'!r}")
    if buf.peek():
        raise MalformedFileError(buf.line, "unexpected data after the array")


def read_csv(text: TextIO) -> Iterator[Row]:
    """CSV with a header row. Every value is a string (CSV has no types); a short row leaves its
    last fields out; a row with more cells than the header is rejected."""
    csv.field_size_limit(max(csv.field_size_limit(), MAX_CSV_FIELD))
    reader = csv.reader(text)
    try:
        header = next(reader, None)
        if header is None:
            return
        if len(set(header)) != len(header) or any(not name for name in header):
            raise MalformedFileError(1, f"the header row needs distinct, non-empty column names: {header}")
        start = reader.line_num + 1
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not cells:
                continue
            if len(cells) > len(header):
                yield Row(line, error=f"{len(cells)} cells, but the header has {len(header)} columns",
                          text=",".join(cells))
                continue
            yield Row(line, dict(zip(header, cells, strict=False)))  # a short row leaves fields out
    except csv.Error as e:
        raise MalformedFileError(reader.line_num, f"invalid CSV: {e}") from None


READERS = {"jsonl": read_jsonl, "json": read_json, "csv": read_csv}


# -- import -------------------------------------------------------------------------------------
@dataclass
class ImportReport:
    file: str
    format: str
    applied: bool
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    operations: int = 0
    first_operation: str | None = None
    last_operation: str | None = None
    rejected_file: str | None = None
    error: str | None = None
    samples: list[dict] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {"file": self.file, "format": self.format,
                "mode": "applied" if self.applied else "enqueued for the function app",
                "rows": self.rows, "accepted": self.accepted, "rejected": self.rejected,
                "operations": self.operations, "first_operation": self.first_operation,
                "last_operation": self.last_operation, "rejected_file": self.rejected_file,
                "rejected_samples": self.samples, "error": self.error}


class _Stopped(Exception):
    """A batch could not be written: the import ends there, with what it accepted so far."""


class _Rejects:
    """Rejected rows as JSON Lines: line number, reason, and the row (parsed, or its raw text)."""

    def __init__(self, path: Path, report: ImportReport, show: int):
        self.path, self.report, self.show = path, report, show
        self.file: TextIO | None = None

    def add(self, row: Row, reason: str) -> None:
        if self.file is None:
            self.file = open(self.path, "w", encoding="utf-8")
            self.report.rejected_file = str(self.path)
        entry: dict[str, Any] = {"line": row.line, "reason": reason}
        if row.error is None:
            entry["record"] = row.record
        else:
            entry["text"] = row.text
        self.file.write(json.dumps(entry, ensure_ascii=True, default=repr) + "\n")
        self.report.rejected += 1
        if len(self.report.samples) < self.show:
            self.report.samples.append({"line": row.line, "reason": reason})

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class _CountingReader(io.RawIOBase):
    """Counts the bytes read from the file, for the progress bar."""

    def __init__(self, raw: io.RawIOBase):
        self.raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int | None:
        n = self.raw.readinto(b)
        self.count += n or 0
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def import_file(service: CatalogService, path: str | Path, *, fmt: str | None = None, apply_now: bool = False,
                batch_size: int = BATCH, rejected_path: str | Path | None = None,
                progress: Progress = NO_PROGRESS, show: int = 20) -> ImportReport:
    path = Path(path)
    fmt = detect_format(path, fmt)
    if not 1 <= batch_size <= 1000:
        raise ValidationError("--batch-size must be between 1 and 1000")
    report = ImportReport(str(path), fmt, apply_now)
    rejects = _Rejects(Path(rejected_path) if rejected_path else path.with_name(path.name + ".rejected.jsonl"),
                       report, show)
    counter = _CountingReader(open(path, "rb", buffering=0))
    text = io.TextIOWrapper(io.BufferedReader(counter, CHUNK), encoding="utf-8-sig", errors="strict",
                            newline="" if fmt == "csv" else None)
    batch: list[Any] = []
    batch_line = 0
    progress.begin(f"import {path.name}", path.stat().st_size, "B")

    def flush() -> None:
        nonlocal batch
        if not batch:
            return
        try:
            accepted = service.submit(batch, apply_now=apply_now)
        except CatalogError as e:
            raise _Stopped(f"stopped at the batch starting at line {batch_line}: {e}. Rows before it were "
                           "accepted; importing the file again is safe (records are upserts)") from e
        report.accepted += len(batch)
        report.operations += 1
        report.first_operation = report.first_operation or accepted.operation
        report.last_operation = accepted.operation
        batch = []

    try:
        for row in READERS[fmt](text):
            report.rows += 1
            if row.error is not None:
                rejects.add(row, row.error)
            else:
                try:
                    service.validate([row.record])
                except ValidationError as e:
                    rejects.add(row, e.detail)
                else:
                    if not batch:
                        batch_line = row.line
                    batch.append(row.record)
                    if len(batch) >= batch_size:
                        flush()
                        progress.set(counter.count)
        flush()
    except _Stopped as e:
        report.error = str(e)
    except MalformedFileError as e:
        try:
            flush()
        except _Stopped as stopped:
            report.error = str(stopped)
        report.error = report.error or f"{e}: the rows before it were imported, the rest were not read"
    except UnicodeDecodeError as e:
        report.error = (f"the file is not UTF-8 ({e.reason}, within the {CHUNK}-byte chunk read up to byte "
                        f"{counter.count}): the rows before it were imported")
    finally:
        progress.set(counter.count)
        progress.end()
        rejects.close()
        text.close()
    return report


# -- export -------------------------------------------------------------------------------------
_LINE_BREAKS = (("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))


def _line(data: bytes) -> bytes:
    """One record, one line of UTF-8. U+2028/U+2029 (valid inside JSON strings, and only there) are
    escaped: many line readers split on them."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        # A lone surrogate of a record stored before they were refused: escaped, to stay UTF-8.
        return json.dumps(codec.loads(data), ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
    for raw, escaped in _LINE_BREAKS:
        if raw in data:
            data = data.replace(raw, escaped)
    return data + b"\n"


class BinarySink(Protocol):
    """What export_records writes to: a binary file (BinaryIO), or anything else with a write(bytes)."""

    def write(self, data: bytes, /) -> int: ...


def export_records(service: CatalogService, out: BinarySink, *, progress: Progress = NO_PROGRESS) -> int:
    """Write every current record once, as JSON Lines. Returns how many."""
    count = 0
    progress.begin("export", None, "records")
    try:
        for e in service.index.records():
            out.write(_line(codec.join_chunks(e)))
            count += 1
            progress.advance()
    finally:
        progress.end()
    return count

