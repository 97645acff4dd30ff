"""Progress reporting for long operations: a bar with rate and ETA on a terminal, nothing otherwise.

Operations report through the small `Progress` interface (begin a phase, advance, end), so they
stay testable and silent by default; the CLI hands them a `ProgressBar` only when stderr is a
terminal, so pipes, logs and CI output never fill with carriage returns.
"""
from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """The no-op progress: what operations get unless someone wants to watch."""

    enabled = False

    def begin(self, label: str, total: int | None = None, unit: str = "") -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def set(self, done: int) -> None:
        pass

    def end(self) -> None:
        pass


NO_PROGRESS = Progress()


def _human(n: float, unit: str) -> str:
    if unit == "B":
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(n) < 1024 or suffix == "TiB":
                return f"{n:.0f} {suffix}" if suffix == "B" else f"{n:.1f} {suffix}"
            n /= 1024
    return f"{n:,.0f}{' ' + unit if unit else ''}"


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressBar(Progress):
    """`label [#####-----]  45.0%  1,234/5,000 entries  512 entries/s  ETA 0:07` on one redrawn line."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, interval: float = 0.1):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.clock = clock
        self.interval = interval
        self._active = False

    def begin(self, label: str, total: int | None = None, unit: str = "") -> None:
        if self._active:
            self.end()
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self.started = self._last_draw = self.clock()
        self._active = True
        self._draw(force=True)

    def advance(self, n: int = 1) -> None:
        if self._active:
            self.done += n
            self._draw()

    def set(self, done: int) -> None:
        if self._active:
            self.done = done
            self._draw()

    def end(self) -> None:
        if self._active:
            self._draw(force=True)
            if self.enabled:
                self.stream.write("\n")
                self.stream.flush()
            self._active = False

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        parts = [self.label]
        if self.total:
            fraction = min(1.0, self.done / self.total)
            width = 24
            filled = int(fraction * width)
            parts.append(f"[{'#' * filled}{'-' * (width - filled)}] {fraction * 100:5.1f}%")
            parts.append(f"{_human(self.done, self.unit)}/{_human(self.total, self.unit)}")
        else:
            parts.append(_human(self.done, self.unit))
        parts.append(f"{_human(rate, self.unit)}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        else:
            parts.append(f"in {_duration(elapsed)}")
        return "  ".join(parts)

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if not force and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        columns = shutil.get_terminal_size((100, 20)).columns
        text = self.line()[:max(20, columns - 1)]
        self.stream.write("\r" + text.ljust(max(20, columns - 1)))
        self.stream.flush()
