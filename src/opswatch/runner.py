"""``opswatch run``: build the daemon for a config, serve it until SIGTERM/SIGINT, exit 0.

Around the engine: the daemon lock (one daemon per config), the control socket, sd_notify
READY/STATUS/STOPPING, and the optional desktop notice. The first SIGTERM/SIGINT lets the
current upload finish (it lands whole, by rename) and keeps what is pending for the next start;
a second one abandons the upload in flight, whose temp file is then removed.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import structlog

from opswatch import sdnotify
from opswatch.config import Config
from opswatch.control import ControlServer, DaemonLock
from opswatch.daemon import Daemon
from opswatch.notify import DesktopNotifier, Listener, StatusMonitor, service_status, summary
from opswatch.paths import StatePaths
from opswatch.remote import SshRemote
from opswatch.service import agent_problem
from opswatch.sshconf import resolve_endpoint

log = structlog.get_logger("opswatch.run")


class _Abandon(BaseException):
    """Raised by a second stop signal in the engine thread: unwind the upload in flight."""


def build_daemon(config: Config, paths: StatePaths) -> Daemon:
    remote = SshRemote(resolve_endpoint(config.remote))
    daemon = Daemon(config, paths.ensure(), remote)
    if config.rebuild.mode == "auto":
        from opswatch.rebuild import attach_rebuilds

        attach_rebuilds(daemon, remote)
    return daemon


def run_daemon(config: Config, paths: StatePaths) -> int:
    paths = paths.ensure()
    with DaemonLock(paths.lock_file, config.source):
        daemon = build_daemon(config, paths)
        server = ControlServer(daemon, paths)
        server.start()
        try:
            return _serve(daemon, config)
        finally:
            server.stop()


def _serve(daemon: Daemon, config: Config) -> int:
    signals = 0

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("stopping", signal=signal.Signals(signum).name)
            daemon.stop()
            return
        log.warning("abandoning", signal=signal.Signals(signum).name)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise _Abandon

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
    except _Abandon:
        log.warning("abandoned", detail="the upload in flight was abandoned; its temp file removed")
    finally:
        if threading.current_thread() is threading.main_thread():
            # From here on a signal must not interrupt the cleanup; a third one is moot anyway.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        sdnotify.stopping()
        monitor.stop()
    return 0
