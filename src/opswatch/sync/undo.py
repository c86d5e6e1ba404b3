"""Putting the server back as it was before a batch: ``opswatch undo`` and a failed health
check's rollback.

The versions the batch replaced come back from the history's kept bytes, atomically (the same
temp-and-rename upload as any file); files it created are removed. The undo is a batch of its
own in the history (so it can be undone), and the local files it leaves differing from the
server are marked "rolled back": not sent again until edited, or until ``opswatch flush``.

It refuses, naming the files, when the server's copy is no longer what the batch left there
(changed on the server, or by a later batch), unless forced; and always when the earlier
bytes are not known or no longer kept.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from opswatch.errors import OpswatchError
from opswatch.local.content import file_sha256
from opswatch.local.gitstate import GitState, git_state
from opswatch.local.history import History
from opswatch.local.history_records import BatchRecord, FileChange, RolledBack
from opswatch.local.manifest import Manifest
from opswatch.model import Pushed
from opswatch.ssh.remote import Remote
from opswatch.ssh.transfer import UploadJob

log = structlog.get_logger("opswatch.undo")

DEFAULT_MODE = 0o644


class UndoRefused(OpswatchError):
    """The undo would overwrite something it does not know about, or lacks the bytes."""


@dataclass(frozen=True)
class UndoResult:
    undone: int  # the batch put back
    batch: int  # the undo's own batch in the history
    restored: tuple[str, ...]  # remote paths that got their earlier version back
    removed: tuple[str, ...]  # remote paths the batch had created
    locals: tuple[str, ...]  # the local paths concerned (what rebuilds look at)


def pick_batch(history: History, batch: int | None) -> BatchRecord:
    if batch is not None:
        found = history.get(batch)
        if found is None:
            raise UndoRefused(f"no batch {batch} in the deploy history")
        return found
    for record in history.batches(50):
        if record.files:
            return record
    raise UndoRefused("the deploy history is empty: nothing to undo")


class Undoer:
    def __init__(
        self,
        history: History,
        remote: Remote,
        manifest: Manifest,
        root: Path,
        *,
        git: Callable[[Path], GitState] = git_state,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.history = history
        self.remote = remote
        self.manifest = manifest
        self.root = root
        self.git = git
        self.wall = wall

    def undo(
        self,
        batch: int | None,
        *,
        force: bool = False,
        only: Iterable[str] | None = None,
        kind: str = "undo",
    ) -> UndoResult:
        """Undo ``batch`` (default: the newest); ``only`` limits it to these local paths."""
        record = pick_batch(self.history, batch)
        wanted = set(only) if only is not None else None
        files = [f for f in record.files if wanted is None or f.local in wanted]
        if not files:
            raise UndoRefused(f"batch {record.id} changed none of these files")
        self._check_known(files)
        if not force:
            self._check_unchanged(record.id, files)
        return self._carry_out(record, files, kind)

    def _check_known(self, files: Sequence[FileChange]) -> None:
        problems = []
        for change in files:
            if change.created:
                continue
            if change.before is None:
                problems.append(f"{change.remote}: what the server held before is not known")
            elif not self.history.has_blob(change.before):
                problems.append(f"{change.remote}: the earlier version is no longer kept")
        if problems:
            raise UndoRefused("cannot undo: " + "; ".join(problems))

    def _check_unchanged(self, batch: int, files: Sequence[FileChange]) -> None:
        later = self.history.later_changes(batch, [f.remote for f in files])
        problems = [f"{remote} changed by batch {n} since" for remote, n in later.items()]
        there = self.remote.stat_many([f.remote for f in files if f.remote not in later])
        for change in files:
            if change.remote in later:
                continue
            now = self._server_sha(change.remote) if there.get(change.remote) else None
            if now != change.after:
                problems.append(f"{change.remote} changed on the server since")
        if problems:
            raise UndoRefused(
                "not undone (a conflict): " + "; ".join(problems) + " (undo --force overwrites)"
            )

    def _server_sha(self, remote: str) -> str:
        return hashlib.sha256(self.remote.read(remote)).hexdigest()

    def _carry_out(self, record: BatchRecord, files: list[FileChange], kind: str) -> UndoResult:
        now = self.wall()
        mtime_ns = int(now) * 1_000_000_000  # whole seconds: what SFTP carries back in a stat
        restore = [f for f in files if not f.created]
        with tempfile.TemporaryDirectory(dir=self.history.folder) as staging:
            jobs = [self._job(f, Path(staging), mtime_ns) for f in restore]
            outcomes = self.remote.upload_many(jobs) if jobs else []
        failed = [f"{o.job.remote}: {o.error or o.refused}" for o in outcomes if not o.ok]
        landed = {o.job.remote: o for o in outcomes if o.ok}
        restored = [f for f in restore if f.remote in landed]
        removed = []
        for change in (f for f in files if f.created):
            self.remote.remove(change.remote)
            removed.append(change)
        self.manifest.record(self._pushed(f, landed[f.remote].size, mtime_ns) for f in restored)
        self.manifest.forget(f.remote for f in removed)
        done = [*restored, *removed]
        batch = self.history.record(
            kind, now, self.git(self.root), [_reversed(f) for f in done], undoes=record.id
        )
        self.history.clear_rolled_back(f.remote for f in done)
        self.history.mark_rolled_back(self._marks(done, batch))
        log.info(
            "undo", undone=record.id, batch=batch, restored=len(restored), removed=len(removed)
        )
        if failed:
            raise OpswatchError(f"undo of batch {record.id} incomplete: " + "; ".join(failed))
        return UndoResult(
            record.id,
            batch,
            tuple(f.remote for f in restored),
            tuple(f.remote for f in removed),
            tuple(dict.fromkeys(f.local for f in done)),
        )

    def _job(self, change: FileChange, staging: Path, mtime_ns: int) -> UploadJob:
        """The kept version as a file to upload (uploads read from a file, as for any push)."""
        sha = change.before or ""
        data = self.history.blob(sha)
        if data is None:
            raise UndoRefused(f"{change.remote}: the earlier version is no longer kept")
        source = staging / sha
        source.write_bytes(data)
        return UploadJob(source, change.remote, change.mode_before or DEFAULT_MODE, mtime_ns)

    def _pushed(self, change: FileChange, size: int, mtime_ns: int) -> Pushed:
        mode = change.mode_before or DEFAULT_MODE
        sha = change.before or ""
        return Pushed(change.remote, change.local, sha, size, mtime_ns, mode, self.wall())

    def _marks(self, done: Iterable[FileChange], batch: int) -> list[RolledBack]:
        """Local files now differing from the server: held back until edited or flushed."""
        marks = []
        for change in done:
            local = file_sha256(self.root / change.local)
            goal = None if change.created else change.before
            if local is not None and local != goal:
                marks.append(RolledBack(change.remote, change.local, local, batch))
        return marks


def _reversed(change: FileChange) -> FileChange:
    """The undo's own record of a file: from what the batch left to what was there before."""
    return FileChange(
        local=change.local,
        remote=change.remote,
        before=change.after,
        created=change.after is None,
        mode_before=change.mode_after,
        after=None if change.created else change.before,
        mode_after=None if change.created else change.mode_before,
    )
