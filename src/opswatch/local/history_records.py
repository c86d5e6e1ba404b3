"""The deploy history's records: plain data in and out of ``local.history``, parsed with bounds.

A row read back from the database is turned into these by the ``parse_*`` functions, which raise
``ValueError`` or ``TypeError`` for anything that is not what was written (a corrupt entry); the
store leaves such rows out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from opswatch.local.gitstate import GitState

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


def file_row(f: FileChange) -> tuple[object, ...]:
    before = (f.local, f.remote, f.before, f.created, f.mode_before)
    return (*before, f.after, f.mode_after, f.size_after)


def text_or_none(value: object) -> str | None:
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


def parse_file(row: tuple[object, ...]) -> FileChange:
    _batch, local, remote, before, created, mode_before, after, mode_after, size = row
    if not isinstance(local, str) or not isinstance(remote, str):
        raise TypeError("file paths must be text")
    return FileChange(
        local, remote, _sha(before), bool(created), _int(mode_before), _sha(after),
        _int(mode_after), _int(size),
    )  # fmt: skip


def parse_rebuild(row: tuple[object, ...]) -> RebuildEntry:
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
