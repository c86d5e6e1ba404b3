"""The deploy history: every batch that landed, and the bytes of every version it touched.

A sqlite file records each batch (when, from which commit, each file with its sha256 before and
after, the rebuilds it caused); a content-addressed folder keeps the bytes of each version, by
sha256, so that ``opswatch undo`` and a rollback can put an earlier version back. The bytes are
capped (``history.max_mb``): the blobs of the oldest batches go first, their records stay.

What is read back is parsed into typed records; a row that does not parse is left out (and
logged), never raised into the daemon. sqlite and filesystem failures become ``HistoryError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from opswatch.errors import HistoryError
from opswatch.local.gitstate import GitState

log = structlog.get_logger("opswatch.history")

SCHEMA = """
CREATE TABLE IF NOT EXISTS batch (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
    git_commit TEXT, branch TEXT, dirty INTEGER, undoes INTEGER
);
CREATE TABLE IF NOT EXISTS file (
    batch INTEGER NOT NULL, local TEXT NOT NULL, remote TEXT NOT NULL,
    before TEXT, created INTEGER NOT NULL, mode_before INTEGER,
    after TEXT, mode_after INTEGER, size_after INTEGER
);
CREATE INDEX IF NOT EXISTS file_batch ON file (batch);
CREATE INDEX IF NOT EXISTS file_remote ON file (remote);
CREATE TABLE IF NOT EXISTS rebuild (
    batch INTEGER NOT NULL, service TEXT NOT NULL, ok INTEGER NOT NULL, at TEXT NOT NULL,
    detail TEXT NOT NULL, rolled_back INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blob (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL,
    batch INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rolled_back (remote TEXT PRIMARY KEY, local TEXT NOT NULL,
    local_sha256 TEXT NOT NULL, batch INTEGER NOT NULL);
"""
KINDS = ("batch", "reconcile", "sync", "undo", "rollback")
HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class FileChange:
    """One remote path a batch changed; ``after`` None: removed. ``before`` None and not
    ``created``: what the server held before is not known (a first copy)."""

    local: str
    remote: str
    before: str | None
    created: bool
    mode_before: int | None
    after: str | None
    mode_after: int | None
    size_after: int | None = None


@dataclass(frozen=True)
class RebuildEntry:
    service: str
    ok: bool
    at: str
    detail: str
    rolled_back: bool = False


@dataclass(frozen=True)
class BatchRecord:
    id: int
    at: float
    kind: str
    git: GitState
    files: tuple[FileChange, ...] = ()
    rebuilds: tuple[RebuildEntry, ...] = ()
    undoes: int | None = None


@dataclass(frozen=True)
class RolledBack:
    """A local file whose server copy an undo or rollback put back: not pending while its
    content stays ``local_sha256``."""

    remote: str
    local: str
    local_sha256: str
    batch: int


def is_sha256(text: object) -> bool:
    return isinstance(text, str) and len(text) == 64 and set(text) <= HEX


class History:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        """``folder`` holds ``history.sqlite`` and ``blobs/``; both are made when missing."""
        self.folder = folder
        self.blobs = folder / "blobs"
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        with self._errors("open"):
            self.blobs.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(folder / "history.sqlite"), check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise HistoryError(f"deploy history ({self.folder}): {what}: {exc}") from exc

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

    # -- blobs -----------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path | None:
        """Where the bytes of ``sha256`` are kept, if they are."""
        if not is_sha256(sha256):
            return None
        path = self.blobs / sha256[:2] / sha256
        return path if path.is_file() else None

    def keep_bytes(self, data: bytes) -> str:
        """Store ``data``; its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        if self.blob_path(sha) is None:
            with self._errors("store"):
                self._write_blob(sha, data)
        return sha

    def keep_file(self, path: Path, sha256: str) -> bool:
        """Store the file at ``path`` if it still holds ``sha256`` (it may have changed since
        it was sent: then the version that went is not known here, and not kept)."""
        if self.blob_path(sha256) is not None:
            return True
        try:
            data = path.read_bytes()
        except OSError:
            return False
        if hashlib.sha256(data).hexdigest() != sha256:
            return False
        with self._errors("store"):
            self._write_blob(sha256, data)
        return True

    def _write_blob(self, sha: str, data: bytes) -> None:
        target = self.blobs / sha[:2] / sha
        target.parent.mkdir(mode=0o700, exist_ok=True)
        temp = target.with_name(f".{sha}.{os.getpid()}.tmp")
        temp.write_bytes(data)
        os.replace(temp, target)

    # -- writing ---------------------------------------------------------------------------

    def record(
        self,
        kind: str,
        at: float,
        git: GitState,
        files: Iterable[FileChange],
        *,
        undoes: int | None = None,
    ) -> int:
        """A landed batch; its id. The blobs it names count as this batch's for the cap."""
        files = list(files)
        with self._lock, self._errors("record"):
            self._db.execute("BEGIN")
            cursor = self._db.execute(
                "INSERT INTO batch (at, kind, git_commit, branch, dirty, undoes)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (at, kind, git.commit, git.branch, git.dirty, undoes),
            )
            batch = int(cursor.lastrowid or 0)
            self._db.executemany(
                "INSERT INTO file VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(batch, *_file_row(f)) for f in files],
            )
            for sha in {s for f in files for s in (f.before, f.after) if s}:
                self._claim_blob(sha, batch)
            self._db.execute("COMMIT")
        self._enforce_cap()
        return batch

    def _claim_blob(self, sha: str, batch: int) -> None:
        path = self.blob_path(sha)
        if path is None:
            return
        self._db.execute(
            "INSERT INTO blob VALUES (?, ?, ?) ON CONFLICT (sha256) DO UPDATE SET batch = ?",
            (sha, path.stat().st_size, batch, batch),
        )

    def add_rebuild(self, batch: int, entry: RebuildEntry) -> None:
        with self._lock, self._errors("record a rebuild"):
            self._db.execute(
                "INSERT INTO rebuild VALUES (?, ?, ?, ?, ?, ?)",
                (batch, entry.service, entry.ok, entry.at, entry.detail, entry.rolled_back),
            )

    def _enforce_cap(self) -> None:
        """Drop the blobs of the oldest batches until the rest fits ``max_bytes``."""
        with self._lock, self._errors("trim"):
            rows = self._db.execute("SELECT sha256, size FROM blob ORDER BY batch DESC").fetchall()
            total, dropped = 0, []
            for sha, size in rows:
                total += size if isinstance(size, int) else 0
                if total > self.max_bytes or not is_sha256(sha):
                    dropped.append(str(sha))
            for sha in dropped:
                if is_sha256(sha):  # a corrupt row never names a path outside the store
                    (self.blobs / sha[:2] / sha).unlink(missing_ok=True)
            self._db.executemany("DELETE FROM blob WHERE sha256 = ?", [(s,) for s in dropped])
        if dropped:
            log.info("history_trimmed", blobs=len(dropped), cap_bytes=self.max_bytes)

    # -- rolled back -----------------------------------------------------------------------

    def mark_rolled_back(self, marks: Iterable[RolledBack]) -> None:
        rows = [(m.remote, m.local, m.local_sha256, m.batch) for m in marks]
        with self._lock, self._errors("record"):
            self._db.executemany("INSERT OR REPLACE INTO rolled_back VALUES (?, ?, ?, ?)", rows)

    def clear_rolled_back(self, remotes: Iterable[str]) -> None:
        rows = [(r,) for r in remotes]
        with self._lock, self._errors("record"):
            self._db.executemany("DELETE FROM rolled_back WHERE remote = ?", rows)

    def rolled_back(self) -> dict[str, RolledBack]:
        with self._lock, self._errors("read"):
            rows = self._db.execute("SELECT * FROM rolled_back").fetchall()
        found = {}
        for remote, local, sha, batch in rows:
            texts = isinstance(remote, str) and isinstance(local, str)
            if texts and is_sha256(sha) and isinstance(batch, int):
                found[remote] = RolledBack(remote, local, sha, batch)
        return found

    # -- reading ---------------------------------------------------------------------------

    def batches(self, limit: int, *, before: int | None = None) -> list[BatchRecord]:
        """The newest ``limit`` batches (older than ``before``), newest first."""
        query = "SELECT * FROM batch WHERE id < ? ORDER BY id DESC LIMIT ?"
        with self._lock, self._errors("read"):
            rows = self._db.execute(query, (before or 2**62, limit)).fetchall()
        return [b for b in (self._batch(row) for row in rows) if b is not None]

    def get(self, batch: int) -> BatchRecord | None:
        with self._lock, self._errors("read"):
            row = self._db.execute("SELECT * FROM batch WHERE id = ?", (batch,)).fetchone()
        return self._batch(row) if row else None

    def later_changes(self, batch: int, remotes: Iterable[str]) -> dict[str, int]:
        """Of ``remotes``, those a batch after ``batch`` changed, with that batch."""
        found: dict[str, int] = {}
        with self._lock, self._errors("read"):
            for remote in remotes:
                row = self._db.execute(
                    "SELECT MAX(batch) FROM file WHERE remote = ? AND batch > ?", (remote, batch)
                ).fetchone()
                if row and isinstance(row[0], int):
                    found[remote] = row[0]
        return found

    def earlier_change(self, batch: int, remotes: Iterable[str]) -> int | None:
        """The newest batch before ``batch`` that changed one of ``remotes``."""
        newest = None
        with self._lock, self._errors("read"):
            for remote in remotes:
                row = self._db.execute(
                    "SELECT MAX(batch) FROM file WHERE remote = ? AND batch < ?", (remote, batch)
                ).fetchone()
                if row and isinstance(row[0], int):
                    newest = max(row[0], newest or 0)
        return newest

    def _batch(self, row: tuple[object, ...]) -> BatchRecord | None:
        try:
            id_, at, kind, commit, branch, dirty, undoes = row
            if not (isinstance(id_, int) and isinstance(at, int | float) and kind in KINDS):
                raise ValueError("a batch needs an id, a time and a known kind")
            git = GitState(_text(commit), _text(branch), None if dirty is None else bool(dirty))
            with self._lock:
                files = self._db.execute("SELECT * FROM file WHERE batch = ?", (id_,)).fetchall()
                builds = self._db.execute(
                    "SELECT * FROM rebuild WHERE batch = ?", (id_,)
                ).fetchall()
            return BatchRecord(
                id_,
                float(at),
                str(kind),
                git,
                tuple(_file(r) for r in files),
                tuple(_rebuild(r) for r in builds),
                undoes if isinstance(undoes, int) else None,
            )
        except (ValueError, TypeError, sqlite3.Error) as exc:
            log.warning("history_entry_unreadable", row=repr(row)[:200], error=repr(exc))
            return None


def _file_row(f: FileChange) -> tuple[object, ...]:
    before = (f.local, f.remote, f.before, f.created, f.mode_before)
    return (*before, f.after, f.mode_after, f.size_after)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _sha(value: object) -> str | None:
    if value is None:
        return None
    if not is_sha256(value):
        raise ValueError(f"not a sha256: {value!r}")
    return str(value)


def _int(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int):
        raise TypeError(f"not an integer: {value!r}")
    return value


def _file(row: tuple[object, ...]) -> FileChange:
    _batch, local, remote, before, created, mode_before, after, mode_after, size = row
    if not isinstance(local, str) or not isinstance(remote, str):
        raise TypeError("file paths must be text")
    return FileChange(
        local, remote, _sha(before), bool(created), _int(mode_before), _sha(after),
        _int(mode_after), _int(size),
    )  # fmt: skip


def _rebuild(row: tuple[object, ...]) -> RebuildEntry:
    _batch, service, ok, at, detail, rolled_back = row
    if not all(isinstance(v, str) for v in (service, at, detail)):
        raise TypeError("rebuild fields must be text")
    return RebuildEntry(str(service), bool(ok), str(at), str(detail), bool(rolled_back))


def batch_to_json(batch: BatchRecord) -> dict[str, object]:
    """One batch as ``opswatch history --json`` prints it."""
    return {
        "id": batch.id,
        "at": datetime.fromtimestamp(batch.at, UTC).isoformat(timespec="seconds"),
        "kind": batch.kind,
        "commit": batch.git.commit,
        "branch": batch.git.branch,
        "dirty": batch.git.dirty,
        "undoes": batch.undoes,
        "files": [
            {
                "path": f.local,
                "remote": f.remote,
                "before": f.before,
                "created": f.created,
                "mode_before": f.mode_before,
                "after": f.after,
                "mode_after": f.mode_after,
                "bytes": f.size_after,
            }
            for f in batch.files
        ],
        "rebuilds": [
            {
                "service": r.service,
                "ok": r.ok,
                "at": r.at,
                "detail": r.detail,
                "rolled_back": r.rolled_back,
            }
            for r in batch.rebuilds
        ],
    }
