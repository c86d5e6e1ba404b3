"""The status builder: the engine's pieces in, the documented ``Status`` out.

Built on the engine thread after every unit of work and published as one immutable snapshot, so
``opswatch status`` answers from any thread without waiting for the engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from opswatch.daemon.guard import Fault, Guard, Unit
from opswatch.model import RebuildResult, State, Status, tail_text
from opswatch.model import iso_time as iso

if TYPE_CHECKING:  # for annotations only
    from opswatch.daemon.history import HistoryKeeper
    from opswatch.daemon.link import LinkKeeper
    from opswatch.daemon.pause import PauseStore
    from opswatch.daemon.sender import Sender


class StatusBuilder:
    def __init__(
        self,
        *,
        host: str,
        config: str,
        connected: Callable[[], bool],
        sender: Sender,
        pause: PauseStore,
        link: LinkKeeper,
        guard: Guard,
        rebuilds: Mapping[str, RebuildResult],
        build_gaps: Callable[[], tuple[dict[str, object], ...]] = tuple,
        history: HistoryKeeper | None = None,
    ) -> None:
        self.host = host
        self.config = config
        self.connected = connected
        self.sender = sender
        self.pause = pause
        self.link = link
        self.guard = guard
        self.rebuilds = rebuilds
        self.build_gaps = build_gaps
        self.history = history

    def build(self) -> Status:
        # A fault of the status build itself shows only in the fallback below: a build that
        # gets this far has none.
        faults = self.guard.faults(excluding=Unit.STATUS)
        sender = self.sender
        return Status(
            state=self._state(faults),
            connected=self.connected(),
            host=self.host,
            pending_paths=sender.pending_paths(),
            last_sync=iso(sender.last_sync),
            last_error=_capped(faults[-1].message if faults else self.link.error or sender.error),
            paused_until=iso(self.pause.ends_at),
            uploaded=sender.uploaded,
            removed=sender.removed,
            removed_folders=sender.removed_folders,
            connected_since=iso(self.link.connected_since),
            rebuilds=tuple(self.rebuilds.values()),
            conflicts=sender.conflicts,
            held_paths=sender.hold.paths,
            held_reason=sender.hold.reason,
            build_gaps=self.build_gaps(),
            refused=tuple(sender.refused.values()),
            reconciles=sender.reconciles,
            last_reconcile=iso(sender.last_reconcile),
            last_batch=self.history.last_batch if self.history else None,
            rolled_back=self.history.rolled_back if self.history else (),
            pid=os.getpid(),
            config=self.config,
        )

    def fallback(self, fault: Fault) -> Status:
        """What to publish when ``build`` itself failed: little, but true, and it says why."""
        return Status(
            state=State.ERROR,
            connected=self.connected(),
            host=self.host,
            last_error=fault.message,
            pid=os.getpid(),
            config=self.config,
        )

    def _state(self, faults: list[Fault]) -> State:
        if self.pause.paused():
            return State.PAUSED
        if self.link.fatal or faults:
            return State.ERROR
        if not self.connected():
            return State.OFFLINE
        if self.sender.hold.batch is not None:
            return State.HELD
        return State.SYNCING if self.sender.syncing else State.WATCHING


def _capped(text: str | None) -> str | None:
    return tail_text(text) if text else None
