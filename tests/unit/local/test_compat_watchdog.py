"""What local/_compat.py borrows from watchdog still works as borrowed: these fail on an
upgrade that changes it, instead of a watcher that silently reads slower or misses an overflow."""

from __future__ import annotations

import logging
import queue
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent

from helpers import wait_until
from opswatch.local import _compat
from opswatch.local.watcher import EventsLost, Watcher
from opswatch.model import Change

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the borrowed internals are those of the inotify observer"
)


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[tuple[Watcher, queue.SimpleQueue[object]]]:
    sink: queue.SimpleQueue[object] = queue.SimpleQueue()
    started = Watcher(tmp_path, ("",), sink)
    started.start()
    yield started, sink
    started.stop()


def drained(sink: queue.SimpleQueue[object]) -> list[object]:
    items = []
    while not sink.empty():
        items.append(sink.get_nowait())
    return items


def test_the_inotify_reader_check_is_wrapped_and_asked_before_each_read(tmp_path: Path) -> None:
    asked: list[bool] = []

    def counting(check: _compat.ReadyCheck) -> _compat.ReadyCheck:
        def wrapped() -> bool:
            ready = check()
            asked.append(ready)
            return ready

        return wrapped

    observer = Observer()
    assert _compat.wrap_inotify_check(observer, counting)
    sink: queue.SimpleQueue[object] = queue.SimpleQueue()

    class Forward(FileSystemEventHandler):
        def on_any_event(self, event: object) -> None:
            sink.put(event)

    observer.schedule(Forward(), str(tmp_path), recursive=True)
    observer.start()
    try:
        (tmp_path / "a.txt").write_text("x")
        wait_until(lambda: not sink.empty(), timeout=10, message="an event")
        assert True in asked  # the events came through our check
    finally:
        observer.stop()
        observer.join(timeout=5)


def test_an_overflow_watchdog_logs_becomes_events_lost(
    watcher: tuple[Watcher, queue.SimpleQueue[object]],
) -> None:
    started, sink = watcher
    observer = started._observer
    reader = getattr(observer, "_inotify_fd", None)
    assert reader is not None, "watchdog's Linux observer no longer has the _inotify_fd reader"
    overflow = InotifyEvent(-1, InotifyConstants.IN_Q_OVERFLOW, 0, b"")
    reader.handle_event(overflow)  # what its thread does when the kernel reports an overflow
    lost = [i for i in drained(sink) if isinstance(i, EventsLost)]
    assert lost, "watchdog no longer logs the overflow where the watcher listens"


def test_the_overflow_loggers_are_watchdogs_own() -> None:
    import watchdog.observers.inotify as inotify
    import watchdog.observers.inotify_c as inotify_c

    assert {inotify.logger.name, inotify_c.logger.name} == set(_compat.OVERFLOW_LOGGERS)


def test_other_records_are_not_taken_for_an_overflow() -> None:
    name = "watchdog.observers.inotify_c"
    record = logging.LogRecord(name, logging.WARNING, "", 0, "Inotify watch added", (), None)
    assert not _compat.is_overflow(record)


def test_changes_still_arrive_through_the_wrapped_reader(
    watcher: tuple[Watcher, queue.SimpleQueue[object]], tmp_path: Path
) -> None:
    _, sink = watcher
    (tmp_path / "b.txt").write_text("x")
    seen: list[object] = []

    def arrived() -> bool:
        seen.extend(drained(sink))
        return any(isinstance(i, Change) and i.path == "b.txt" for i in seen)

    wait_until(arrived, timeout=10, message="b.txt")
