"""``opswatch run``: build the daemon for a config, serve it until SIGTERM/SIGINT, exit 0."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import structlog

from opswatch.config import Config
from opswatch.daemon import Daemon
from opswatch.paths import StatePaths
from opswatch.remote import SshRemote
from opswatch.sshconf import resolve_endpoint

log = structlog.get_logger("opswatch.run")


def build_daemon(config: Config, paths: StatePaths) -> Daemon:
    remote = SshRemote(resolve_endpoint(config.remote))
    return Daemon(config, paths.ensure(), remote)


def run_daemon(config: Config, paths: StatePaths) -> int:
    daemon = build_daemon(config, paths)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
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
    daemon.run()
    return 0
