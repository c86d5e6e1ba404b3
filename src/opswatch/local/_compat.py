"""What opswatch borrows from watchdog's internals, in one place.

tests/unit/local/test_compat_watchdog.py fails loudly when a watchdog upgrade changes any of it.

* The inotify reader's readiness check: watchdog 7's Linux observer reads every event through
  one ``InotifyFD`` thread (``observer._inotify_fd``) that asks ``_check_inotify_fd()`` before
  each read. ``wrap_inotify_check`` wraps that check (the watcher makes it linger during a
  stream of events, so they are read by the hundred).
* An inotify queue overflow: watchdog handles it inside and only logs a warning about it on
  ``OVERFLOW_LOGGERS``, with "overflowed" in the message. ``is_overflow`` tells that record
  from the others, so the watcher can ask for a full reconcile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from watchdog.observers.api import BaseObserver

OVERFLOW_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")
OVERFLOW_WORD = "overflow"

ReadyCheck = Callable[[], bool]


def is_overflow(record: logging.LogRecord) -> bool:
    """Whether watchdog's log record says the kernel dropped events."""
    return OVERFLOW_WORD in record.getMessage().lower()


def wrap_inotify_check(observer: BaseObserver, wrap: Callable[[ReadyCheck], ReadyCheck]) -> bool:
    """Put ``wrap(check)`` in place of the inotify reader's readiness check; False when the
    observer has no such reader (not Linux: nothing to tune)."""
    reader = getattr(observer, "_inotify_fd", None)
    check = getattr(reader, "_check_inotify_fd", None)
    if reader is None or not callable(check):
        return False
    reader._check_inotify_fd = wrap(check)
    return True
