"""Is a service up after ``up``? Its health URL requested from here, like ``curl -I``.

HEAD first; a server that does not do HEAD (405, 501) is asked with GET. Any status below 500
counts as up (a redirect or a 401 means the service answers), as does nothing else: connection
refused, a timeout or a 5xx is tried again, with backoff, until ``timeout`` seconds passed.
Redirects are not followed, as ``curl -I`` does not follow them.

``timeout`` is a deadline for the whole check, not per read: a server that sends one byte
every few seconds would keep a per-read timeout waiting for ever, so each request runs with a
timer that shuts its socket down when the deadline comes, whatever the request is waiting for.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 5.0
REQUEST_TIMEOUT_S = 10.0
MIN_REQUEST_S = 0.05  # the last try still gets a chance to connect
NO_HEAD = (405, 501)


def request_status(url: str, method: str, timeout: float) -> int:
    """The HTTP status ``url`` answers ``method`` with, within ``timeout`` seconds in all
    (connect, headers and all); network failures and the deadline raise ``OSError``."""
    parts = urllib.parse.urlsplit(url)  # ValueError on a malformed URL
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url}")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=timeout)
    fired = threading.Event()
    cut = threading.Timer(timeout, _cut, args=(conn, fired))
    cut.daemon = True
    cut.start()
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn.request(method, target, headers={"User-Agent": "opswatch", "Connection": "close"})
        status = int(conn.getresponse().status)
    finally:
        cut.cancel()
        conn.close()
    if fired.is_set():  # a cut mid-headers reads as their end: the answer was not complete
        raise TimeoutError(f"no complete answer within {timeout:g} s")
    return status


def _cut(conn: http.client.HTTPConnection, fired: threading.Event) -> None:
    """The deadline: a blocked connect, send or read returns at once."""
    fired.set()
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _try(url: str, deadline: float, clock: Callable[[], float]) -> tuple[int | None, str]:
    def left() -> float:
        return max(MIN_REQUEST_S, min(REQUEST_TIMEOUT_S, deadline - clock()))

    try:
        status = request_status(url, "HEAD", left())
        if status in NO_HEAD:
            status = request_status(url, "GET", left())
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return None, str(exc) or type(exc).__name__
    return status, f"HTTP {status}"


@dataclass(frozen=True)
class HealthAnswer:
    ok: bool
    said: str  # the last answer, short: "HTTP 502", "connection refused"
    detail: str  # with the URL and the tries


def check_health(
    url: str,
    timeout: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[bool, str]:
    """(up, what it answered); asks until a status below 500 or ``timeout`` seconds passed."""
    answer = ask_health(url, timeout, sleep=sleep, clock=clock)
    return answer.ok, answer.detail


def ask_health(
    url: str,
    timeout: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> HealthAnswer:
    """``check_health`` with the last answer on its own (what a rollback notice names)."""
    deadline = clock() + timeout
    delay = FIRST_DELAY_S
    tries = 0
    while True:
        tries += 1
        status, said = _try(url, deadline, clock)
        if status is not None and status < 500:
            return HealthAnswer(True, said, f"{url} answered {said} (try {tries})")
        remaining = deadline - clock()
        if remaining <= 0:
            return HealthAnswer(False, said, f"{url}: {said} after {tries} tries in {timeout:g} s")
        sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_DELAY_S)
