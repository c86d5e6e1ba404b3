"""The control channel: a Unix socket speaking JSON lines, its server, its client, the daemon lock.

One request per connection: the client sends ``{"v": 1, "cmd": "…", "args": {…}}`` and a newline,
the server answers ``{"v": 1, "ok": true, "result": {…}}`` (or ``"ok": false`` with ``error`` and
``exit``) and closes. ``status`` is answered on the server's thread from the daemon's snapshot, so
it answers even while the engine is busy with a long batch; every other command goes through
``daemon.submit`` and the engine thread. Only the daemon's own uid may talk to it: the socket
folder is 0700 and each peer's uid is checked (SO_PEERCRED / LOCAL_PEERCRED).

The daemon holds an ``flock`` on the lock file while it runs. The kernel drops it when the
process dies, even by ``kill -9``, so a socket left behind is known to be stale without probing it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import select
import socket
import struct
import sys
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Protocol

import structlog

from opswatch.errors import AlreadyRunningError, NotRunningError, OpswatchError, UsageError
from opswatch.model import Status
from opswatch.paths import StatePaths

log = structlog.get_logger("opswatch.control")

PROTOCOL_VERSION = 1
MAX_LINE = 64 * 1024
# sun_path is 108 bytes on Linux and 104 on macOS and the BSDs, both counting the final NUL.
MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103
ENGINE_COMMANDS = frozenset({"pause", "resume", "flush", "reconnect", "undo"})


class Controllable(Protocol):
    """What the server needs from the daemon."""

    stopping: threading.Event

    def status(self) -> Status: ...
    def submit(self, name: str, **args: Any) -> Future[dict[str, Any]]: ...


# -- the lock ----------------------------------------------------------------------------------


class DaemonLock:
    """An exclusive ``flock`` on ``path`` holding the owner's pid; gone when the process ends."""

    def __init__(self, path: Path, config: Path | str) -> None:
        self.path = path
        self.config = config
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise AlreadyRunningError(
                f"opswatch is already running for {self.config} (pid {owner})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock; the file stays, so no unlink race
        self._fd = None

    def __enter__(self) -> DaemonLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


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


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_LINE:
            raise ValueError("request too long")
    return data.split(b"\n", 1)[0]


def _send_line(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


# -- server ------------------------------------------------------------------------------------


class ControlServer:
    """Listens on ``paths.socket`` on its own thread; one short-lived thread per connection."""

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
        listener.listen(16)
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
            threading.Thread(
                target=self._serve_one, args=(conn,), name="opswatch-control-conn", daemon=True
            ).start()

    def _serve_one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                # Read the request even from a stranger: closing with unread data would reset
                # the connection before our answer arrives.
                line = _read_line(conn)
                uid = peer_uid(conn)
                if uid is not None and uid != self.allowed_uid:
                    log.warning("control_refused", uid=uid)
                    reply = _failure(f"uid {uid} may not control this opswatch", 1)
                else:
                    reply = self.answer(json.loads(line))
            except (OSError, ValueError) as exc:
                reply = _failure(f"bad request: {exc}", 2)
            with contextlib.suppress(OSError):
                _send_line(conn, reply)

    def answer(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return _failure("bad request: expected an object with a `cmd`", 2)
        if request.get("v") != PROTOCOL_VERSION:
            return _failure(
                f"control protocol version {request.get('v')!r} not understood (the running "
                f"daemon speaks {PROTOCOL_VERSION}); restart opswatch after an upgrade",
                2,
            )
        cmd = request["cmd"]
        args = request.get("args") or {}
        if cmd == "status":
            return {"v": PROTOCOL_VERSION, "ok": True, "result": self.daemon.status().to_json()}
        if cmd not in ENGINE_COMMANDS or not isinstance(args, dict):
            return _failure(f"unknown command {cmd!r}", 2)
        log.info("control_request", cmd=cmd)
        try:
            result = self._wait(self.daemon.submit(cmd, **args))
        except OpswatchError as exc:
            return _failure(str(exc), exc.exit_code)
        except TypeError as exc:  # arguments the handler does not take
            return _failure(f"bad arguments for {cmd}: {exc}", 2)
        return {"v": PROTOCOL_VERSION, "ok": True, "result": result}

    def _wait(self, future: Future[dict[str, Any]]) -> dict[str, Any]:
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


def _failure(message: str, exit_code: int) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "ok": False, "error": message, "exit": exit_code}


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
                line = _read_line(conn)
            except TimeoutError:
                raise OpswatchError(f"opswatch did not answer `{cmd}` in {timeout:g} s") from None
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
    if not reply.get("ok"):
        error = OpswatchError(str(reply.get("error") or "request failed"))
        error.exit_code = int(reply.get("exit") or 1)
        raise error
    result = reply.get("result")
    return result if isinstance(result, dict) else {}
