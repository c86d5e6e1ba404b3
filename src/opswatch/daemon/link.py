"""Keeping the one connection up: connect with jittered backoff, probe it, notice a wake-up.

The engine thread calls ``maintain`` once per loop; it says when a (re)connect happened, so the
daemon can reconcile. The clocks are injected, like the debouncer's.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import structlog

from opswatch.errors import OpswatchError, RemoteError
from opswatch.ssh.remote import Remote

log = structlog.get_logger("opswatch.daemon")

BACKOFF_START_S = 1.0
BACKOFF_CAP_S = 60.0
PROBE_INTERVAL_S = 20.0
PROBE_DEADLINE_S = 5.0
# Monotonic time stops while the machine sleeps and wall time does not: a gap this large
# between them since the last loop means we slept, and the old TCP connection is likely dead.
WAKE_JUMP_S = 10.0


class LinkKeeper:
    def __init__(
        self,
        remote: Remote,
        host: str,
        *,
        wall: Callable[[], float],
        probe_interval_s: float = PROBE_INTERVAL_S,
        probe_deadline_s: float = PROBE_DEADLINE_S,
    ) -> None:
        self.remote = remote
        self.host = host
        self.wall = wall
        self.probe_interval_s = probe_interval_s
        self.probe_deadline_s = probe_deadline_s
        self.error: str | None = None  # why we are not connected
        self.fatal = False  # the error is one retrying won't fix (host key, auth)
        self.connected_since: float | None = None  # wall clock
        self.next_connect = 0.0
        self._backoff = BACKOFF_START_S
        self._next_probe = 0.0
        self._last_tick: tuple[float, float] | None = None  # (monotonic, wall) of the last loop

    def maintain(self, now: float) -> tuple[bool, bool]:
        """(connected just now, woke from sleep): both call for a reconcile."""
        woke = self._check_wake(now)
        if self.remote.connected:
            if now >= self._next_probe:
                self._probe(now)
            return False, woke
        if self.connected_since is not None:
            self._lost(now)
        if now < self.next_connect:
            return False, woke
        try:
            self.remote.connect()
        except OpswatchError as exc:
            self.failed(exc, now)
            return False, woke
        self._backoff = BACKOFF_START_S
        self.connected_since = self.wall()
        self.error = None
        self.fatal = False
        self._next_probe = now + self.probe_interval_s
        return True, woke

    def retry_now(self, now: float) -> None:
        """Connect at the next chance, backoff reset (``opswatch trust``, ``flush``, a wake-up)."""
        self.next_connect = now
        self._backoff = BACKOFF_START_S

    def reconnect(self, now: float) -> None:
        """Drop the connection on purpose and make a new one at once (``opswatch trust``)."""
        self.remote.close()
        self.connected_since = None
        self.retry_now(now)

    def failed(self, exc: OpswatchError, now: float) -> None:
        """A connect, probe or transfer failed on the link itself: back off and retry."""
        retryable = isinstance(exc, RemoteError) and exc.retryable
        if str(exc) != self.error:
            log.warning("disconnected" if retryable else "error", error=str(exc))
        self.error = str(exc)
        self.fatal = not retryable
        self.connected_since = None
        delay = self._backoff if retryable else BACKOFF_CAP_S
        self.next_connect = now + delay * random.uniform(0.8, 1.2)  # noqa: S311 (jitter)
        self._backoff = min(self._backoff * 2, BACKOFF_CAP_S)

    def _lost(self, now: float) -> None:
        """The transport died between operations (server restarted, network gone)."""
        self.error = f"connection to {self.host} lost"
        log.warning("disconnected", error=self.error)
        self.connected_since = None
        self.remote.close()
        self.next_connect = now  # once at once; then the backoff applies

    def _check_wake(self, now: float) -> bool:
        wall = self.wall()
        last, self._last_tick = self._last_tick, (now, wall)
        if last is None:
            return False
        slept = (wall - last[1]) - (now - last[0])
        if slept <= WAKE_JUMP_S:
            return False
        log.info("woke", slept_s=round(slept), action="reconnect")
        if self.remote.connected:
            self._lost(now)
        self.retry_now(now)
        return True

    def _probe(self, now: float) -> None:
        try:
            self.remote.probe(self.probe_deadline_s)
        except OpswatchError as exc:
            self.failed(exc, now)
            return
        self._next_probe = now + self.probe_interval_s
