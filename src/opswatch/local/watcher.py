"""watchdog → events on a queue, and nothing else.

The handler runs on watchdog's thread and must stay cheap: it turns each filesystem event into
``Change``s (or a folder to rescan / a folder that vanished) relative to ``local.root`` and
enqueues them. Deciding what they mean is the engine's job.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_ATTRIB,
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from opswatch.errors import OpswatchError
from opswatch.local._compat import OVERFLOW_LOGGERS, is_overflow, wrap_inotify_check
from opswatch.model import Change, ChangeKind

INOTIFY_HINT = " (raise the limit: sysctl fs.inotify.max_user_watches / max_user_instances)"


@dataclass(frozen=True)
class FolderAppeared:
    """A folder was created or moved in: its files are not announced one by one."""

    path: str


@dataclass(frozen=True)
class FolderGone:
    """A folder was deleted or moved away: every file below it is gone."""

    path: str


@dataclass(frozen=True)
class EventsLost:
    """The kernel dropped events (inotify queue overflow): only a full reconcile can tell."""

    reason: str


class _OverflowHook(logging.Handler):
    """Turns watchdog's "queue overflowed" log record into an ``EventsLost`` on the queue."""

    def __init__(self, sink: queue.SimpleQueue[object]) -> None:
        super().__init__(logging.WARNING)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if is_overflow(record):
            self._sink.put(EventsLost("inotify queue overflowed"))


# Only what the handler uses, so the kernel never reports the rest. Above all no "opened" or
# "closed without writing": opswatch reads every file it uploads, and those events would cost
# watchdog's threads CPU (3 hand-offs each) in the middle of the upload of a burst.
_WANTED: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileAttribEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]

_KINDS = {
    EVENT_TYPE_CREATED: ChangeKind.CREATED,
    EVENT_TYPE_MODIFIED: ChangeKind.MODIFIED,
    EVENT_TYPE_CLOSED: ChangeKind.MODIFIED,
    EVENT_TYPE_ATTRIB: ChangeKind.MODIFIED,  # chmod +x must reach the server too
    EVENT_TYPE_DELETED: ChangeKind.DELETED,
}


class _Handler(FileSystemEventHandler):
    def __init__(self, root: str, sink: queue.SimpleQueue[object]) -> None:
        self._prefix = root.rstrip(os.sep) + os.sep
        self._sink = sink

    def _relative(self, path: str | bytes) -> str | None:
        text = os.fsdecode(path)
        if not text.startswith(self._prefix):
            return None
        return text[len(self._prefix) :].replace(os.sep, "/")

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type == EVENT_TYPE_MOVED:
            self._moved(event)
            return
        kind = _KINDS.get(event.event_type)
        path = self._relative(event.src_path)
        if kind is None or not path:
            return
        if not event.is_directory:
            self._sink.put(Change(path, kind))
        elif kind is ChangeKind.CREATED:
            self._sink.put(FolderAppeared(path))
        elif kind is ChangeKind.DELETED:
            self._sink.put(FolderGone(path))

    def _moved(self, event: FileSystemEvent) -> None:
        source = self._relative(event.src_path)
        dest = self._relative(event.dest_path)
        if event.is_directory:
            if source:
                self._sink.put(FolderGone(source))
            if dest:
                self._sink.put(FolderAppeared(dest))
            return
        if source:
            self._sink.put(Change(source, ChangeKind.DELETED))
        if dest:
            self._sink.put(Change(dest, ChangeKind.CREATED))


# Once events stream in (a checkout, a build), watchdog's reader waits this long before each
# read, so it takes them by the hundred instead of waking once per event: waking per event cost
# the writer of a 500-file burst about as much time as the writes themselves (measured: 1 ms
# here brings the writer back to its unwatched speed and halves watchdog's CPU). A lone save's
# few events do not count as a stream and are read at once.
READ_LINGER_S = 0.001
STREAM_READS = 4  # reads less than STREAM_GAP_S apart before lingering starts
STREAM_GAP_S = 0.002


class _Lingering:
    """Wraps watchdog's "can the inotify fd be read?" check with the linger described above."""

    def __init__(self, check: Callable[[], bool]) -> None:
        self._check = check
        self._last = 0.0
        self._streak = 0

    def __call__(self) -> bool:
        ready = self._check()
        if ready:
            now = time.monotonic()
            self._streak = self._streak + 1 if now - self._last < STREAM_GAP_S else 0
            self._last = now
            if self._streak >= STREAM_READS:
                time.sleep(READ_LINGER_S)
        return ready


def _existing(root: Path, folder: str) -> Path:
    """The folder itself, or its nearest existing ancestor (a rule may name a folder to come)."""
    path = root / folder
    while not path.is_dir() and path != root:
        path = path.parent
    return path


class Watcher:
    def __init__(self, root: Path, folders: tuple[str, ...], sink: queue.SimpleQueue[object]):
        self.root = root
        self.folders = folders
        self._handler = _Handler(str(root), sink)
        self._overflow = _OverflowHook(sink)
        self._observer: BaseObserver | None = None

    def start(self) -> None:
        for name in OVERFLOW_LOGGERS:
            logger = logging.getLogger(name)
            # A quieter log level must not hide the overflow from us.
            if logger.getEffectiveLevel() > logging.WARNING:
                logger.setLevel(logging.WARNING)
            logger.addHandler(self._overflow)
        observer = Observer()
        wrap_inotify_check(observer, _Lingering)
        for path in sorted({_existing(self.root, f) for f in self.folders}):
            observer.schedule(self._handler, str(path), recursive=True, event_filter=_WANTED)
        observer.daemon = True
        try:
            observer.start()
        except OSError as exc:  # inotify's limits, mostly: a start-up error, said in one line
            hint = INOTIFY_HINT if exc.errno in (errno.ENOSPC, errno.EMFILE) else ""
            raise OpswatchError(f"cannot watch {self.root}: {exc.strerror or exc}{hint}") from None
        self._observer = observer

    def stop(self) -> None:
        for name in OVERFLOW_LOGGERS:
            logging.getLogger(name).removeHandler(self._overflow)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
