"""The debouncer: quiet period, cap, coalescing; with an injected clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from opswatch.core.debounce import Debouncer
from opswatch.model import Change, ChangeKind

C, M, D = ChangeKind.CREATED, ChangeKind.MODIFIED, ChangeKind.DELETED


def test_a_batch_waits_for_the_quiet_period() -> None:
    deb = Debouncer(quiet=0.3, max_wait=2.0)
    deb.add(Change("a", M), now=10.0)
    assert deb.due(10.29) is None
    batch = deb.due(10.3)
    assert batch is not None and batch.paths == ("a",)
    assert deb.due(20.0) is None


def test_several_writes_become_one_upload() -> None:
    deb = Debouncer(quiet=0.3, max_wait=2.0)
    for i in range(5):
        deb.add(Change("a", M), now=10.0 + i * 0.1)
    batch = deb.due(11.0)
    assert batch is not None and batch.changes == (Change("a", M),)


def test_create_then_delete_is_nothing() -> None:
    deb = Debouncer(quiet=0.3, max_wait=2.0)
    deb.add(Change("a", C), now=1.0)
    deb.add(Change("a", D), now=1.1)
    assert deb.due(5.0) is None
    assert len(deb) == 0


def test_delete_then_create_is_a_modification() -> None:
    # vim's default save: rename the file away, write a new one.
    deb = Debouncer(quiet=0.3, max_wait=2.0)
    deb.add(Change("a", D), now=1.0)
    deb.add(Change("a", C), now=1.01)
    batch = deb.take()
    assert batch is not None and batch.changes == (Change("a", M),)


def test_the_cap_holds_under_continuous_writes() -> None:
    deb = Debouncer(quiet=0.3, max_wait=2.0)
    now = 0.0
    while deb.due(now) is None:
        deb.add(Change("a", M), now)
        now += 0.1
        assert now <= 2.0 + 1e-9
    assert now >= 2.0 - 1e-9


def test_take_skips_the_quiet_period() -> None:
    deb = Debouncer(quiet=10, max_wait=10)
    deb.add(Change("a", M), now=0.0)
    batch = deb.take()
    assert batch is not None and batch.paths == ("a",)


events = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d/e"]), st.sampled_from([C, M, D]), st.floats(0, 0.5)
    ),
    max_size=40,
)


@given(events)
def test_no_path_is_ever_dropped(sequence: list[tuple[str, ChangeKind, float]]) -> None:
    """Every path whose net effect is not "created then deleted" comes out exactly once."""
    deb = Debouncer(quiet=0.3, max_wait=2.0)
    now = 0.0
    seen: list[str] = []
    first: dict[str, ChangeKind] = {}
    last: dict[str, ChangeKind] = {}
    for path, kind, gap in sequence:
        now += gap
        batch = deb.due(now)
        if batch:
            seen.extend(batch.paths)
            first.clear()
        deb.add(Change(path, kind), now)
        first.setdefault(path, kind)
        last[path] = kind
    batch = deb.due(now + 2.0)
    seen.extend(batch.paths if batch else ())
    assert len(deb) == 0
    for path in last:
        assert path in seen or (first.get(path) is C and last[path] is D) or path not in first, path


@given(events)
def test_a_due_batch_never_waits_past_the_cap(
    sequence: list[tuple[str, ChangeKind, float]],
) -> None:
    deb = Debouncer(quiet=0.3, max_wait=2.0)
    now = 0.0
    opened: float | None = None
    for path, kind, gap in sequence:
        now += gap
        if deb.due(now):
            opened = None
        deb.add(Change(path, kind), now)
        if len(deb) and opened is None:
            opened = now
        if len(deb) == 0:
            opened = None
        deadline = deb.deadline()
        if deadline is not None and opened is not None:
            assert deadline <= opened + 2.0 + 1e-9
