"""The manifest: a sqlite record of what opswatch pushed, per remote path.

It lets a restart skip unchanged files without hashing them, lets ``delete`` touch only files
opswatch manages, and tells a file changed on the server (a conflict) from one opswatch wrote.

Every use of the database holds ``_Locked``, which is also the adapter's one error boundary:
a sqlite exception leaves it as the ``StateError`` that ``FAILURES`` names.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from opswatch.errors import OpswatchError, StateError
from opswatch.model import Pushed

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


class Manifest:
    def __init__(self, path: Path | None) -> None:
        """``None`` keeps the manifest in memory (dry runs, tests)."""
        self.path = path
        target = str(path) if path is not None else ":memory:"
        # The engine thread owns the manifest; the lock only guards the rare status read.
        self._lock = _Locked(target)
        with self._lock:
            self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # sqlite's default 2 MB page cache fills during a reconcile's full read of a big
            # manifest and stays allocated; the OS caches the file anyway.
            self._db.execute("PRAGMA cache_size=-1024")  # KiB; no slower for a 500-file burst
            self._db.executescript(SCHEMA)

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

    def forget(self, remotes: Iterable[str]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM pushed WHERE remote = ?", [(r,) for r in remotes])
            self._db.execute("COMMIT")
