"""The deploy history in the daemon: the recorder the syncer writes each landed batch to, what
``status`` shows of it (``last_batch``, ``rolled_back``), and undo and rollback. Engine thread
only, except ``files_for`` (the history's store is thread-safe).

``last_batch`` and ``rolled_back`` are read from the store once per batch, undo or flush, not at
every status build: status is published after every watcher event. A history that can't be
opened costs the history (status shows none, undo says why), never the syncing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from opswatch.errors import HistoryError
from opswatch.local.manifest import Manifest
from opswatch.model import RebuildResult
from opswatch.ssh.remote import Remote
from opswatch.sync.recording import Recorder, batch_summary
from opswatch.sync.undo import Undoer

UNAVAILABLE = "the deploy history is not available (see the log)"


class HistoryKeeper:
    def __init__(
        self, recorder: Recorder | None, remote: Remote, manifest: Manifest, root: Path
    ) -> None:
        self.recorder = recorder
        self.remote = remote
        self.manifest = manifest
        self.root = root
        self.last_batch: dict[str, object] | None = None
        self.rolled_back: tuple[str, ...] = ()
        self.refresh()

    def refresh(self) -> None:
        """Read ``last_batch`` and the rolled-back files again (after the history changed)."""
        if self.recorder is None:
            self.last_batch, self.rolled_back = None, ()
            return
        self.last_batch = batch_summary(self.recorder.history)
        marks = self.recorder.rolled_back()
        self.rolled_back = tuple(sorted({m.local for m in marks.values()}))

    def release_rolled_back(self) -> list[str]:
        """The local files an undo held back, no longer held (``flush`` sends them)."""
        if self.recorder is None:
            return []
        released = self.recorder.take_rolled_back()
        self.refresh()
        return released

    def rebuilt(self, result: RebuildResult) -> None:
        """A rebuild's result goes into the record of the batch that caused it."""
        if self.recorder is not None and result.batch is not None:
            self.recorder.rebuilt(result.batch, result)

    def undoer(self) -> Undoer:
        """Who puts a batch's files back; ``HistoryError`` without a history."""
        if self.recorder is None:
            raise HistoryError(UNAVAILABLE)
        return Undoer(self.recorder.history, self.remote, self.manifest, self.root)

    def roll_back(self, batch: int, paths: Sequence[str]) -> str:
        """A failed health check's rollback of ``paths`` of ``batch``; says to what
        ("batch 41", or "the version before batch 42")."""
        undoer = self.undoer()
        done = undoer.undo(batch, only=paths, kind="rollback")
        self.refresh()
        earlier = undoer.history.earlier_change(batch, [*done.restored, *done.removed])
        return f"batch {earlier}" if earlier else f"the version before batch {batch}"

    def files_for(self, batch: int, wanted: Callable[[str], bool]) -> list[str]:
        """The local paths of ``batch`` that ``wanted`` picks (on the rebuild worker's thread)."""
        record = self.recorder.history.get(batch) if self.recorder is not None else None
        if record is None:
            raise HistoryError(f"batch {batch} is not in the deploy history")
        return [f.local for f in record.files if wanted(f.local)]

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.history.close()
