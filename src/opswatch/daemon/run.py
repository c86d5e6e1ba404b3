"""``opswatch run``: build the daemon for a config, serve it until SIGTERM/SIGINT, exit 0.

Around the engine: the daemon lock (one daemon per config), the control socket, sd_notify
READY/STATUS/STOPPING, and the optional desktop notice. SIGTERM/SIGINT let the batch in flight
finish (each file lands whole, by rename) and keep what is pending for the next start. Nothing
is interrupted mid-upload: an exception raised from a signal handler inside paramiko would leave
the SFTP stream half-read and the temp file on the server. A service manager that loses patience
sends SIGKILL; the target is still never partial, only a temp name may stay behind.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import structlog

from opswatch.config import Config
from opswatch.daemon import sdnotify
from opswatch.daemon.control import ControlServer
from opswatch.daemon.engine import Daemon
from opswatch.daemon.lock import DaemonLock
from opswatch.daemon.notify import DesktopNotifier, Listener, StatusMonitor, service_status, summary
from opswatch.errors import StateError
from opswatch.paths import StatePaths
from opswatch.ssh.agent import agent_problem
from opswatch.ssh.endpoint import resolve_endpoint
from opswatch.ssh.remote import SshRemote

log = structlog.get_logger("opswatch.run")


def build_daemon(config: Config, paths: StatePaths) -> Daemon:
    remote = SshRemote(resolve_endpoint(config.remote))
    daemon = Daemon(config, paths.ensure(), remote)
    if config.rebuild.mode == "auto":
        from opswatch.daemon.rebuilds import attach_rebuilds  # loads the compose parser

        attach_rebuilds(daemon, remote)
    return daemon


def run_daemon(config: Config, paths: StatePaths) -> int:
    """Serve until SIGTERM/SIGINT (exit 0). Whatever fails before the engine runs is an
    ``OpswatchError``: one ``error:`` line, never a traceback."""
    paths = paths.ensure()
    with DaemonLock(paths.lock_file, config.source):
        daemon = build_daemon(config, paths)
        server = ControlServer(daemon, paths)
        try:
            server.start()
        except OSError as exc:
            raise StateError(f"cannot listen on {paths.socket}: {exc.strerror or exc}") from None
        try:
            return _serve(daemon, config)
        finally:
            server.stop()


def _serve(daemon: Daemon, config: Config) -> int:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if daemon.stopping.is_set():
            log.info("stopping", signal=name, detail="still finishing the upload in flight")
            return
        log.info("stopping", signal=name)
        daemon.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    log.info(
        "starting",
        config=str(config.source),
        root=str(config.local_root),
        host=config.remote.host,
        folders=list(config.watched_folders),
    )
    problem = agent_problem()
    if problem:
        log.warning("agent_unreachable", detail=problem)
    listeners: list[Listener] = [service_status]
    if config.notify:
        listeners.append(DesktopNotifier())
    monitor = StatusMonitor(daemon.status, listeners)
    sdnotify.ready(summary(daemon.status()))
    monitor.start()
    try:
        daemon.run()
    finally:
        sdnotify.stopping()
        monitor.stop()
    return 0
