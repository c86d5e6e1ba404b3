"""The manifest: a sqlite record of what opswatch pushed, per remote path.

It lets a restart skip unchanged files without hashing them, lets ``delete`` touch only files
opswatch manages, and tells a file changed on the server (a conflict) from one opswatch wrote.

Every use of the database holds ``_Locked``, which is also the adapter's one error boundary:
a sqlite exception leaves it as the ``StateError`` that ``FAILURES`` names.
"""

from __future__ import annotations

import enum
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import structlog

from opswatch.errors import OpswatchError, StateError
from opswatch.model import Pushed

log = structlog.get_logger("opswatch.manifest")

SCHEMA = """
CREATE TABLE IF NOT EXISTS pushed (
    remote    TEXT PRIMARY KEY,
    local     TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    mode      INTEGER NOT NULL,
    pushed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pushed_local ON pushed (local);
"""
LOOKUP_CHUNK = 500  # paths per query: below SQLite's oldest limit of 999 parameters
# What sqlite's exceptions become. sqlite3.Error is the base of all but one of them: a file that
# is not a database or is corrupt (DatabaseError), one that can't be opened, is locked or whose
# disk is full (OperationalError), and the rest; sqlite3.Warning stands apart.
FAILURES: dict[type[BaseException], type[OpswatchError]] = {
    sqlite3.Error: StateError,
    sqlite3.Warning: StateError,
    OSError: StateError,  # moving a corrupt file aside
}
CAUGHT: tuple[type[BaseException], ...] = tuple(FAILURES)


class _Locked:
    """The manifest's lock; an exception from sqlite leaves it as an opswatch error."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()
        if isinstance(exc, CAUGHT):
            mapped = next(ours for theirs, ours in FAILURES.items() if isinstance(exc, theirs))
            raise mapped(f"{self.where}: the manifest can't be used: {exc}") from exc


class Origin(enum.Enum):
    """Where the records of an open manifest come from; what a missing history means for
    conflicts is decided by whoever reads ``Manifest.origin``."""

    OPENED = "opened"  # the file was there and sound
    CREATED = "created"  # there was no file: this state folder's first sync (or it was deleted)
    REPLACED = "replaced"  # the file was corrupt: moved aside, this one starts empty
    MEMORY = "memory"  # no file at all (dry runs, tests)


# sqlite's primary result codes for a file that is not (or no longer) a sound database
CORRUPT_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB


class Manifest:
    """Opened defensively: a corrupt or truncated file is moved aside
    (``manifest.sqlite.corrupt-<time>``) with one warning and a fresh one started
    (``origin`` is ``REPLACED``); one that can't be opened or written is a ``StateError``."""

    def __init__(self, path: Path | None) -> None:
        """``None`` keeps the manifest in memory (dry runs, tests)."""
        self.path = path
        self.moved_aside: Path | None = None  # where a corrupt predecessor went
        # Written at the first sync and kept apart from the database: a manifest that is lost
        # (deleted, or moved aside as corrupt) leaves it behind, which tells "lost" from "never".
        self._marker = path.with_name(path.name + ".synced") if path is not None else None
        # The engine thread owns the manifest; the lock only guards the rare status read.
        self._lock = _Locked(str(path) if path is not None else ":memory:")
        if path is None:
            self.origin = Origin.MEMORY
            self._db = _open(None)
            return
        self.origin = Origin.OPENED if path.exists() else Origin.CREATED
        try:
            self._db = _open(path)
        except _Corrupt as exc:
            self.moved_aside = _move_aside(path)
            log.warning(
                "manifest_corrupt",
                file=str(path),
                error=str(exc),
                moved_to=str(self.moved_aside),
                action="starting a new one",
            )
            self.origin = Origin.REPLACED
            self._db = _open(path)

    @property
    def first_sync(self) -> bool:
        """No sync of this config ever recorded anything: unknown server files may be
        overwritten (as the manual procedure did). Afterwards they are conflicts."""
        if self.origin is Origin.REPLACED:
            return False  # a manifest existed: it was corrupt, its records are lost
        if self._marker is not None and self._marker.exists():
            return False
        with self._lock:
            return self._db.execute("SELECT 1 FROM pushed LIMIT 1").fetchone() is None

    def mark_synced(self) -> None:
        if self._marker is not None and not self._marker.exists():
            self._marker.touch(mode=0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, remote: str) -> Pushed | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM pushed WHERE remote = ?", (remote,)).fetchone()
        return Pushed(*row) if row else None

    def all(self) -> dict[str, Pushed]:
        # Row by row: a list of every row next to the records built from them would double
        # the peak of a reconcile of a big tree, and CPython keeps that peak resident.
        with self._lock:
            return {row[0]: Pushed(*row) for row in self._db.execute("SELECT * FROM pushed")}

    def for_local(self, local: str) -> list[Pushed]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM pushed WHERE local = ?", (local,)).fetchall()
        return [Pushed(*row) for row in rows]

    def for_locals(self, locals_: Iterable[str]) -> list[Pushed]:
        """``for_local`` of many paths in a few queries (a batch's paths, not one query each)."""
        wanted = list(dict.fromkeys(locals_))
        rows = []
        with self._lock:
            for start in range(0, len(wanted), LOOKUP_CHUNK):
                chunk = wanted[start : start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT * FROM pushed WHERE local IN ({marks})"  # noqa: S608 - only marks
                rows += self._db.execute(query, chunk).fetchall()
        return [Pushed(*row) for row in rows]

    def record(self, entries: Iterable[Pushed]) -> None:
        rows = [
            (e.remote, e.local, e.sha256, e.size, e.mtime_ns, e.mode, e.pushed_at) for e in entries
        ]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO pushed VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        if rows:
            self.mark_synced()

    def forget(self, remotes: Iterable[str]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM pushed WHERE remote = ?", [(r,) for r in remotes])
            self._db.execute("COMMIT")


class _Corrupt(Exception):
    """The file is not (or no longer) a sound sqlite database."""


def _open(path: Path | None) -> sqlite3.Connection:
    """A connection to a sound manifest (``None``: in memory). Raises ``_Corrupt`` for a file
    that is not a sound database, ``StateError`` for one that can't be opened or written."""
    try:
        db = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise StateError(f"{path}: the manifest can't be used: {exc}") from exc
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # sqlite's default 2 MB page cache fills during a reconcile's full read of a big
        # manifest and stays allocated; the OS caches the file anyway.
        db.execute("PRAGMA cache_size=-1024")  # KiB; no slower for a 500-file burst
        db.executescript(SCHEMA)
        # A truncated file may open fine and fail on some later read: find out now, not in
        # the middle of a batch. Milliseconds for ten thousand records.
        verdict = db.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError as exc:
        db.close()
        if _primary_code(exc) in CORRUPT_CODES:
            raise _Corrupt(str(exc)) from None
        raise StateError(f"{path}: the manifest can't be used: {exc}") from exc
    if verdict is None or verdict[0] != "ok":
        db.close()
        raise _Corrupt(f"quick_check found: {verdict[0] if verdict else 'nothing'}")
    return db


def _primary_code(exc: sqlite3.Error) -> int:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF  # an extended code's low byte


def _move_aside(path: Path) -> Path:
    """Rename ``path`` (and its WAL and shared-memory files) to ``<name>.corrupt-<time>``."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    try:
        for suffix in ("-wal", "-shm", ""):
            source = path.with_name(path.name + suffix)
            if os.path.lexists(source):
                os.replace(source, aside.with_name(aside.name + suffix))
    except OSError as exc:
        raise StateError(
            f"the manifest {path} is corrupt and can't be moved aside: {exc.strerror or exc}"
        ) from None
    return aside
