"""Rebuilding the compose services a landed batch affects, on a worker thread of its own.

The engine thread only decides (``RebuildHook``, after a batch has fully landed) and hands work
to a ``RebuildWorker`` thread, which carries it out (``deploy.Deployer``) on exec channels of the
same SSH transport, so uploads keep flowing while a build takes minutes. The SFTP client stays
with the engine thread; results go back to it as a ``rebuilt`` request, where status is made.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from typing import TYPE_CHECKING

import structlog

from opswatch.config import Config
from opswatch.core.compose import APPLY
from opswatch.errors import ConnectError, HistoryError, OpswatchError
from opswatch.model import RebuildResult, State
from opswatch.rebuild.deploy import ComposeView, Deployer, Rollback, Work

if TYPE_CHECKING:
    from opswatch.daemon.engine import Daemon
    from opswatch.ssh.remote import SshRemote
    from opswatch.sync.syncer import PassReport

log = structlog.get_logger("opswatch.rebuild")

ROLLBACK_WAIT_S = 600.0  # the engine takes the request after the batch in flight
MAX_RETRIES = 3  # a piece of work cut by a dropped connection is tried again this often


class RebuildWorker:
    """The thread that runs rebuilds. Work for a service queued while it runs merges into one
    follow-up; nothing starts while ``held()`` (paused or offline)."""

    def __init__(
        self,
        deployer: Deployer,
        *,
        held: Callable[[], bool],
        record: Callable[[RebuildResult], None],
        stopping: threading.Event,
    ) -> None:
        self.deployer = deployer
        self.held = held
        self.record = record
        self.stopping = stopping
        self._cond = threading.Condition()
        self._pending: dict[str, None] = {}
        self._apply = False
        self._batch: int | None = None
        self._running = False
        self._retries = 0
        self._thread = threading.Thread(target=self._loop, name="opswatch-rebuild", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request(self, work: Work) -> None:
        """Queue ``work`` (thread-safe); what is already queued is not queued twice."""
        with self._cond:
            self._pending.update(dict.fromkeys(work.services))
            self._apply = self._apply or work.apply
            if work.batch is not None:
                self._batch = max(work.batch, self._batch or 0)
            self._cond.notify_all()

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._running and not self._pending and not self._apply

    def _take(self) -> Work | None:
        with self._cond:
            while not self.stopping.is_set():
                if (self._pending or self._apply) and not self.held():
                    work = Work(tuple(self._pending), self._apply, self._batch)
                    self._pending.clear()
                    self._apply = False
                    self._batch = None
                    self._running = True
                    return work
                self._cond.wait(0.2)  # held() has no event to wait on: look again shortly
            return None

    def _loop(self) -> None:
        while (work := self._take()) is not None:
            try:
                self._deploy(work)
            finally:
                with self._cond:
                    self._running = False

    def _deploy(self, work: Work) -> None:
        log.info("rebuild", services=list(work.services), apply=work.apply)
        try:
            results = self.deployer.deploy(work)
        except ConnectError as exc:
            if self.stopping.is_set():
                return
            self._retries += 1
            retry = self._retries <= MAX_RETRIES
            detail = f"connection lost: {exc}" + (
                "; will retry after reconnecting" if retry else ""
            )
            results = [self.deployer.result(s, False, detail) for s in _keys(work)]
            if retry:
                self.request(work)
            else:
                self._retries = 0
        except OpswatchError as exc:
            results = [self.deployer.result(s, False, str(exc)) for s in _keys(work)]
        except Exception as exc:  # the thread must outlive a bug: later rebuilds still run
            log.exception("rebuild_crashed")
            detail = f"internal error: {type(exc).__name__}: {exc}"
            results = [self.deployer.result(s, False, detail) for s in _keys(work)]
        else:
            self._retries = 0
        for result in results:
            self.record(replace(result, batch=result.batch or work.batch))


def _keys(work: Work) -> list[str]:
    return [*work.services, *([APPLY] if work.apply else [])]


class RebuildHook:
    """``daemon.after_batch``: once a batch has fully landed, hand its rebuilds to the worker.

    Paths that landed while a file of the same batch failed, or changed while being sent, wait
    (``deferred``) if the missing file affects a service too: never build from a half-synced tree.
    """

    def __init__(
        self, view: ComposeView, worker: RebuildWorker, *, first_copy: bool = False
    ) -> None:
        self.view = view
        self.worker = worker
        self.deferred: dict[str, None] = {}
        # With an empty manifest the first pass copies every file: that is not an edit, and
        # rebuilding every service for it would surprise; `opswatch rebuild` deploys by hand.
        self.first_copy = first_copy

    def __call__(self, report: PassReport) -> None:
        if self.first_copy:
            self.first_copy = False
            if report.landed:
                log.info(
                    "rebuild_skipped", reason="first copy to this server", files=len(report.landed)
                )
                return
        self.deferred.update(dict.fromkeys(report.landed))
        if not self.deferred:
            return
        missing = [*report.failed, *report.changed_meanwhile]
        if missing and self.view.affected(missing):
            log.info("rebuild_deferred", waiting_for=missing[:5])
            return
        paths, self.deferred = list(self.deferred), {}
        found = self.view.affected(paths)
        for problem in found.problems:
            log.warning("rebuild_problem", detail=problem)
        if found:
            log.info("rebuild_queued", services=list(found.services), apply=found.apply)
            for service, reason in found.reasons:
                log.debug("rebuild_reason", service=service, reason=reason)
            self.worker.request(Work(found.services, found.apply, report.batch))


def attach_rebuilds(daemon: Daemon, remote: SshRemote) -> RebuildWorker:
    """Wire rebuilds into ``daemon``: a hook after each batch, a worker on its transport."""
    view = ComposeView(daemon.config, daemon.router.targets)
    deployer = Deployer(view, remote.run, rollback=rollback_through(daemon, view))

    def held() -> bool:
        status = daemon.status()
        return status.state is State.PAUSED or not status.connected

    def record(result: RebuildResult) -> None:
        daemon.submit(
            "rebuilt",
            service=result.service,
            ok=result.ok,
            at=result.at,
            detail=result.detail,
            batch=result.batch,
            rolled_back=result.rolled_back,
        )
        if not result.ok:
            notify_failure(daemon.config, result)

    worker = RebuildWorker(deployer, held=held, record=record, stopping=daemon.stopping)
    first_copy = not daemon.manifest.all()
    daemon.after_batch.append(RebuildHook(view, worker, first_copy=first_copy))
    worker.start()
    return worker


def rollback_through(daemon: Daemon, view: ComposeView) -> Rollback:
    """The deployer's rollback in a daemon: the engine thread puts the files back (it owns
    the SFTP channel); this worker thread waits for it, then rebuilds."""
    compose = daemon.config.rebuild.compose_file

    def rollback(batch: int, service: str) -> str:
        recorder = daemon.recorder
        record = recorder.history.get(batch) if recorder is not None else None
        if record is None:
            raise HistoryError(f"batch {batch} is not in the deploy history")
        paths = [
            f.local
            for f in record.files
            if f.local == compose or service in view.affected([f.local]).services
        ]
        reply = daemon.submit("rollback", batch=batch, paths=paths)
        try:
            return str(reply.result(timeout=ROLLBACK_WAIT_S)["to"])
        except FutureTimeout:
            raise OpswatchError("the engine did not put the files back in time") from None

    return rollback


def notify_failure(config: Config, result: RebuildResult) -> None:
    """A desktop notice for a failed rebuild when ``notify = true`` (on the worker thread)."""
    if not config.notify:
        return
    from opswatch.daemon.notify import DesktopNotifier, notice_command

    first = result.detail.splitlines()[0] if result.detail else "failed"
    command = notice_command(f"opswatch: rebuild {result.service}", first)
    if command is not None:
        try:
            DesktopNotifier().run(command)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("notice_failed", error=str(exc))
