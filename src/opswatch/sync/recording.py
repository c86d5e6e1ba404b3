"""Writing each landed batch into the deploy history: what the server held before, what it
holds now, and the bytes of both where opswatch has them.

The syncer asks ``before`` while planning (it knows then what the manifest and the server said)
and calls ``record`` once the batch landed. Failures of the history are logged, never raised:
a deploy that landed is not undone because its record could not be written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from opswatch.errors import HistoryError
from opswatch.local.gitstate import GitState, git_state
from opswatch.local.history import History
from opswatch.local.history_records import FileChange, RebuildEntry, RolledBack
from opswatch.model import Pushed, RebuildResult, RemoteFile, Remove, Upload
from opswatch.ssh.transfer import UploadOutcome

log = structlog.get_logger("opswatch.history")

PERMISSIONS = 0o7777


@dataclass(frozen=True)
class Before:
    """What the server held at a target before the batch."""

    sha256: str | None = None
    created: bool = False  # nothing was there
    mode: int | None = None


UNKNOWN = Before()


def before_upload(
    upload: Upload, pushed: Pushed | None, remote: Mapping[str, RemoteFile | None]
) -> Before:
    looked = upload.remote in remote
    there = remote.get(upload.remote)
    if looked and there is None:
        return Before(created=True)
    if pushed is not None and (there is None or pushed.matches_remote(there)):
        return Before(pushed.sha256, mode=pushed.mode)
    return UNKNOWN  # a first copy over a file opswatch never pushed, or a forced conflict


class Recorder:
    def __init__(
        self,
        history: History,
        root: Path,
        *,
        git: Callable[[Path], GitState] = git_state,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.history = history
        self.root = root
        self.git = git
        self.wall = wall
        self.before: dict[str, Before] = {}  # by remote path, for the plan being executed

    def plan_seen(
        self,
        actions: tuple[Upload | Remove, ...],
        manifest: Mapping[str, Pushed],
        remote: Mapping[str, RemoteFile | None],
    ) -> None:
        known = dict(self.before)  # a server copy kept before --force stays known
        self.before = {}
        for action in actions:
            pushed = manifest.get(action.remote)
            if isinstance(action, Remove):
                found = Before(pushed.sha256, mode=pushed.mode) if pushed else UNKNOWN
            else:
                found = before_upload(action, pushed, remote)
            if found == UNKNOWN and action.remote in known:
                found = known[action.remote]
            self.before[action.remote] = found

    def kept_server_copy(self, remote: str, data: bytes, mode: int | None) -> None:
        """The server's copy of a conflict, saved before ``sync --force`` replaces it."""
        sha = self.history.keep_bytes(data)
        self.before[remote] = Before(sha, mode=None if mode is None else mode & PERMISSIONS)

    def record(
        self,
        kind: str,
        uploads: list[tuple[Upload, UploadOutcome]],
        removes: list[Remove],
        *,
        undoes: int | None = None,
    ) -> int | None:
        """The batch's id in the history, or None (nothing changed, or the history failed)."""
        if not uploads and not removes:
            return None
        files = [self._change(u.local, u.remote, o.sha256, u, o) for u, o in uploads]
        files += [self._change(r.local, r.remote, None, None, None) for r in removes]
        try:
            self.history.keep_files((self.root / u.local, o.sha256) for u, o in uploads)
            git = self.git(self.root)
            batch = self.history.record(kind, self.wall(), git, files, undoes=undoes)
            self.history.clear_rolled_back(f.remote for f in files)
        except HistoryError as exc:
            log.warning("history_not_recorded", error=str(exc))
            return None
        return batch

    def _change(
        self,
        local: str,
        remote: str,
        after: str | None,
        upload: Upload | None,
        outcome: UploadOutcome | None,
    ) -> FileChange:
        before = self.before.get(remote, UNKNOWN)
        return FileChange(
            local=local,
            remote=remote,
            before=before.sha256,
            created=before.created,
            mode_before=before.mode,
            after=after,
            mode_after=upload.file.mode if upload else None,
            size_after=outcome.size if outcome else None,
        )

    def rebuilt(self, batch: int, result: RebuildResult) -> None:
        entry = RebuildEntry(
            result.service, result.ok, result.at, result.detail, result.rolled_back
        )
        try:
            self.history.add_rebuild(batch, entry)
        except HistoryError as exc:
            log.warning("history_not_recorded", error=str(exc))

    def take_rolled_back(self) -> list[str]:
        """The local paths an undo held back, released (``opswatch flush`` sends them)."""
        marks = self.rolled_back()
        try:
            self.history.clear_rolled_back(marks)
        except HistoryError as exc:
            log.warning("history_not_recorded", error=str(exc))
        return sorted({m.local for m in marks.values()})

    def rolled_back(self) -> dict[str, RolledBack]:
        try:
            return self.history.rolled_back()
        except HistoryError as exc:
            log.warning("history_unreadable", error=str(exc))
            return {}


def open_recorder(folder: Path, max_bytes: int, root: Path) -> Recorder | None:
    """The history of a config's state folder; None (logged) when it can't be opened: a broken
    history costs the history, never the syncing."""
    try:
        return Recorder(History(folder, max_bytes), root)
    except HistoryError as exc:
        log.warning("history_unavailable", error=str(exc))
        return None


def batch_summary(history: History) -> dict[str, object] | None:
    """``status``'s ``last_batch``: id, time and commit of the newest batch, or None."""
    try:
        newest = history.batches(1)
    except HistoryError as exc:
        log.warning("history_unreadable", error=str(exc))
        return None
    if not newest:
        return None
    batch = newest[0]
    at = datetime.fromtimestamp(batch.at, UTC).isoformat(timespec="seconds")
    return {"id": batch.id, "at": at, "commit": batch.git.commit}
