"""LinkKeeper's state machine with a stand-in remote and injected clocks (no server needed:
whether files really arrive is proven by the integration tests against a real sshd)."""

from __future__ import annotations

import itertools

import pytest

from opswatch.daemon.link import BACKOFF_CAP_S, PROBE_INTERVAL_S, WAKE_JUMP_S, LinkKeeper
from opswatch.errors import ChangedHostKeyError, ConnectError, OpswatchError


class StandInRemote:
    def __init__(self) -> None:
        self.connected = False
        self.fail_with: OpswatchError | None = None
        self.probe_fails = False
        self.connects = 0

    def connect(self) -> None:
        self.connects += 1
        if self.fail_with is not None:
            raise self.fail_with
        self.connected = True

    def probe(self, timeout: float) -> None:
        if self.probe_fails:
            self.connected = False
            raise ConnectError("no answer in time")

    def close(self) -> None:
        self.connected = False


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_700_000_000.0

    def advance(self, seconds: float, *, slept: float = 0.0) -> float:
        self.mono += seconds
        self.wall += seconds + slept
        return self.mono


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def remote() -> StandInRemote:
    return StandInRemote()


@pytest.fixture
def link(remote: StandInRemote, clock: Clock) -> LinkKeeper:
    return LinkKeeper(remote, "droplet", wall=lambda: clock.wall)  # type: ignore[arg-type]


def test_connects_once_and_reports_it(link: LinkKeeper, clock: Clock) -> None:
    assert link.maintain(clock.mono) == (True, False)
    assert link.connected_since == clock.wall
    assert link.maintain(clock.advance(1)) == (False, False)
    assert link.error is None


def test_retryable_failures_back_off_exponentially_with_a_cap(
    link: LinkKeeper, remote: StandInRemote, clock: Clock
) -> None:
    remote.fail_with = ConnectError("cannot reach droplet:22: Connection refused")
    delays = []
    for _ in range(10):
        now = clock.mono
        link.maintain(now)
        delays.append(link.next_connect - now)
        clock.mono = link.next_connect
    assert link.error == "cannot reach droplet:22: Connection refused"
    assert not link.fatal
    assert 0.8 <= delays[0] <= 1.2
    assert all(b > a for a, b in itertools.pairwise(delays[:6]))
    assert max(delays) <= BACKOFF_CAP_S * 1.2
    assert remote.connects == 10  # one attempt per due time, never a tight loop


def test_a_changed_host_key_is_fatal_and_retried_only_slowly(
    link: LinkKeeper, remote: StandInRemote, clock: Clock
) -> None:
    remote.fail_with = ChangedHostKeyError("HOST KEY OF droplet HAS CHANGED")
    link.maintain(clock.mono)
    assert link.fatal
    assert link.next_connect - clock.mono >= BACKOFF_CAP_S * 0.8
    remote.fail_with = None
    link.retry_now(clock.mono)  # what `opswatch trust` asks for
    assert link.maintain(clock.mono) == (True, False)
    assert not link.fatal and link.error is None


def test_a_failed_probe_takes_the_link_down_and_reconnects(
    link: LinkKeeper, remote: StandInRemote, clock: Clock
) -> None:
    link.maintain(clock.mono)
    remote.probe_fails = True
    link.maintain(clock.advance(PROBE_INTERVAL_S + 1))
    assert link.error == "no answer in time"
    assert link.connected_since is None
    remote.probe_fails = False
    clock.mono = link.next_connect
    assert link.maintain(clock.mono) == (True, False)


def test_waking_from_sleep_reconnects_at_once(
    link: LinkKeeper, remote: StandInRemote, clock: Clock
) -> None:
    link.maintain(clock.mono)
    assert link.maintain(clock.advance(1, slept=WAKE_JUMP_S + 50)) == (True, True)
    assert remote.connects == 2  # the old TCP connection was dropped, a new one made at once


def test_a_lost_transport_is_noticed_between_operations(
    link: LinkKeeper, remote: StandInRemote, clock: Clock
) -> None:
    link.maintain(clock.mono)
    remote.connected = False  # the server restarted
    assert link.maintain(clock.advance(1)) == (True, False)  # noticed, retried at once
    assert remote.connects == 2
