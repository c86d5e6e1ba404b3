"""Progress on long work: one redrawn line on a terminal, a periodic log line otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

import structlog

log = structlog.get_logger("opswatch.progress")

LOG_EVERY_S = 2.0
DRAW_EVERY_S = 0.1  # a terminal redrawn more often only costs time
BAR_WIDTH = 30
CLEAR_LINE = "\r\x1b[K"


@contextmanager
def progress_bar(
    label: str, total: int, *, enabled: bool = True, log_only: bool = False
) -> Iterator[Callable[[int, int], None]]:
    """Yields ``advance(done, total)``; shows nothing for small jobs.

    ``log_only`` always logs (the daemon: a bar would tangle with its log lines on a terminal).
    """
    if not enabled or total < 20:
        yield lambda done, total: None
        return
    if not log_only and sys.stderr.isatty():
        with terminal_line(label, sys.stderr) as draw:
            yield draw
        return
    last = [time.monotonic()]

    def advance(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= LOG_EVERY_S or done == total:
            last[0] = now
            log.info("progress", task=label, done=done, total=total)

    yield advance


@contextmanager
def terminal_line(label: str, stream: TextIO) -> Iterator[Callable[[int, int], None]]:
    """``label [#####.....] done/total``, redrawn in place and wiped when the work ends."""
    last = [0.0]

    def advance(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < DRAW_EVERY_S and done != total:
            return
        last[0] = now
        filled = BAR_WIDTH * done // max(total, 1)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        stream.write(f"{CLEAR_LINE}{label} [{bar}] {done}/{total}")
        stream.flush()

    try:
        yield advance
    finally:
        stream.write(CLEAR_LINE)
        stream.flush()
