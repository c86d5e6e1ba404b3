"""The guard around each unit of the engine's work: an unexpected exception costs that unit only.

A unit is one watcher event, one batch, one file, one reconcile, what follows a batch (choosing
rebuilds), one control request, one rebuild result, one status build, one turn of keeping the
connection. When one raises something no code
expected (a bug, a library surprise), the guard logs it with its traceback, once, and keeps it as
a *fault* until a unit of the same kind (the same file, for a file) completes again. While any
fault persists, ``status`` says ``error`` and shows it in ``last_error``; the engine goes on.

What a crashed unit leaves undone is the caller's to keep: a batch's files wait in ``failed`` and
are retried, a lost watcher event is made up by a reconcile. The guard only records and tells.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

log = structlog.get_logger("opswatch.daemon")

T = TypeVar("T")


class Unit(enum.Enum):
    CONNECTION = "keeping the connection"
    EVENT = "a watcher event"
    BATCH = "a batch"
    FILE = "a file"
    RECONCILE = "a reconcile"
    AFTER_BATCH = "what follows a batch (rebuilds)"
    REQUEST = "a control request"
    REBUILD_RESULT = "a rebuild result"
    STATUS = "the status"
    LOOP = "the engine loop"
    RELOAD = "watching the config file"


@dataclass(frozen=True)
class Fault:
    unit: Unit
    subject: str | None  # the file's path, the request's command; None for the unit kind as such
    error: str  # "TypeError: …"

    @property
    def message(self) -> str:
        """One line for ``status``: where it happened and what, with a pointer to the traceback."""
        where = self.unit.value + (f" ({self.subject})" if self.subject else "")
        return f"internal error in {where}: {self.error} (traceback in the log)"


def describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())  # one line, whatever the exception carried
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Guard:
    """The faults that persist, newest last. Owned by the engine thread."""

    def __init__(self) -> None:
        self._faults: dict[tuple[Unit, str | None], Fault] = {}

    def record(self, unit: Unit, exc: BaseException, subject: str | None = None) -> Fault:
        """Keep ``exc`` as the fault of ``unit``; log it with its traceback unless it is the same
        fault again (a file that crashes at every retry is logged once, not every 30 s)."""
        key = (unit, subject)
        fault = Fault(unit, subject, describe(exc))
        previous = self._faults.pop(key, None)
        if previous != fault:
            log.error(
                "internal_error",
                unit=unit.name.lower(),
                subject=subject,
                error=fault.error,
                exc_info=exc,
            )
        self._faults[key] = fault
        return fault

    def clear(self, unit: Unit, subject: str | None = None) -> None:
        """A unit of this kind (for this subject) completed: its fault no longer persists."""
        if self._faults.pop((unit, subject), None) is not None:
            log.info("internal_error_cleared", unit=unit.name.lower(), subject=subject)

    def run(self, unit: Unit, work: Callable[[], T], subject: str | None = None) -> T | None:
        """``work()`` under the guard: its result, or None when it raised (recorded)."""
        try:
            result = work()
        except Exception as exc:
            self.record(unit, exc, subject)
            return None
        self.clear(unit, subject)
        return result

    def faults(self, *, excluding: Unit | None = None) -> list[Fault]:
        return [f for f in self._faults.values() if f.unit is not excluding]

    def __contains__(self, unit: Unit) -> bool:
        return any(key[0] is unit for key in self._faults)
