"""Grouping changes into batches: a quiet period, and a cap on how long a batch may wait.

Semantics, exactly: a batch is due when no change arrived for ``quiet`` seconds, or when its
oldest change has waited ``max_wait`` seconds while changes keep coming. Several changes to one
path coalesce into one; a path created and deleted again inside the same batch is dropped.
The clock is injected: every method takes ``now`` (seconds, monotonic).
"""

from __future__ import annotations

from opswatch.model import Batch, Change, ChangeKind


def coalesce(first: ChangeKind, then: ChangeKind) -> ChangeKind | None:
    """The net effect of ``first`` followed by ``then`` on one path; None when nothing is left."""
    if then is ChangeKind.DELETED:
        return None if first is ChangeKind.CREATED else ChangeKind.DELETED
    if first is ChangeKind.DELETED:
        return ChangeKind.MODIFIED  # deleted, then back: the remote copy may differ
    return first  # created or modified, then written again


class Debouncer:
    def __init__(self, quiet: float, max_wait: float) -> None:
        self.quiet = quiet
        self.max_wait = max(max_wait, quiet)
        self._pending: dict[str, ChangeKind] = {}
        self._first_at: float | None = None
        self._last_at: float | None = None

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(self._pending)

    def add(self, change: Change, now: float) -> None:
        previous = self._pending.pop(change.path, None)
        kind = change.kind if previous is None else coalesce(previous, change.kind)
        if kind is not None:
            self._pending[change.path] = kind
        if self._first_at is None:
            self._first_at = now
        self._last_at = now
        if not self._pending:
            self._first_at = self._last_at = None

    def deadline(self) -> float | None:
        """When the pending batch becomes due, or None when nothing is pending."""
        if self._first_at is None or self._last_at is None:
            return None
        return min(self._last_at + self.quiet, self._first_at + self.max_wait)

    def due(self, now: float) -> Batch | None:
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return None
        return self.take()

    def take(self) -> Batch | None:
        """Everything pending, now, skipping the quiet period (``opswatch flush``)."""
        if not self._pending:
            return None
        batch = Batch(tuple(Change(path, kind) for path, kind in self._pending.items()))
        self._pending.clear()
        self._first_at = self._last_at = None
        return batch
