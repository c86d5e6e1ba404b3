"""The pause flag: whether sending is paused and until when, kept in the state folder so that a
restart does not silently resume.

The file is read defensively. One that can't be read, is not JSON, has the wrong shape or is
absurd (a time that is not a number, a pause reaching more than ``MAX_PAUSE_S`` ahead) is
discarded with one warning: a bad flag must never keep the daemon from starting. A flag that
can't be written (a full disk) holds until the process ends, and a warning says so.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path

import structlog

from opswatch.paths import write_atomically

log = structlog.get_logger("opswatch.daemon")

MAX_PAUSE_S = 365 * 86400.0  # a pause request is bounded by this too (daemon.requests)
FOREVER = math.inf  # paused until `opswatch resume`
MAX_FILE_BYTES = 4096  # the flag is one short JSON object; anything bigger is not ours
CLOCK_SLACK_S = 3600.0  # a flag written just before the wall clock stepped back a little


class PauseStore:
    def __init__(self, path: Path, wall: Callable[[], float]) -> None:
        self.path = path
        self.wall = wall
        self.until: float | None = self._load()  # wall clock; FOREVER until resumed

    def paused(self) -> bool:
        """Whether sending is paused now; a timed pause that ran out ends here."""
        if self.until is None:
            return False
        if self.wall() < self.until:
            return True
        self.until = None
        self._save()
        log.info("resumed", reason="pause expired")
        return False

    @property
    def ends_at(self) -> float | None:
        """When a timed pause ends (wall clock); None when not paused or paused until resumed."""
        return None if self.until is None or self.until == FOREVER else self.until

    def pause(self, seconds: float | None) -> None:
        """Pause for ``seconds`` (bounded by the caller), or until ``resume`` when None."""
        self.until = FOREVER if seconds is None else self.wall() + seconds
        self._save()

    def resume(self) -> bool:
        """End the pause; whether there was one."""
        was_paused = self.until is not None
        self.until = None
        self._save()
        return was_paused

    # -- the file -------------------------------------------------------------------------------

    def _load(self) -> float | None:
        try:
            return self._read()
        except _Unusable as exc:
            log.warning("pause_flag_discarded", file=str(self.path), reason=str(exc), paused=False)
            with contextlib.suppress(OSError):  # a folder in its place stays; the warning said why
                self.path.unlink()
            return None

    def _read(self) -> float | None:
        try:
            raw = _read_small_file(self.path, MAX_FILE_BYTES)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _Unusable(f"it can't be read ({exc.strerror or exc})") from None
        if raw is None:
            raise _Unusable(f"it is not a regular file of at most {MAX_FILE_BYTES} bytes")
        try:
            saved = json.loads(raw)
        except (ValueError, RecursionError):
            raise _Unusable("it is not JSON") from None
        if not isinstance(saved, dict) or set(saved) != {"until"}:
            raise _Unusable('it is not {"until": …}')
        until = saved["until"]
        if until is None:
            return FOREVER
        if isinstance(until, bool) or not isinstance(until, int | float):
            raise _Unusable("`until` is not a time")
        now = self.wall()
        if not until <= now + MAX_PAUSE_S + CLOCK_SLACK_S:  # NaN fails this too
            raise _Unusable("`until` is more than a year ahead")
        if until <= now:  # ran out while the daemon was down
            self._write(None)
            return None
        return float(until)

    def _save(self) -> None:
        self._write(self.until)

    def _write(self, until: float | None) -> None:
        try:
            if until is None:
                self.path.unlink(missing_ok=True)
                return
            write_atomically(self.path, json.dumps({"until": None if until == FOREVER else until}))
        except OSError as exc:
            after_restart = "paused" if until is None else "not paused"
            log.warning(
                "pause_flag_not_saved",
                file=str(self.path),
                error=exc.strerror or str(exc),
                detail=f"in effect until opswatch stops; after a restart it is {after_restart}",
            )


class _Unusable(Exception):
    """Why the flag on disk can't be used."""


def _read_small_file(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file of at most ``limit`` bytes, else None. Never follows a
    symlink and never blocks on a FIFO someone put in its place."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    return data if len(data) <= limit else None
