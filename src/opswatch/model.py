"""Plain data that crosses module boundaries: changes, batches, actions and the daemon's status."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import overload

# A compose service name, the one rule for the compose file, [[rebuild.service]] and the command
# line: the compose specification's pattern, and no leading "-" on top of it because the name
# becomes a command-line argument of `docker compose`.
SERVICE_NAME = re.compile(r"[a-zA-Z0-9._][a-zA-Z0-9._-]*")
SERVICE_NAME_RULE = 'letters, digits, ".", "_" and "-", not starting with "-"'


def valid_service_name(name: object) -> bool:
    return isinstance(name, str) and SERVICE_NAME.fullmatch(name) is not None


@overload
def iso_time(timestamp: float) -> str: ...
@overload
def iso_time(timestamp: None) -> None: ...
def iso_time(timestamp: float | None) -> str | None:
    """A wall-clock time as status and rebuild results show it: ISO 8601, UTC, whole seconds."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


class ChangeKind(enum.Enum):
    CREATED = "created"
    MODIFIED = "modified"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Change:
    """Something happened to ``path`` (POSIX, relative to ``local.root``)."""

    path: str
    kind: ChangeKind


@dataclass(frozen=True)
class Batch:
    """Changes that go together: one entry per path, already coalesced."""

    changes: tuple[Change, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(change.path for change in self.changes)

    def __len__(self) -> int:
        return len(self.changes)


SFTP_TIME_MAX = 2**32 - 1  # SFTP v3 carries times as uint32 seconds: 1970 to 2106
NS_RANGE = (-(2**63), 2**63 - 1)  # what the manifest (sqlite INTEGER) stores


def sftp_seconds(mtime_ns: int) -> int:
    """The whole seconds an SFTP v3 server can be told: clamped to 1970 … 2106."""
    return min(max(mtime_ns // 1_000_000_000, 0), SFTP_TIME_MAX)


def storable_ns(mtime_ns: int) -> int:
    """A local mtime in nanoseconds, clamped to what a 64-bit integer holds (1677 … 2262)."""
    return min(max(mtime_ns, NS_RANGE[0]), NS_RANGE[1])


# slots: the per-file records below exist by the ten thousand during a reconcile
class Refusal(enum.Enum):
    """Why a file the rules select will not be sent: typed, so code never parses a reason text."""

    NEVER = "never"  # the path matches ``never``
    ESCAPES = "escapes"  # ".." or an absolute path
    SYMLINK_OUTSIDE = (
        "symlink-outside"  # a link (or a linked folder) leads out of its watched folder
    )
    SYMLINK_TO_NEVER = "symlink-to-never"  # a link whose target matches ``never``
    SYMLINK_FOLDER = "symlink-folder"  # a link to a folder inside its watched folder: not walked
    HARD_LINK = "hard-link"  # more than one hard link and ``sync.allow_hard_links`` is off
    NOT_REGULAR = "not-regular"  # a FIFO, socket or device where a file was expected
    PRIVATE_KEY = "private-key"  # the content holds a private key block
    BAD_NAME = "bad-name"  # a name that is not valid UTF-8
    UNREADABLE = "unreadable"  # a file or folder that cannot be read (permissions)
    IGNORE_FILE = "ignore-file"  # a folder held: its .opswatchignore does not parse


@dataclass(frozen=True, slots=True)
class LocalFile:
    """What ``lstat`` (or ``stat`` of an allowed symlink) said about a local regular file.

    ``dev``/``ino`` name the file that was checked, so that the later open can prove it reads
    that very file; ``real`` is the path to open when a symlink was followed (else "").
    """

    size: int
    mtime_ns: int
    mode: int  # permission bits only
    dev: int = 0
    ino: int = 0
    real: str = ""

    @property
    def mtime_s(self) -> int:
        return self.mtime_ns // 1_000_000_000


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """What SFTP ``stat`` said about a remote file; SFTP carries whole-second mtimes only."""

    size: int
    mtime_s: int
    mode: int


@dataclass(frozen=True, slots=True)
class Pushed:
    """The manifest's record of the last upload of one remote path."""

    remote: str
    local: str
    sha256: str
    size: int
    mtime_ns: int
    mode: int
    pushed_at: float

    @property
    def mtime_s(self) -> int:
        return self.mtime_ns // 1_000_000_000

    def matches_local(self, local: LocalFile) -> bool:
        return (local.size, local.mtime_ns, local.mode) == (self.size, self.mtime_ns, self.mode)

    def matches_remote(self, remote: RemoteFile) -> bool:
        # The server holds the mtime as it could be sent (clamped), not the local one.
        return (remote.size, remote.mtime_s) == (self.size, sftp_seconds(self.mtime_ns))


@dataclass(frozen=True, slots=True)
class Upload:
    local: str  # relative to local.root
    remote: str  # absolute POSIX path on the server
    file: LocalFile
    force: bool = False  # overwrite even if the server's copy changed since we pushed it


@dataclass(frozen=True)
class Remove:
    local: str
    remote: str


@dataclass(frozen=True)
class Skip:
    """A path the plan looked at and will not touch, with the reason (shown by ``--dry-run``)."""

    local: str
    reason: str
    remote: str | None = None
    refusal: Refusal | None = None  # set when opswatch refuses it (not merely skips it)


@dataclass(frozen=True)
class Conflict:
    """The server's copy changed since opswatch last pushed it; left alone until ``--force``."""

    local: str
    remote: str
    # The manifest has no record of it (lost): a hash decides (equal → adopted) before it is one.
    unrecorded: bool = False


Action = Upload | Remove


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    skipped: tuple[Skip, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    stale: tuple[str, ...] = ()  # opswatch temp files a cut upload left on the server

    @property
    def uploads(self) -> tuple[Upload, ...]:
        return tuple(a for a in self.actions if isinstance(a, Upload))

    @property
    def removes(self) -> tuple[Remove, ...]:
        return tuple(a for a in self.actions if isinstance(a, Remove))


STATUS_TEXT_MAX = 8 * 1024  # characters of a build's output or an error kept for ``status``


def tail_text(text: str, limit: int = STATUS_TEXT_MAX) -> str:
    """The last ``limit`` characters of ``text``: a build's end says why it failed."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


class State(enum.Enum):
    WATCHING = "watching"
    SYNCING = "syncing"
    PAUSED = "paused"
    HELD = "held"
    OFFLINE = "offline"
    ERROR = "error"


@dataclass(frozen=True)
class RebuildResult:
    service: str
    ok: bool
    at: str  # ISO 8601
    detail: str
    batch: int | None = None  # the deploy history's batch that caused it
    rolled_back: bool = False  # health failed and the batch's files were put back


@dataclass(frozen=True)
class Status:
    """What ``opswatch status`` shows; ``to_json`` is the documented ``--json`` object."""

    state: State
    connected: bool
    host: str
    pending_paths: tuple[str, ...] = ()
    last_sync: str | None = None
    last_error: str | None = None
    paused_until: str | None = None
    uploaded: int = 0
    removed: int = 0
    removed_folders: int = 0  # emptied remote folders removed after their files (sync.delete)
    connected_since: str | None = None
    rebuilds: tuple[RebuildResult, ...] = ()
    conflicts: tuple[str, ...] = ()
    held_paths: tuple[str, ...] = ()
    held_reason: str | None = None
    build_gaps: tuple[dict[str, object], ...] = ()  # sources a build needs the server lacks
    refused: tuple[Skip, ...] = ()  # files the rules select that opswatch will not send
    reconciles: int = 0  # since start
    last_reconcile: str | None = None
    last_batch: dict[str, object] | None = None  # the deploy history's newest: id, at, commit
    rolled_back: tuple[str, ...] = ()  # local files an undo left differing from the server
    pid: int = 0
    config: str = ""

    @property
    def pending(self) -> int:
        return len(self.pending_paths)

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "connected": self.connected,
            "host": self.host,
            "pending": self.pending,
            "pending_paths": list(self.pending_paths),
            "last_sync": self.last_sync,
            "last_error": self.last_error,
            "paused_until": self.paused_until,
            "uploaded": self.uploaded,
            "removed": self.removed,
            "removed_folders": self.removed_folders,
            "connected_since": self.connected_since,
            "rebuilds": [
                {
                    "service": r.service,
                    "ok": r.ok,
                    "at": r.at,
                    "detail": r.detail,
                    "batch": r.batch,
                    "rolled_back": r.rolled_back,
                }
                for r in self.rebuilds
            ],
            "conflicts": list(self.conflicts),
            "held": len(self.held_paths),
            "held_paths": list(self.held_paths),
            "held_reason": self.held_reason,
            "build_gaps": list(self.build_gaps),
            "refused": [{"path": s.local, "reason": s.reason} for s in self.refused],
            "reconciles": self.reconciles,
            "last_reconcile": self.last_reconcile,
            "last_batch": self.last_batch,
            "rolled_back": list(self.rolled_back),
            "pid": self.pid,
            "config": self.config,
        }
