"""Wiring rebuilds into the daemon (``rebuild.mode = "auto"``): a hook after each batch, a
worker thread on the daemon's transport, results back to the engine, a notice on failure, and
the rollback a failed health check asks of the engine (``rebuild.on_failure = "rollback"``).

The rebuild package knows nothing of the daemon; this is where the two meet. Imported only when
rebuilds are on: it loads the compose file parser, which a daemon without rebuilds never needs.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import TimeoutError as FutureTimeout

import structlog

from opswatch.config import Config
from opswatch.core.rules import Router
from opswatch.daemon.engine import Daemon
from opswatch.daemon.notify import DesktopNotifier, notice_command
from opswatch.daemon.requests import RollBack
from opswatch.errors import OpswatchError
from opswatch.local.builds import SourceCheck
from opswatch.local.scan import read_ignore_files
from opswatch.model import RebuildResult, State
from opswatch.rebuild.deploy import ComposeView, Deployer, Rollback
from opswatch.rebuild.worker import RebuildHook, RebuildWorker
from opswatch.ssh.remote import SshRemote

log = structlog.get_logger("opswatch.rebuild")

ROLLBACK_WAIT_S = 600.0  # the engine takes the request after the batch in flight


def attach_rebuilds(daemon: Daemon, remote: SshRemote) -> RebuildWorker:
    """A hook after each of ``daemon``'s batches, and a worker on ``remote``'s transport."""
    view = ComposeView(daemon.config, daemon.router.targets)
    # The worker's own router (its memo is not shared across threads) and own SFTP channel.
    config = daemon.config
    router = Router.from_config(
        config, read_ignore_files(config.local_root, config.watched_folders)
    )
    check = SourceCheck(config, router, remote.stat_apart)
    rollback = rollback_through(daemon, ComposeView(config, router.targets))
    deployer = Deployer(view, remote.run, preflight=check.before_build, rollback=rollback)

    def held() -> bool:
        status = daemon.status()
        return status.state is State.PAUSED or not status.connected

    def record(result: RebuildResult) -> None:
        daemon.record_rebuild(result)
        if not result.ok:
            notify_failure(daemon.config, result)

    worker = RebuildWorker(deployer, held=held, record=record, stopping=daemon.stopping)
    first_copy = not daemon.manifest.all()
    daemon.after_batch.append(RebuildHook(view, worker, first_copy=first_copy))
    worker.start()
    return worker


def rollback_through(daemon: Daemon, view: ComposeView) -> Rollback:
    """The deployer's rollback in a daemon: the engine thread puts the files back (it owns the
    SFTP channel); the worker thread, with ``view`` of its own router, waits, then rebuilds."""
    compose = daemon.config.rebuild.compose_file

    def rollback(batch: int, service: str) -> str:
        def wanted(local: str) -> bool:
            return local == compose or service in view.affected([local]).services

        paths = daemon.history.files_for(batch, wanted)
        reply = daemon.submit(RollBack(batch, tuple(paths)))
        try:
            return str(reply.result(timeout=ROLLBACK_WAIT_S)["to"])
        except FutureTimeout:
            raise OpswatchError("the engine did not put the files back in time") from None

    return rollback


def notify_failure(config: Config, result: RebuildResult) -> None:
    """A desktop notice for a failed rebuild when ``notify = true`` (on the worker thread)."""
    if not config.notify:
        return
    first = result.detail.splitlines()[0] if result.detail else "failed"
    command = notice_command(f"opswatch: rebuild {result.service}", first)
    if command is not None:
        try:
            DesktopNotifier().run(command)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("notice_failed", error=str(exc))
