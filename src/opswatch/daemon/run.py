"""``opswatch run``: build the daemon for a config, serve it until SIGTERM/SIGINT or
``opswatch stop``, exit 0; on ``opswatch reload``, SIGHUP or a changed config file, hand over to a
daemon built for the new config (``daemon.reload``).

Around the engine: the daemon lock (one daemon per config), the control socket, sd_notify
READY/STATUS/STOPPING, and the optional desktop notice. SIGTERM/SIGINT let the batch in flight
finish (each file lands whole, by rename) and keep what is pending for the next start. Nothing
is interrupted mid-upload: an exception raised from a signal handler inside paramiko would leave
the SFTP stream half-read and the temp file on the server. A service manager that loses patience
sends SIGKILL; the target is still never partial, only a temp name may stay behind.

The stop has deadlines, so that SIGTERM ends the process within 10 s whatever it waits on: the
batch in flight gets ``STOP_GRACE_S`` (then the connection is cut and what did not land stays
pending); the rebuild worker (a build or a health check may take minutes) and the other helpers
are daemon threads, never waited for; and should the engine still not be done
``FORCE_EXIT_S`` after the signal, the process exits anyway (``stop_forced`` is logged).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from opswatch.config import Config
from opswatch.daemon import sdnotify
from opswatch.daemon.control import ControlServer
from opswatch.daemon.engine import Daemon
from opswatch.daemon.lock import DaemonLock
from opswatch.daemon.notify import DesktopNotifier, Listener, StatusMonitor, service_status, summary
from opswatch.daemon.reload import Reloader, hand_over
from opswatch.daemon.requests import Reload
from opswatch.errors import StateError
from opswatch.paths import StatePaths
from opswatch.ssh.agent import agent_problem
from opswatch.ssh.endpoint import resolve_endpoint
from opswatch.ssh.remote import SshRemote

if TYPE_CHECKING:
    from opswatch.core.builds import BuildGap

log = structlog.get_logger("opswatch.run")

FORCE_EXIT_S = 9.0  # after SIGTERM; a service manager's patience is usually 10 s or more


def build_daemon(config: Config, paths: StatePaths) -> Daemon:
    remote = SshRemote(resolve_endpoint(config.remote))
    daemon = Daemon(config, paths.ensure(), remote)
    if config.rebuild.compose_file is not None:
        from opswatch.rebuild.sources import BuildGapWatch

        def publish(gaps: Sequence[BuildGap]) -> None:
            daemon.build_gaps = tuple(gap.to_json() for gap in gaps)

        daemon.after_batch.append(BuildGapWatch(config, daemon.router, remote.stat_many, publish))
    if config.rebuild.mode == "auto":
        from opswatch.core.when import unmatchable_when
        from opswatch.daemon.rebuilds import attach_rebuilds  # loads the compose parser

        when = [(s.name, s.when) for s in config.rebuild.services]
        for problem in unmatchable_when(when, config.watched_folders, daemon.router.never_reason):
            log.warning("rebuild_when_unmatchable", detail=problem)
        attach_rebuilds(daemon, remote)
    return daemon


def run_daemon(config: Config, paths: StatePaths) -> int:
    """Serve until SIGTERM/SIGINT or ``opswatch stop`` (exit 0). Whatever fails before the
    engine runs is an ``OpswatchError``: one ``error:`` line, never a traceback."""
    paths = paths.ensure()
    with DaemonLock(paths.lock_file, config.source):
        daemon = _reloadable(build_daemon(config, paths), paths)
        server = ControlServer(daemon, paths)
        try:
            server.start()
        except OSError as exc:
            raise StateError(f"cannot listen on {paths.socket}: {exc.strerror or exc}") from None
        try:
            return _serve(daemon, server)
        finally:
            server.stop()


def _force_exit() -> None:
    """The last deadline: the engine is stuck where cutting the connection could not reach.
    What was pending is found again by the next start's reconcile."""
    log.warning("stop_forced", seconds=FORCE_EXIT_S)
    sys.stderr.flush()
    os._exit(0)


def _reloadable(daemon: Daemon, paths: StatePaths) -> Daemon:
    Reloader(daemon, lambda config: _reloadable(build_daemon(config, paths), paths))
    return daemon


def _serve(first: Daemon, server: ControlServer) -> int:
    current = [first]  # the daemon serving now: a reload replaces it

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        daemon = current[0]
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            log.info("reload_requested", signal=name)
            daemon.submit(Reload())  # the engine thread reloads; the result is in the log
            return
        if daemon.stopping.is_set():
            log.info("stopping", signal=name, detail="still finishing the upload in flight")
            return
        log.info("stopping", signal=name)
        daemon.stop()
        force = threading.Timer(FORCE_EXIT_S, _force_exit)
        force.daemon = True
        force.start()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, on_signal)
    _log_start(first.config)
    listeners: list[Listener] = [service_status]
    if first.config.notify:
        listeners.append(DesktopNotifier())
    monitor = StatusMonitor(lambda: current[0].status(), listeners)
    sdnotify.ready(summary(first.status()))
    monitor.start()
    try:
        while True:
            daemon = current[0]
            daemon.run()
            successor = daemon.successor
            if successor is None or daemon.stopping.is_set():
                return 0
            current[0] = successor
            server.daemon = successor  # before the old one is marked stopping: see ControlServer
            hand_over(daemon, successor)
            _log_start(successor.config)
    finally:
        sdnotify.stopping()
        monitor.stop()


def _log_start(config: Config) -> None:
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
