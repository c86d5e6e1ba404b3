"""Holding a batch back until ``opswatch flush``: one of more than ``sync.hold_over`` files, or
one a branch switch caused (git HEAD moved). Sending it unasked could deploy another branch.
Engine thread only."""

from __future__ import annotations

from pathlib import Path

import structlog

from opswatch.local.gitstate import HeadWatch
from opswatch.model import Batch, Change

log = structlog.get_logger("opswatch.daemon")


class Hold:
    def __init__(self, root: Path, hold_over: int) -> None:
        self.head = HeadWatch(root)
        self.hold_over = hold_over  # 0: never hold
        self.batch: Batch | None = None
        self.reason: str | None = None

    @property
    def paths(self) -> tuple[str, ...]:
        return self.batch.paths if self.batch else ()

    def reason_for(self, batch: Batch) -> str | None:
        """Why ``batch`` must wait for ``flush``, or None when it may go."""
        switched = self.head.moved()  # asked every time, so one switch holds one batch
        if not self.hold_over:
            return None
        if switched:
            return f"git HEAD changed (now {self.head.describe()})"
        if len(batch) > self.hold_over:
            return f"{len(batch)} files at once (sync.hold_over = {self.hold_over})"
        return None

    def keep(self, batch: Batch, reason: str) -> None:
        """Hold ``batch`` too, merged with what is held already (the newest change per path)."""
        changes = {c.path: c for c in (self.batch.changes if self.batch else ())}
        changes.update({c.path: c for c in batch.changes})
        self.batch = Batch(tuple(changes.values()))
        self.reason = reason
        log.warning("held", reason=reason, files=len(self.batch), first=list(self.paths[:5]))

    def release(self) -> tuple[Change, ...]:
        """Everything held, no longer held (``flush``)."""
        changes = self.batch.changes if self.batch else ()
        self.batch = self.reason = None
        return changes

    def settle(self, now_wall: float) -> None:
        """While nothing is pending, accept a HEAD that moved a while ago (``HeadWatch.settle``)."""
        self.head.settle(now_wall)
