"""`catalog changes`: the change feed as JSON Lines, optionally following it and keeping a checkpoint.

A consumer such as `catalog changes --follow --checkpoint pos.txt | my-indexer` must be restartable:
each line is written and flushed first, then its position is stored in the checkpoint file (written
to a temporary file and renamed over it, so the file always holds one whole position). SIGINT and
SIGTERM are held off while a line and its position are being written, so a stop by signal lands
between two lines and a restart goes on with the next one. Only a harder stop (SIGKILL, a crash of
the machine) between the two can make the last line come again: its position is not above the last
one the consumer saw, which is how a consumer drops it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from .. import codec
from ..changes import MAX_FEED_LIMIT, check_position, start_position
from ..service import CatalogService

FOLLOW_WAIT = 20.0  # seconds one long read waits for a change to become final


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class _Stopped(Exception):
    """A stop signal arrived while no line was being written."""


class _Signals:
    """SIGINT/SIGTERM: raise at once while waiting, or at the end of the line being written."""

    def __init__(self) -> None:
        self.writing = False
        self.pending = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.writing:
            self.pending = True
        else:
            raise _Stopped()

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def line(self) -> Iterator[None]:
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
        if self.pending:
            raise _Stopped()


def read_checkpoint(path: Path) -> str | None:
    if not path.exists():
        return None
    text = path.read_text(encoding="ascii").strip()
    return check_position(text) if text else None


def save_checkpoint(path: Path, position: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(position + "\n", encoding="ascii")
    os.replace(tmp, path)


def follow_changes(service: CatalogService, out: Sink, *, after: str | None = None, since: str | None = None,
                   follow: bool = False, checkpoint: Path | None = None) -> int:
    """Write changes as JSON Lines to `out` until the frontier (or, following, until a stop signal).
    Returns how many lines were written."""
    stored = read_checkpoint(checkpoint) if checkpoint is not None else None
    position = stored if stored is not None else start_position(after, since)
    written = 0
    with _Signals() as signals:
        try:
            while True:
                page = (service.feed.wait_page(position, MAX_FEED_LIMIT, FOLLOW_WAIT) if follow
                        else service.feed.page(position, MAX_FEED_LIMIT))
                for change in page.items:
                    with signals.line():
                        out.write(codec.response_bytes(change.view()) + b"\n")
                        out.flush()
                        if checkpoint is not None:
                            save_checkpoint(checkpoint, change.position)
                    written += 1
                if page.next != position and not page.items and checkpoint is not None:
                    with signals.line():  # nothing new below the frontier: start there next time
                        save_checkpoint(checkpoint, page.next)
                position = page.next
                if not follow and len(page.items) < MAX_FEED_LIMIT:
                    return written
        except _Stopped:
            return written
