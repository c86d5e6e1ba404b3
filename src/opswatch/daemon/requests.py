"""Control requests: each command's arguments as a frozen dataclass, parsed and bounded at the
socket; the one table of commands; the handlers the engine thread runs them with.

A request from the socket is data, never code. Its command is looked up in ``COMMANDS`` and its
arguments are checked there (names, types, bounds) before anything reaches the engine; what does
not parse is a ``UsageError``, which the control server answers with ``ok: false``. A new command
is a dataclass, a row in ``COMMANDS`` and a case in ``RequestHandlers.handle``.

``RollBack`` is the one request that is not in ``COMMANDS``: the rebuild worker sends it to the
engine (which owns the SFTP channel) when a health check failed; the socket can't.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, assert_never

import structlog

from opswatch.daemon.pause import MAX_PAUSE_S
from opswatch.errors import ConnectError, RemoteError, UsageError
from opswatch.model import Status
from opswatch.model import iso_time as iso

if TYPE_CHECKING:
    from opswatch.daemon.history import HistoryKeeper
    from opswatch.daemon.link import LinkKeeper
    from opswatch.daemon.pause import PauseStore
    from opswatch.daemon.sender import Sender

log = structlog.get_logger("opswatch.daemon")

Result = dict[str, object]
MAX_BATCH = 2**63 - 1  # a batch number is an SQLite row id


@dataclass(frozen=True)
class StatusQuery:
    """The status snapshot; the control server answers it without the engine."""

    command: ClassVar[str] = "status"


@dataclass(frozen=True)
class Pause:
    """Stop sending, for ``seconds`` (0 < seconds ≤ a year) or until ``resume`` (None)."""

    command: ClassVar[str] = "pause"
    seconds: float | None = None


@dataclass(frozen=True)
class Resume:
    """End the pause and send what is pending now."""

    command: ClassVar[str] = "resume"


@dataclass(frozen=True)
class Flush:
    """Send everything pending now, skipping the quiet period; answered once it landed."""

    command: ClassVar[str] = "flush"


@dataclass(frozen=True)
class Reconnect:
    """Drop the connection and make a new one at once (after ``opswatch trust``)."""

    command: ClassVar[str] = "reconnect"


@dataclass(frozen=True)
class Undo:
    """Put the server back as before ``batch`` (None: the newest that changed files), refusing
    over later changes unless ``force``; answered once the files are back (the rebuilds of what
    went back are queued, as for a forward batch)."""

    command: ClassVar[str] = "undo"
    batch: int | None = None
    force: bool = False


@dataclass(frozen=True)
class RollBack:
    """Internal, from the rebuild worker: ``paths`` of ``batch`` go back because a service
    failed its health check. No rebuilds follow: the worker rebuilds itself."""

    command: ClassVar[str] = "rollback"
    batch: int
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Stop:
    """Finish the batch in flight, then exit (what is pending stays for the next start)."""

    command: ClassVar[str] = "stop"


@dataclass(frozen=True)
class Reload:
    """Read the config file again: an invalid one is refused and the running one kept."""

    command: ClassVar[str] = "reload"


@dataclass(frozen=True)
class Forced:
    """``opswatch sync --force`` put ``paths`` (local) in place as ``batch``: they are conflicts
    no longer, and their rebuilds follow as after any batch."""

    command: ClassVar[str] = "forced"
    paths: tuple[str, ...]
    batch: int | None = None


ControlRequest = StatusQuery | Pause | Resume | Flush | Reconnect | Undo | Stop | Reload | Forced
EngineRequest = ControlRequest | RollBack  # what the engine handles: the socket's, and RollBack


# -- parsing ------------------------------------------------------------------------------------


def _bad(command: str, problem: str) -> UsageError:
    return UsageError(f"bad arguments for {command}: {problem}")


def _only(command: str, args: Mapping[str, object], allowed: frozenset[str]) -> None:
    unknown = sorted(_shorten(repr(name)) for name in args if name not in allowed)
    if unknown:
        raise _bad(command, f"unknown argument(s) {', '.join(unknown[:5])}")


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _no_arguments(
    kind: type[StatusQuery | Resume | Flush | Reconnect | Stop | Reload],
) -> Parser:
    def parse(args: Mapping[str, object]) -> ControlRequest:
        _only(kind.command, args, frozenset())
        return kind()

    return parse


def _parse_pause(args: Mapping[str, object]) -> ControlRequest:
    _only("pause", args, frozenset({"seconds"}))
    seconds = args.get("seconds")
    if seconds is None:
        return Pause()
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise _bad("pause", "`seconds` must be a number, or null for until `resume`")
    if not 0 < seconds <= MAX_PAUSE_S:  # NaN and infinity fail this too
        raise _bad("pause", f"`seconds` must be more than 0 and at most {MAX_PAUSE_S:.0f} (a year)")
    return Pause(float(seconds))


def _parse_undo(args: Mapping[str, object]) -> ControlRequest:
    _only("undo", args, frozenset({"batch", "force"}))
    batch, force = args.get("batch"), args.get("force", False)
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int)):
        raise _bad("undo", "`batch` must be a batch number, or null for the last one")
    if batch is not None and not 0 < batch <= MAX_BATCH:
        raise _bad("undo", f"`batch` must be more than 0 and at most {MAX_BATCH}")
    if not isinstance(force, bool):
        raise _bad("undo", "`force` must be true or false")
    return Undo(batch, force)


MAX_FORCED = 100_000  # paths in one `forced` request
MAX_PATH = 4096


def _parse_forced(args: Mapping[str, object]) -> ControlRequest:
    _only("forced", args, frozenset({"paths", "batch"}))
    paths, batch = args.get("paths"), args.get("batch")
    if not isinstance(paths, list) or len(paths) > MAX_FORCED:
        raise _bad("forced", f"`paths` must be a list of at most {MAX_FORCED} paths")
    if not all(isinstance(p, str) and 0 < len(p) <= MAX_PATH for p in paths):
        raise _bad("forced", "each of `paths` must be a non-empty local path")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int)):
        raise _bad("forced", "`batch` must be a batch number or null")
    if batch is not None and not 0 < batch <= MAX_BATCH:
        raise _bad("forced", f"`batch` must be more than 0 and at most {MAX_BATCH}")
    return Forced(tuple(str(p) for p in paths), batch)


Parser = Callable[[Mapping[str, object]], ControlRequest]

# The commands the socket accepts: name → the parser of its arguments.
COMMANDS: Mapping[str, Parser] = {
    StatusQuery.command: _no_arguments(StatusQuery),
    Pause.command: _parse_pause,
    Resume.command: _no_arguments(Resume),
    Flush.command: _no_arguments(Flush),
    Reconnect.command: _no_arguments(Reconnect),
    Undo.command: _parse_undo,
    Stop.command: _no_arguments(Stop),
    Reload.command: _no_arguments(Reload),
    Forced.command: _parse_forced,
}


def parse_request(command: object, args: object) -> ControlRequest:
    """The typed request for ``command`` with ``args`` (from JSON), or a ``UsageError``."""
    parse = COMMANDS.get(command) if isinstance(command, str) else None
    if parse is None:
        raise UsageError(f"unknown command {_shorten(repr(command))}")
    if not isinstance(args, dict):
        raise _bad(str(command), "expected an object")
    return parse(args)


def service_manager() -> str | None:
    """The service manager this process runs under, as its environment tells: systemd sets
    ``INVOCATION_ID`` for every unit it starts, launchd ``XPC_SERVICE_NAME`` for a job."""
    if os.environ.get("INVOCATION_ID"):
        return "systemd"
    if os.environ.get("XPC_SERVICE_NAME", "0") not in ("", "0"):
        return "launchd"
    return None


def _cannot_reload() -> Result:
    raise UsageError("this daemon cannot reload its config; restart it")


# -- handling, on the engine thread ---------------------------------------------------------------


class RequestHandlers:
    """What each request does. Expected failures raise ``OpswatchError`` (the reply carries
    its message and exit code); the engine's guard takes anything else."""

    def __init__(
        self,
        *,
        sender: Sender,
        pause: PauseStore,
        link: LinkKeeper,
        clock: Callable[[], float],
        connect_now: Callable[[], None],
        status: Callable[[], Status],
        history: HistoryKeeper,
        connected: Callable[[], bool],
        stop: Callable[[], None],
    ) -> None:
        self.sender = sender
        self.pause = pause
        self.link = link
        self.clock = clock
        self.connect_now = connect_now  # raises ConnectError when the server can't be reached
        self.status = status
        self.history = history
        self.connected = connected
        self.stop = stop
        # Set by whoever can build a daemon for a new config (``daemon.reload``); until then a
        # reload is refused rather than half done.
        self.reload: Callable[[], Result] = _cannot_reload

    def handle(self, request: EngineRequest) -> Result:
        match request:
            case StatusQuery():
                return self.status().to_json()
            case Pause(seconds=seconds):
                return self._pause(seconds)
            case Resume():
                return self._resume()
            case Flush():
                return self._flush()
            case Reconnect():
                self.link.reconnect(self.clock())
                return {}
            case Undo(batch=batch, force=force):
                return self._undo(batch, force)
            case Stop():
                log.info("stop_requested")
                self.stop()
                return {"stopping": True, "service_manager": service_manager()}
            case Reload():
                return self.reload()
            case Forced(paths=paths, batch=batch):
                return {"conflicts_cleared": self.sender.forced(paths, batch)}
            case RollBack(batch=batch, paths=paths):
                with self.sender.syncing_pass():
                    return {"to": self.history.roll_back(batch, paths)}
        assert_never(request)

    def _pause(self, seconds: float | None) -> Result:
        self.pause.pause(seconds)
        until = iso(self.pause.ends_at)
        log.info("paused", until=until)
        return {"paused_until": until}

    def _resume(self) -> Result:
        was_paused = self.pause.resume()
        log.info("resumed", pending=len(self.sender.pending_paths()))
        try:
            result = self._flush()
        except RemoteError as exc:
            # Resumed all the same: what is still pending goes once the connection is back.
            return {"sent": 0, "pending": len(self.sender.pending_paths()), "error": str(exc)}
        return {**result, "was_paused": was_paused}

    def _flush(self) -> Result:
        """Send everything pending now (held and failed files too); answer once it landed."""
        self.connect_now()
        report = self.sender.flush()
        if report is None:
            return {"sent": 0, "removed": 0, "removed_folders": 0, "failed": {}}
        if report.failed or report.refused:
            count = len(report.failed) + len(report.refused)
            raise RemoteError(f"{count} file(s) failed: {self.sender.error}")
        return {
            "sent": len(report.uploaded),
            "removed": len(report.removed),
            "removed_folders": len(report.removed_folders),
            "failed": {},
        }

    def _undo(self, batch: int | None, force: bool) -> Result:
        """``opswatch undo``: the files go back here, on the engine thread; the command waits
        for the rebuilds in the history, when this daemon rebuilds at all."""
        undoer = self.history.undoer()
        if not self.connected():
            raise ConnectError(self.link.error or "not connected")
        with self.sender.syncing_pass():
            done = undoer.undo(batch, force=force)
        self.sender.undone(done.locals, done.batch)
        return {
            "undone": done.undone,
            "batch": done.batch,
            "restored": list(done.restored),
            "removed": list(done.removed),
            "locals": list(done.locals),
            "rebuilds": bool(self.sender.after_batch),
        }
