"""Is a service up after ``up``? Its health URL requested from here, like ``curl -I``.

HEAD first; a server that does not do HEAD (405, 501) is asked with GET. Any status below 500
counts as up (a redirect or a 401 means the service answers), as does nothing else: connection
refused, a timeout or a 5xx is tried again, with backoff, until ``timeout`` seconds passed.
Redirects are not followed, as ``curl -I`` does not follow them.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 5.0
REQUEST_TIMEOUT_S = 10.0
NO_HEAD = (405, 501)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx itself is the answer


_OPENER = urllib.request.build_opener(_NoRedirect)


def request_status(url: str, method: str, timeout: float) -> int:
    """The HTTP status ``url`` answers ``method`` with; network failures raise ``OSError``."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    # S310: the scheme is checked just above; file: and custom schemes never get here.
    request = urllib.request.Request(url, method=method, headers={"User-Agent": "opswatch"})  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        try:
            return exc.code
        finally:
            exc.close()


def _try(url: str, timeout: float) -> tuple[int | None, str]:
    try:
        status = request_status(url, "HEAD", timeout)
        if status in NO_HEAD:
            status = request_status(url, "GET", timeout)
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        return None, str(reason) or type(exc).__name__
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
        remaining = deadline - clock()
        status, said = _try(url, max(1.0, min(REQUEST_TIMEOUT_S, remaining)))
        if status is not None and status < 500:
            return HealthAnswer(True, said, f"{url} answered {said} (try {tries})")
        remaining = deadline - clock()
        if remaining <= 0:
            return HealthAnswer(False, said, f"{url}: {said} after {tries} tries in {timeout:g} s")
        sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_DELAY_S)
