"""Rebuilding the compose services a landed batch affects, on a worker thread of its own.

The engine thread only decides (``RebuildHook``, after a batch has fully landed) and hands work
to a ``RebuildWorker`` thread, which carries it out (``deploy.Deployer``) on exec channels of the
same SSH transport, so uploads keep flowing while a build takes minutes. The SFTP client stays
with the engine thread. Neither knows the daemon: the worker asks ``held()`` and hands each
result to ``record``, callbacks the daemon wires up (``daemon.rebuilds``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import structlog

from opswatch.core.compose import APPLY
from opswatch.errors import ConnectError, OpswatchError
from opswatch.model import RebuildResult
from opswatch.rebuild.deploy import ComposeView, Deployer, Work

if TYPE_CHECKING:
    from opswatch.sync.syncer import PassReport

log = structlog.get_logger("opswatch.rebuild")

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
    """Called with each pass's report (``daemon.after_batch``): once a batch has fully landed,
    hand its rebuilds to the worker.

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
        self.deferred.update(dict.fromkeys([*report.landed, *report.triggered]))
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
