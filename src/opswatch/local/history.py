"""The deploy history: every batch that landed, and the bytes of every version it touched.

A sqlite file records each batch (when, from which commit, each file with its sha256 before and
after, the rebuilds it caused) and keeps the bytes of each version by sha256 (content-addressed:
a version pushed twice is kept once; in the database, as a file each would cost an inode per
version, slow to create on a burst), so that ``opswatch undo`` and a rollback can put an earlier
version back. The bytes are capped (``history.max_mb``): the oldest batches' go first, their
records stay.

What is read back is parsed into typed records; a row that does not parse is left out (and
logged), never raised into the daemon. sqlite and filesystem failures become ``HistoryError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import structlog

from opswatch.errors import HistoryError
from opswatch.local.gitstate import GitState
from opswatch.local.guarded import read_regular
from opswatch.local.history_records import (
    KINDS,
    BatchRecord,
    FileChange,
    RebuildEntry,
    RolledBack,
    file_row,
    is_sha256,
    parse_file,
    parse_rebuild,
    text_or_none,
)

log = structlog.get_logger("opswatch.history")

STORE_CHUNK = 16 * 1024 * 1024  # bytes read before they are written to the database

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
CREATE TABLE IF NOT EXISTS content (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL,
    batch INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS content_batch ON content (batch);
CREATE TABLE IF NOT EXISTS rolled_back (remote TEXT PRIMARY KEY, local TEXT NOT NULL,
    local_sha256 TEXT NOT NULL, batch INTEGER NOT NULL);
"""


class History:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        """``folder`` holds ``history.sqlite``; it is made when missing."""
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        with self._errors("open"):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(folder / "history.sqlite"), check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes on a new file
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # as the manifest: no fsync per commit
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

    # -- blobs ---------------------------------------------------------------------------

    def has_blob(self, sha256: str) -> bool:
        with self._lock, self._errors("read"):
            row = self._db.execute("SELECT 1 FROM content WHERE sha256 = ?", (sha256,)).fetchone()
        return row is not None

    def blob(self, sha256: str) -> bytes | None:
        """The kept bytes of ``sha256``, if they are kept."""
        with self._lock, self._errors("read"):
            row = self._db.execute(
                "SELECT data FROM content WHERE sha256 = ?", (sha256,)
            ).fetchone()
        if row is None or not isinstance(row[0], bytes):
            return None
        return row[0] if hashlib.sha256(row[0]).hexdigest() == sha256 else None

    def keep_bytes(self, data: bytes) -> str:
        """Store ``data``; its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        with self._lock, self._errors("store"):
            self._db.execute(
                "INSERT OR IGNORE INTO content VALUES (?, ?, 0, ?)", (sha, len(data), data)
            )
        return sha

    def keep_files(self, files: Iterable[tuple[Path, str]]) -> None:
        """Store each file that still holds its sha256 (one may have changed since it was
        sent: the version that went is then not known here, and not kept). Few commits: a
        burst's 500 files cost one, and no file of their own; a first copy of a big tree is
        written in pieces of ``STORE_CHUNK`` bytes, never all held at once."""
        rows: list[tuple[str, int, bytes]] = []
        held = 0
        for path, sha256 in files:
            data = self._readable(path, sha256)
            if data is not None:
                rows.append((sha256, len(data), data))
                held += len(data)
            if held >= STORE_CHUNK:
                self._insert(rows)
                rows, held = [], 0
        self._insert(rows)

    def _readable(self, path: Path, sha256: str) -> bytes | None:
        """The bytes to keep for ``sha256`` at ``path``; None when kept already, too big for
        the cap, unreadable or changed."""
        if self.has_blob(sha256):
            return None
        # Read the guarded way: the file may have become a FIFO since it was sent.
        data = read_regular(path, self.max_bytes)
        if data is None:
            return None
        return data if hashlib.sha256(data).hexdigest() == sha256 else None

    def _insert(self, rows: list[tuple[str, int, bytes]]) -> None:
        if not rows:
            return
        with self._lock, self._errors("store"):
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO content VALUES (?, ?, 0, ?)", rows)
            self._db.execute("COMMIT")

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
                [(batch, *file_row(f)) for f in files],
            )
            shas = {s for f in files for s in (f.before, f.after) if s}
            self._db.executemany(
                "UPDATE content SET batch = ? WHERE sha256 = ?", [(batch, s) for s in shas]
            )
            self._db.execute("COMMIT")
        self._enforce_cap()
        return batch

    def add_rebuild(self, batch: int, entry: RebuildEntry) -> None:
        with self._lock, self._errors("record a rebuild"):
            self._db.execute(
                "INSERT INTO rebuild VALUES (?, ?, ?, ?, ?, ?)",
                (batch, entry.service, entry.ok, entry.at, entry.detail, entry.rolled_back),
            )

    def _enforce_cap(self) -> None:
        """Drop the bytes of the oldest batches until the rest fits ``max_bytes``."""
        with self._lock, self._errors("trim"):
            (total,) = self._db.execute("SELECT TOTAL(size) FROM content").fetchone()
            if total <= self.max_bytes:
                return
            rows = self._db.execute("SELECT sha256, size FROM content ORDER BY batch DESC")
            kept, dropped = 0, []
            for sha, size in rows.fetchall():
                kept += size if isinstance(size, int) else 0
                if kept > self.max_bytes or not isinstance(size, int):
                    dropped.append((sha,))
            self._db.executemany("DELETE FROM content WHERE sha256 = ?", dropped)
            self._db.execute("PRAGMA incremental_vacuum")  # give the freed pages back
        log.info("history_trimmed", versions=len(dropped), cap_bytes=self.max_bytes)

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
            git = GitState(
                text_or_none(commit), text_or_none(branch), None if dirty is None else bool(dirty)
            )
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
                tuple(parse_file(r) for r in files),
                tuple(parse_rebuild(r) for r in builds),
                undoes if isinstance(undoes, int) else None,
            )
        except (ValueError, TypeError, sqlite3.Error) as exc:
            log.warning("history_entry_unreadable", row=repr(row)[:200], error=repr(exc))
            return None
