"""Progress on long work: a rich bar on a terminal, a periodic log line otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

log = structlog.get_logger("opswatch.progress")

LOG_EVERY_S = 2.0


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
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(label, total=total)
            yield lambda done, total: bar.update(task, completed=done, total=total)
        return
    last = [time.monotonic()]

    def advance(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= LOG_EVERY_S or done == total:
            last[0] = now
            log.info("progress", task=label, done=done, total=total)

    yield advance
