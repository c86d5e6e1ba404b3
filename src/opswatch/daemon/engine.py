"""The engine loop: one thread, one queue, each unit of work under the guard.

The watcher thread, the control server's threads and the rebuild worker only put items on
``events``: file events, submitted requests (each with a ``Future`` the engine resolves), rebuild
results. The engine thread (the one calling ``run``) does all remote I/O and owns all mutable
state. Each turn it keeps the link up, handles what is queued, sends what is due (``Sender``) and
publishes the status; ``status()`` returns that snapshot and is safe from any thread.

Only ``stop()`` ends the loop. An exception nobody expected costs one unit of work, is logged
once with its traceback and shows in ``status`` while it persists (``guard``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace

import structlog

from opswatch.config import Config
from opswatch.core.rules import Router
from opswatch.core.when import watcher_folders
from opswatch.daemon.events import WatchedEvents
from opswatch.daemon.guard import Guard, Unit, describe
from opswatch.daemon.history import HistoryKeeper
from opswatch.daemon.link import PROBE_DEADLINE_S, PROBE_INTERVAL_S, LinkKeeper
from opswatch.daemon.pause import PauseStore
from opswatch.daemon.requests import EngineRequest, RequestHandlers, Result
from opswatch.daemon.sender import AfterBatch, Sender
from opswatch.daemon.status import StatusBuilder
from opswatch.errors import ConnectError, OpswatchError
from opswatch.local.manifest import Manifest
from opswatch.local.scan import read_ignore_files
from opswatch.local.watcher import Watcher
from opswatch.model import RebuildResult, State, Status, tail_text
from opswatch.paths import StatePaths
from opswatch.ssh.remote import Remote
from opswatch.sync.recording import open_recorder
from opswatch.sync.syncer import Syncer

log = structlog.get_logger("opswatch.daemon")

FAILED_RETRY_S = 30.0
TICK_S = 1.0  # the longest the engine waits for an event before looking at its clocks again
# After stop(), the batch in flight gets this long to land; then the connection is cut, so a
# read or write blocked on a black-holed link returns and the engine stops (what did not land
# stays pending: the next start's reconcile sends it). Well within a service manager's patience.
STOP_GRACE_S = 6.0


@dataclass(frozen=True)
class Submitted:
    """A control request on its way to the engine; ``result`` is resolved there."""

    request: EngineRequest
    result: Future[Result]


class Daemon:
    def __init__(
        self,
        config: Config,
        paths: StatePaths,
        remote: Remote,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        watch: bool = True,
        probe_interval_s: float = PROBE_INTERVAL_S,
        probe_deadline_s: float = PROBE_DEADLINE_S,
        failed_retry_s: float = FAILED_RETRY_S,
        stop_grace_s: float = STOP_GRACE_S,
    ) -> None:
        self.config = config
        self.remote = remote
        self.clock = clock
        self.events: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.stop_grace_s = stop_grace_s
        self._stopped = threading.Event()
        self._overdue: threading.Timer | None = None
        self.guard = Guard()
        self.link = LinkKeeper(
            remote,
            config.remote.host,
            wall=wall,
            probe_interval_s=probe_interval_s,
            probe_deadline_s=probe_deadline_s,
        )
        self.router = Router.from_config(
            config, read_ignore_files(config.local_root, config.watched_folders)
        )
        self.manifest = Manifest(paths.manifest)
        self.pause = PauseStore(paths.pause_file, wall)
        recorder = open_recorder(paths.history, config.history.max_bytes, config.local_root)
        self.history = HistoryKeeper(recorder, remote, self.manifest, config.local_root)
        self.sender = Sender(
            config,
            Syncer(config, remote, self.manifest, self.router, recorder),
            self.router,
            self.link,
            self.guard,
            self.history,
            clock=clock,
            wall=wall,
            failed_retry_s=failed_retry_s,
            publish=self.publish,
        )
        self.rebuilds: dict[str, RebuildResult] = {}  # the last result per service
        self.build_gaps: tuple[dict[str, object], ...] = ()  # set by an after_batch hook
        self.handlers = RequestHandlers(
            sender=self.sender,
            pause=self.pause,
            link=self.link,
            clock=clock,
            connect_now=self._connect_now,
            status=self.status,
            history=self.history,
            connected=lambda: remote.connected,
            stop=self.stop,
        )
        self.status_builder = StatusBuilder(
            host=config.remote.host,
            config=str(config.source),
            connected=lambda: remote.connected,
            sender=self.sender,
            pause=self.pause,
            link=self.link,
            guard=self.guard,
            rebuilds=self.rebuilds,
            build_gaps=lambda: self.build_gaps,
            history=self.history,
        )
        self.watched = WatchedEvents(config, self.router, self.manifest, self.sender)
        self.watcher = (
            Watcher(config.local_root, watcher_folders(config), self.events) if watch else None
        )
        self.successor: Daemon | None = None  # set by a reload: the loop ends, it takes over
        self.on_turn: list[Callable[[], None]] = []  # each turn, under the guard (config watch)
        self._status_lock = threading.Lock()
        self._status = Status(State.OFFLINE, False, config.remote.host)

    @property
    def after_batch(self) -> list[AfterBatch]:
        """Called on the engine thread with each pass's report: rebuilds plug in here."""
        return self.sender.after_batch

    # -- thread-safe API -------------------------------------------------------------------------

    def submit(self, request: EngineRequest) -> Future[Result]:
        submitted = Submitted(request, Future())
        self.events.put(submitted)
        return submitted.result

    def record_rebuild(self, result: RebuildResult) -> None:
        """A rebuild finished (on the rebuild worker's thread): status is made here."""
        self.events.put(result)

    def status(self) -> Status:
        with self._status_lock:
            return self._status

    def stop(self) -> None:
        """Let the batch in flight finish, then end the loop; thread-safe (a signal handler).
        If the engine is still busy ``stop_grace_s`` later, the connection is cut."""
        first = not self.stopping.is_set()
        self.stopping.set()
        self.events.put(None)  # wake the engine
        if first and not self._stopped.is_set():
            self._overdue = threading.Timer(self.stop_grace_s, self._stop_overdue)
            self._overdue.daemon = True
            self._overdue.start()

    def _stop_overdue(self) -> None:
        if self._stopped.is_set():
            return
        log.warning("stop_overdue", seconds=self.stop_grace_s, action="closing the connection")
        self.remote.abort()

    def discard(self) -> None:
        """A daemon built for a reload that never ran: its threads end, its files close."""
        self.stopping.set()
        for step in (self.remote.close, self.manifest.close, self.history.close):
            try:
                step()
            except Exception as exc:  # nothing ran on them: this is tidying up
                log.debug("discard_step_failed", step=step.__qualname__, error=describe(exc))

    def forward_queued(self, successor: Daemon) -> None:
        """After a reload: control requests and rebuild results still queued go to the
        successor; file events do not (its first reconcile looks at every file)."""
        while True:
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Submitted | RebuildResult):
                successor.events.put(item)

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        """The engine loop; returns after ``stop()``, or once a reload set ``successor``.
        Pending changes stay for the next start (or are handed to the successor)."""
        if self.watcher is not None:
            self.watcher.start()
        try:
            self.publish()
            while not self.stopping.is_set() and self.successor is None:
                try:
                    self.turn()
                except Exception as exc:  # the units have their own guards; this is the loop's
                    self.guard.record(Unit.LOOP, exc)
                    self.publish()
                    self.stopping.wait(TICK_S)  # never spin on a fault of the loop itself
                else:
                    self.guard.clear(Unit.LOOP)
        finally:
            self._shut_down()

    def turn(self, *, wait: bool = True) -> None:
        """One pass: keep the link, handle what is queued (first waiting for it until something
        is due, when ``wait``), send what is due, publish the status."""
        self._keep_link(self.clock())
        self._handle_queued(wait)
        for hook in self.on_turn:
            self.guard.run(Unit.RELOAD, hook)
        self.sender.settle_head()
        if self.remote.connected and not self.pause.paused():
            self.sender.step()
        self.publish()

    def publish(self) -> None:
        try:
            status = self.status_builder.build()
        except Exception as exc:
            status = self.status_builder.fallback(self.guard.record(Unit.STATUS, exc))
        else:
            self.guard.clear(Unit.STATUS)
        with self._status_lock:
            self._status = status

    def _handle_queued(self, wait: bool) -> None:
        timeout = min(self._next_wakeup() - self.clock(), TICK_S) if wait else 0.0
        try:
            item = self.events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return
        self._handle(item)
        while True:  # drain what else is queued: a burst is handled in one go
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(item)

    def _next_wakeup(self) -> float:
        now = self.clock()
        if not self.remote.connected:
            return min(now + TICK_S, self.link.next_connect)
        if self.pause.paused():
            return now + TICK_S
        return min(now + TICK_S, self.sender.deadline())

    def _shut_down(self) -> None:
        self._stopped.set()
        if self._overdue is not None:
            self._overdue.cancel()
        steps = [self.remote.close, self.manifest.close, self.history.close]
        if self.watcher is not None:
            steps.insert(0, self.watcher.stop)
        for step in steps:
            try:
                step()
            except Exception as exc:  # stopping goes on: the next step may matter more
                log.warning("stop_step_failed", step=step.__qualname__, error=describe(exc))
        pending = len(self.sender.pending_paths())
        log.info("handed_over" if self.successor else "stopped", pending=pending)

    # -- units of work ---------------------------------------------------------------------------

    def _handle(self, item: object) -> None:
        if isinstance(item, Submitted):
            self._on_request(item)
        elif isinstance(item, RebuildResult):
            self.guard.run(Unit.REBUILD_RESULT, lambda: self._on_rebuilt(item))
        elif item is not None:
            try:
                self.watched.handle(item)
            except Exception as exc:
                self.guard.record(Unit.EVENT, exc)
                self.sender.needs_reconcile = True  # the reconcile finds what the event meant

    def _on_request(self, submitted: Submitted) -> None:
        request, result = submitted.request, submitted.result
        try:
            answer = self.handlers.handle(request)
        except OpswatchError as exc:
            self.guard.clear(Unit.REQUEST, request.command)  # it ran; it failed as it may
            self.publish()
            result.set_exception(exc)
        except Exception as exc:
            fault = self.guard.record(Unit.REQUEST, exc, subject=request.command)
            self.publish()
            result.set_exception(OpswatchError(fault.message))
        else:
            self.guard.clear(Unit.REQUEST, request.command)
            self.publish()  # whoever asked sees its effect in the very next `status`
            result.set_result(answer)

    def _on_rebuilt(self, result: RebuildResult) -> None:
        if not result.ok:
            first = result.detail.splitlines()[0] if result.detail else "failed"
            self.sender.error = f"rebuild {result.service}: {first}"
        # A build's output can be megabytes; its end says why it failed.
        result = replace(result, detail=tail_text(result.detail))
        self.rebuilds[result.service] = result
        self.history.rebuilt(result)

    # -- the connection --------------------------------------------------------------------------

    def _keep_link(self, now: float) -> None:
        try:
            connected, woke = self.link.maintain(now)
        except Exception as exc:
            fault = self.guard.record(Unit.CONNECTION, exc)
            try:
                self.remote.close()
            except Exception as again:  # a half-made connection may not close cleanly either
                log.debug("close_failed", error=describe(again))
            self.link.failed(ConnectError(fault.message), now)  # back off, then try again
            return
        if self.remote.connected:
            self.guard.clear(Unit.CONNECTION)
        if connected:
            self.sender.connected()
        if woke:
            self.sender.needs_reconcile = True

    def _connect_now(self) -> None:
        """For ``flush``: connect now if not connected, or raise ``ConnectError``."""
        if self.remote.connected:
            return
        now = self.clock()
        self.link.retry_now(now)
        self._keep_link(now)
        if not self.remote.connected:
            raise ConnectError(self.link.error or "not connected")
