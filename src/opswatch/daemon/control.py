"""The control channel: a Unix socket speaking JSON lines, its server and its client.

One request per connection: the client sends ``{"v": 1, "cmd": "…", "args": {…}}`` and a newline,
the server answers ``{"v": 1, "ok": true, "result": {…}}`` (or ``"ok": false`` with ``error`` and
``exit``) and closes. The request is parsed into a typed one (``daemon.requests``) right here, at
the socket: anything that does not parse (bad JSON, an unknown command or argument, a wrong type,
an absurd duration, a line over ``MAX_REQUEST`` bytes) gets an error reply and never reaches the
engine. ``status`` is answered on the server's thread from the daemon's snapshot, so it answers
even while the engine is busy with a long batch; every other command goes through
``daemon.submit`` and the engine thread.

Only the daemon's own uid may talk to it: the socket folder is 0700 and each peer's uid is checked
(SO_PEERCRED / LOCAL_PEERCRED). At most ``MAX_CONNECTIONS`` are served at once, and each must send
its request within ``REQUEST_DEADLINE_S``: a flood of connections costs a refusal each, not a
thread each.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import struct
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Protocol

import structlog

from opswatch.daemon.guard import describe
from opswatch.daemon.requests import ControlRequest, StatusQuery, parse_request
from opswatch.errors import ConfigError, NotRunningError, OpswatchError, UsageError
from opswatch.model import Status
from opswatch.paths import StatePaths

log = structlog.get_logger("opswatch.control")

PROTOCOL_VERSION = 1
MAX_REQUEST = 64 * 1024
MAX_REPLY = 64 * 1024 * 1024  # a status with every path of a big tree pending
REQUEST_DEADLINE_S = 10.0
MAX_CONNECTIONS = 16
ENVELOPE = frozenset({"v", "cmd", "args"})
# sun_path is 108 bytes on Linux and 104 on macOS and the BSDs, both counting the final NUL.
MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103


class Controllable(Protocol):
    """What the server needs from the daemon."""

    stopping: threading.Event

    def status(self) -> Status: ...
    def submit(self, request: ControlRequest) -> Future[dict[str, object]]: ...


# -- socket helpers ----------------------------------------------------------------------------


def check_socket_path(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise UsageError(
            f"control socket path is too long for a Unix socket ({len(os.fsencode(path))} > "
            f"{MAX_SOCKET_PATH} bytes): {path}; set OPSWATCH_STATE_DIR to a shorter folder"
        )


def peer_uid(conn: socket.socket) -> int | None:
    """The uid of the process at the other end, or None where the platform can't tell."""
    if hasattr(socket, "SO_PEERCRED"):  # Linux: struct ucred {pid, uid, gid}
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", raw)[1])
    if sys.platform == "darwin":  # struct xucred {u_int version; uid_t uid; …}, SOL_LOCAL = 0
        local_peercred = getattr(socket, "LOCAL_PEERCRED", 0x001)
        raw = conn.getsockopt(0, local_peercred, 76)
        return int(struct.unpack_from("=II", raw)[1])
    return None


def _read_line(conn: socket.socket, limit: int, deadline: float | None = None) -> bytes:
    """One line, without its newline: ``ValueError`` past ``limit`` bytes, ``TimeoutError``
    past ``deadline`` (monotonic), however slowly the bytes trickle in."""
    chunks: list[bytes] = []
    size = 0
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete request in time")
            conn.settimeout(left)
        chunk = conn.recv(65536)
        if not chunk:
            break
        head, newline, _rest = chunk.partition(b"\n")
        chunks.append(head)
        size += len(head)
        if size > limit:
            raise ValueError(f"longer than {limit} bytes")
        if newline:
            break
    return b"".join(chunks)


def _send_line(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


# -- server ------------------------------------------------------------------------------------


class ControlServer:
    """Listens on ``paths.socket`` on its own thread; one short-lived thread per connection, at
    most ``MAX_CONNECTIONS`` at once."""

    def __init__(
        self, daemon: Controllable, paths: StatePaths, *, allowed_uid: int | None = None
    ) -> None:
        self.daemon = daemon
        self.path = paths.socket
        self.runtime = paths.runtime
        self.allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._inode: int | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def start(self) -> None:
        """Bind (the caller holds the daemon lock, so any socket file here is stale) and serve."""
        check_socket_path(self.path)
        old_umask = os.umask(0o077)
        try:
            self.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.runtime, 0o700)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        listener.listen(MAX_CONNECTIONS * 4)
        self._listener = listener
        self._inode = self.path.stat().st_ino
        self._thread = threading.Thread(target=self._serve, name="opswatch-control", daemon=True)
        self._thread.start()
        log.info("control_listening", socket=str(self.path))

    def stop(self) -> None:
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        with contextlib.suppress(OSError):
            if self._inode is not None and self.path.stat().st_ino == self._inode:
                self.path.unlink()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _serve(self) -> None:
        assert self._listener is not None
        while True:
            watched: list[socket.socket | int] = [self._listener, self._wake_r]
            readable, _, _ = select.select(watched, [], [])
            if self._wake_r in readable:
                return
            try:
                conn, _addr = self._listener.accept()
            except OSError:
                continue
            if not self._slots.acquire(blocking=False):
                _refuse_busy(conn)
                continue
            threading.Thread(
                target=self._serve_one, args=(conn,), name="opswatch-control-conn", daemon=True
            ).start()

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            with conn:
                reply = self._reply_to(conn)
                with contextlib.suppress(OSError):
                    conn.settimeout(REQUEST_DEADLINE_S)
                    _send_line(conn, reply)
        finally:
            self._slots.release()

    def _reply_to(self, conn: socket.socket) -> dict[str, Any]:
        try:
            # Read the request even from a stranger: closing with unread data would reset
            # the connection before our answer arrives.
            line = _read_line(conn, MAX_REQUEST, time.monotonic() + REQUEST_DEADLINE_S)
            uid = peer_uid(conn)
            if uid is not None and uid != self.allowed_uid:
                log.warning("control_refused", uid=uid)
                return _failure(f"uid {uid} may not control this opswatch", 1)
            return self.answer(json.loads(line))
        except (OSError, ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            log.warning("control_bad_request", error=reason[:200])
            return _failure(f"bad request: {reason}", 2)
        except Exception as exc:  # the guard of one control request on the server's side
            log.error("internal_error", unit="request", error=describe(exc), exc_info=exc)
            return _failure(f"internal error: {describe(exc)} (traceback in the log)", 1)

    def answer(self, message: object) -> dict[str, Any]:
        """The reply to one decoded request."""
        try:
            request = _parse_envelope(message)
        except UsageError as exc:
            log.warning("control_bad_request", error=str(exc)[:200])
            return _failure(str(exc), exc.exit_code)
        if isinstance(request, StatusQuery):
            return {"v": PROTOCOL_VERSION, "ok": True, "result": self.daemon.status().to_json()}
        log.info("control_request", cmd=request.command)
        try:
            result = self._wait(self.daemon.submit(request))
        except ConfigError as exc:  # `reload`: every problem, each on its own line
            return {**_failure(str(exc), exc.exit_code), "problems": exc.problems}
        except OpswatchError as exc:
            return _failure(str(exc), exc.exit_code)
        return {"v": PROTOCOL_VERSION, "ok": True, "result": result}

    def _wait(self, future: Future[dict[str, object]]) -> dict[str, object]:
        # No deadline: a flush of a big batch takes as long as it takes. Only a stopping daemon,
        # which will never get to the request, ends the wait early.
        while True:
            try:
                return future.result(timeout=0.5)
            except FutureTimeout:
                if self.daemon.stopping.is_set():
                    raise OpswatchError(
                        "opswatch is stopping; the request was not carried out"
                    ) from None


def _parse_envelope(message: object) -> ControlRequest:
    if not isinstance(message, dict):
        raise UsageError("bad request: expected a JSON object")
    unknown = sorted(repr(key)[:40] for key in message if key not in ENVELOPE)
    if unknown:
        raise UsageError(f"bad request: unknown field(s) {', '.join(unknown[:5])}")
    version = message.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise UsageError(
            f"control protocol version {repr(version)[:40]} not understood (the running daemon "
            f"speaks {PROTOCOL_VERSION}); restart opswatch after an upgrade"
        )
    return parse_request(message.get("cmd"), message.get("args", {}))


def _failure(message: str, exit_code: int) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "ok": False, "error": message, "exit": exit_code}


def _refuse_busy(conn: socket.socket) -> None:
    """Answer without reading or waiting: the accept loop must never block on a client."""
    with conn, contextlib.suppress(OSError):
        conn.setblocking(False)
        _send_line(conn, _failure("busy: too many control connections at once; try again", 1))


# -- client ------------------------------------------------------------------------------------


class ControlClient:
    def __init__(self, paths: StatePaths, config: Path | str) -> None:
        self.path = paths.socket
        self.config = config

    def request(self, cmd: str, *, timeout: float | None = 10.0, **args: Any) -> dict[str, Any]:
        """Send one command and return its result; ``timeout=None`` waits as long as it takes."""
        check_socket_path(self.path)
        not_running = NotRunningError(f"opswatch is not running (config {self.config})")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5.0)
            try:
                conn.connect(str(self.path))
            except (FileNotFoundError, ConnectionRefusedError):
                raise not_running from None
            except OSError as exc:
                raise OpswatchError(f"cannot reach opswatch at {self.path}: {exc}") from exc
            conn.settimeout(timeout)
            try:
                _send_line(conn, {"v": PROTOCOL_VERSION, "cmd": cmd, "args": args})
                line = _read_line(conn, MAX_REPLY)
            except TimeoutError:
                raise OpswatchError(f"opswatch did not answer `{cmd}` in {timeout:g} s") from None
            except ValueError as exc:
                raise OpswatchError(f"opswatch's answer to `{cmd}` is {exc}") from None
            except OSError as exc:
                raise OpswatchError(f"control connection failed: {exc}") from exc
        return _unpack(line, cmd, not_running)


def _unpack(line: bytes, cmd: str, not_running: NotRunningError) -> dict[str, Any]:
    if not line:
        raise not_running  # it stopped while we asked
    try:
        reply = json.loads(line)
    except ValueError:
        raise OpswatchError(f"opswatch answered `{cmd}` with something unreadable") from None
    if not isinstance(reply, dict) or reply.get("v") != PROTOCOL_VERSION:
        raise OpswatchError(
            "the running opswatch speaks another control protocol version; restart it"
        )
    problems = reply.get("problems")
    if not reply.get("ok") and isinstance(problems, list) and problems:
        raise ConfigError([str(problem) for problem in problems])
    if not reply.get("ok"):
        error = OpswatchError(str(reply.get("error") or "request failed"))
        error.exit_code = int(reply.get("exit") or 1)
        raise error
    result = reply.get("result")
    return result if isinstance(result, dict) else {}
