"""The daemon: watcher → debouncer → plan → executor, with pause, hold, flush and reconnects.

One engine thread (the one calling ``run``) does all remote I/O and owns all mutable state.
The watcher thread and the control thread only put items on ``events``; control requests carry
a ``Future`` the engine resolves. ``status()`` reads a snapshot and is safe from any thread.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from opswatch.config import Config
from opswatch.core.debounce import Debouncer
from opswatch.core.rules import IGNORE_FILE, Router, Verdict
from opswatch.daemon.heap import release_free_memory
from opswatch.daemon.link import PROBE_DEADLINE_S, PROBE_INTERVAL_S, LinkKeeper
from opswatch.errors import ConnectError, HistoryError, OpswatchError, RemoteError, UsageError
from opswatch.local.gitstate import HeadWatch
from opswatch.local.manifest import Manifest
from opswatch.local.scan import read_ignore_file, read_ignore_files, scan
from opswatch.local.watcher import EventsLost, FolderAppeared, FolderGone, Watcher
from opswatch.model import Batch, Change, ChangeKind, RebuildResult, State, Status
from opswatch.paths import StatePaths
from opswatch.ssh.remote import Remote
from opswatch.sync.progress import progress_bar
from opswatch.sync.recording import batch_summary, open_recorder
from opswatch.sync.syncer import PassReport, Syncer
from opswatch.sync.undo import Undoer

log = structlog.get_logger("opswatch.daemon")

FAILED_RETRY_S = 30.0


@dataclass
class Request:
    """A control command for the engine thread; ``result`` is resolved there."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    result: Future[dict[str, Any]] = field(default_factory=Future)


AfterBatch = Callable[[PassReport], None]


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


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
    ) -> None:
        self.config = config
        self.paths = paths
        self.remote = remote
        self.clock = clock
        self.wall = wall
        self.link = LinkKeeper(
            remote,
            config.remote.host,
            wall=wall,
            probe_interval_s=probe_interval_s,
            probe_deadline_s=probe_deadline_s,
        )
        self.failed_retry_s = failed_retry_s  # a file or folder that failed is tried again after
        self.events: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.router = Router.from_config(
            config, read_ignore_files(config.local_root, config.watched_folders)
        )
        self.manifest = Manifest(paths.manifest)
        self.recorder = open_recorder(paths.history, config.history.max_bytes, config.local_root)
        self.syncer = Syncer(config, remote, self.manifest, self.router, self.recorder)
        sync = config.sync
        self.debouncer = Debouncer(sync.debounce_ms / 1000, sync.max_delay_ms / 1000)
        self.after_batch: list[AfterBatch] = []  # rebuilds plug in here, on the engine thread
        self.rebuilds: dict[str, RebuildResult] = {}  # last result per service, for status
        self.watcher = (
            Watcher(config.local_root, config.watched_folders, self.events) if watch else None
        )
        self.stopping = threading.Event()
        self.head = HeadWatch(config.local_root)  # a branch switch holds the batch it causes
        # engine-owned state
        self.failed: dict[str, str] = {}
        self.held: Batch | None = None
        self.paused_until: float | None = None  # wall clock; inf = until resumed
        self._state = State.OFFLINE
        self._error: str | None = None  # the last file-level failure; link.error is the link's
        self._next_reconcile = 0.0
        self._next_failed_retry = 0.0
        self._needs_reconcile = True
        self._swept = False  # stale temp files on the server: removed at each (re)connect
        self._counters = {"uploaded": 0, "removed": 0}
        self._last_sync: float | None = None
        self._conflicts: tuple[str, ...] = ()
        self._extra: dict[str, object] = {}
        self._note_history()
        self._status_lock = threading.Lock()
        self._status = Status(State.OFFLINE, False, config.remote.host)
        self._load_pause()

    # -- thread-safe API -------------------------------------------------------------------

    def submit(self, name: str, **args: Any) -> Future[dict[str, Any]]:
        request = Request(name, args)
        self.events.put(request)
        return request.result

    def status(self) -> Status:
        with self._status_lock:
            return self._status

    def stop(self) -> None:
        self.stopping.set()
        self.events.put(None)  # wake the engine

    # -- engine ----------------------------------------------------------------------------

    def run(self) -> None:
        """The engine loop; returns after ``stop()``. Pending changes stay for the next start."""
        if self.watcher is not None:
            self.watcher.start()
        try:
            self._publish()
            while not self.stopping.is_set():
                self._maintain_connection()
                self._wait_and_handle()
                self._maybe_send()
                self._publish()
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            self.remote.close()
            self.manifest.close()
            if self.recorder is not None:
                self.recorder.history.close()
            log.info("stopped", pending=len(self._pending_paths()))

    def _wait_and_handle(self) -> None:
        timeout = self._next_wakeup() - self.clock()
        try:
            item = self.events.get(timeout=max(0.0, min(timeout, 1.0)))
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
        candidates = [now + 1.0]
        deadline = self.debouncer.deadline()
        if deadline is not None and not self._paused():
            candidates.append(deadline)
        if not self.remote.connected:
            candidates.append(self.link.next_connect)
        elif not self._paused():
            # The reconcile after connecting must not wait a second for some event to arrive.
            candidates.append(now if self._needs_reconcile else self._next_reconcile)
        return min(candidates)

    def _handle(self, item: object) -> None:
        now = self.clock()
        if isinstance(item, Change):
            self._on_change(item, now)
        elif isinstance(item, FolderAppeared):
            self._on_folder_appeared(item.path, now)
        elif isinstance(item, FolderGone):
            for entry in self.manifest.all().values():
                if entry.local.startswith(item.path + "/"):
                    self.debouncer.add(Change(entry.local, ChangeKind.DELETED), now)
        elif isinstance(item, Request):
            self._on_request(item)
        elif isinstance(item, EventsLost):
            if not self._needs_reconcile:  # watchdog reports one overflow on several loggers
                log.warning("events_lost", reason=item.reason, action="reconcile")
            self._needs_reconcile = True

    def _on_change(self, change: Change, now: float) -> None:
        if change.path.endswith("/" + IGNORE_FILE) or change.path == IGNORE_FILE:
            folder = change.path.rpartition("/")[0]
            full = self.config.local_root / change.path
            lines = read_ignore_file(full) if full.exists() else None
            self.router.set_ignore_file(folder, lines)
            self._needs_reconcile = True  # files it no longer ignores must go now
            return
        decision = self.router.decide(change.path)
        if decision.verdict is Verdict.REFUSED:
            log.debug("never", path=change.path, reason=decision.reason)
            return
        if decision.verdict is Verdict.ROUTED or self.manifest.for_local(change.path):
            self.debouncer.add(change, now)

    def _on_folder_appeared(self, folder: str, now: float) -> None:
        if self.router.excluded_folder(folder):
            return
        index = scan(
            self.config.local_root, self.router, self.config.watched_folders, within=folder
        )
        for path in index.files:
            self.debouncer.add(Change(path, ChangeKind.CREATED), now)

    # -- connection ------------------------------------------------------------------------

    def _maintain_connection(self) -> None:
        connected, woke = self.link.maintain(self.clock())
        if connected:
            self._needs_reconcile = True
            self._swept = False  # an upload the lost connection cut left its temp file behind
            self._error = None
        if woke:
            self._needs_reconcile = True

    # -- sending ---------------------------------------------------------------------------

    def _paused(self) -> bool:
        if self.paused_until is None:
            return False
        if self.wall() >= self.paused_until:
            self.paused_until = None
            self._save_pause()
            log.info("resumed", reason="pause expired")
            return False
        return True

    def _maybe_send(self) -> None:
        if self.debouncer.deadline() is None:
            self.head.settle(self.wall())
        if not self.remote.connected or self._paused():
            return
        now = self.clock()
        if self._needs_reconcile or now >= self._next_reconcile:
            self._reconcile(now)
            return
        if self.failed and now >= self._next_failed_retry:
            for path in list(self.failed):
                self.debouncer.add(Change(path, ChangeKind.MODIFIED), now)
            self.failed.clear()
        batch = self.debouncer.due(now)
        if batch is not None:
            self._send(batch, flush=False)

    def _reconcile(self, now: float) -> None:
        try:
            with self._syncing():
                plan, _index = self.syncer.plan_reconcile()
                if not self._swept:
                    self._sweep(plan.stale)
                self._conflicts = tuple(c.remote for c in plan.conflicts)
                if self.held is not None:
                    # A reconnect or the periodic reconcile must not send what waits for flush.
                    held = set(self.held.paths)
                    actions = tuple(a for a in plan.actions if a.local not in held)
                    plan = replace(plan, actions=actions)
                with progress_bar("reconcile", len(plan.actions), log_only=True) as advance:
                    report = self.syncer.execute(plan, progress=advance, kind="reconcile")
        except ConnectError as exc:
            self.link.failed(exc, now)
            return
        except RemoteError as exc:
            # e.g. a rule's remote folder can't be listed: say so, try again at the next interval
            if str(exc) != self._error:
                log.warning("reconcile_failed", error=str(exc))
            self._error = str(exc)
            self._needs_reconcile = False
            self._next_reconcile = now + self.failed_retry_s
            return
        self._needs_reconcile = False
        self._next_reconcile = now + max(self.config.sync.reconcile_interval_s, 1)
        self._extra["reconciles"] = int(str(self._extra.get("reconciles", 0))) + 1
        self._extra["last_reconcile"] = iso(self.wall())
        self._after(report, "reconcile")
        release_free_memory()  # a reconcile of a big tree leaves megabytes of freed heap

    def _sweep(self, stale: tuple[str, ...]) -> None:
        """Only right after a (re)connect: later, a temp name may be a running upload's."""
        removed = self.syncer.sweep(stale)
        self._swept = True
        if removed:
            log.info("swept", temp_files=len(removed), first=removed[:5])

    def _send(self, batch: Batch, *, flush: bool) -> PassReport | None:
        reason = None if flush else self._hold_reason(batch)
        if reason is not None:
            self._hold(batch, reason)
            return None
        try:
            with self._syncing():
                plan = self.syncer.plan_paths(batch.paths)
                # A target looked at again is a conflict now or no longer (sync --force).
                looked = {t for p in batch.paths for t in self.router.decide(p).targets}
                self._conflicts = tuple(
                    sorted(set(self._conflicts) - looked | {c.remote for c in plan.conflicts})
                )
                report = self.syncer.execute(plan)
        except ConnectError as exc:
            self._requeue(batch)
            self.link.failed(exc, self.clock())
            if flush:
                raise
            return None
        except RemoteError as exc:
            # One file's stat or remove failed; the link is fine: retry these paths later.
            self._batch_failed(batch, exc)
            if flush:
                raise
            return None
        log.info(
            "batch", files=len(batch), uploaded=len(report.uploaded), removed=len(report.removed)
        )
        self._after(report, "batch")
        return report

    def _hold_reason(self, batch: Batch) -> str | None:
        switched = self.head.moved()  # asked every time, so one switch holds one batch
        hold_over = self.config.sync.hold_over
        if not hold_over:
            return None
        if switched:
            return f"git HEAD changed (now {self.head.describe()})"
        if len(batch) > hold_over:
            return f"{len(batch)} files at once (sync.hold_over = {hold_over})"
        return None

    def _hold(self, batch: Batch, reason: str) -> None:
        merged = dict.fromkeys(self.held.paths if self.held else ())
        merged.update(dict.fromkeys(batch.paths))
        changes = {c.path: c for c in (self.held.changes if self.held else ())}
        changes.update({c.path: c for c in batch.changes})
        self.held = Batch(tuple(changes[p] for p in merged))
        self._extra["held_reason"] = reason
        log.warning("held", reason=reason, files=len(self.held), first=list(self.held.paths[:5]))

    def _batch_failed(self, batch: Batch, exc: RemoteError) -> None:
        for path in batch.paths:
            self.failed.setdefault(path, str(exc))
        self._next_failed_retry = self.clock() + self.failed_retry_s
        if str(exc) != self._error:
            log.warning("batch_failed", files=len(batch), error=str(exc))
        self._error = str(exc)

    def _requeue(self, batch: Batch) -> None:
        now = self.clock()
        for change in batch.changes:
            self.debouncer.add(change, now)

    def _after(self, report: PassReport, kind: str) -> None:
        now = self.clock()
        self._counters["uploaded"] += len(report.uploaded)
        self._counters["removed"] += len(report.removed)
        for path in report.changed_meanwhile:
            self.debouncer.add(Change(path, ChangeKind.MODIFIED), now)
        if report.failed:
            self.failed.update(report.failed)
            self._next_failed_retry = now + self.failed_retry_s
            first = next(iter(report.failed.items()))
            self._error = f"{first[0]}: {first[1]}"
        elif not self.failed:
            self._error = None
        if report.refused:
            path, reason = next(iter(report.refused.items()))
            self._error = f"{path}: refused: {reason}"
        if report.uploaded or report.removed or kind == "reconcile":
            self._last_sync = self.wall()
        if report.batch is not None:
            self._note_history()
        for hook in self.after_batch:
            hook(report)

    def _note_history(self) -> None:
        """``last_batch`` and the files an undo rolled back, for status."""
        if self.recorder is None:
            self._extra.update(last_batch=None, rolled_back=[])
            return
        self._extra["last_batch"] = batch_summary(self.recorder.history)
        marks = self.recorder.rolled_back()
        self._extra["rolled_back"] = sorted({m.local for m in marks.values()})

    # -- control requests ------------------------------------------------------------------

    def _on_request(self, request: Request) -> None:
        handler = getattr(self, f"_request_{request.name}", None)
        if handler is None:
            request.result.set_exception(OpswatchError(f"unknown request {request.name!r}"))
            return
        try:
            request.result.set_result(handler(**request.args))
        except OpswatchError as exc:
            request.result.set_exception(exc)
        self._publish()

    def _request_status(self) -> dict[str, Any]:
        return self.status().to_json()

    def _request_pause(self, seconds: float | None = None) -> dict[str, Any]:
        self.paused_until = float("inf") if seconds is None else self.wall() + seconds
        self._save_pause()
        log.info("paused", until=iso(self.paused_until) if seconds else None)
        return {"paused_until": iso(self.paused_until) if seconds is not None else None}

    def _request_resume(self) -> dict[str, Any]:
        was_paused = self.paused_until is not None
        self.paused_until = None
        self._save_pause()
        log.info("resumed", pending=len(self._pending_paths()))
        try:
            result = self._request_flush()
        except RemoteError as exc:
            # Resumed all the same: what is still pending goes once the connection is back.
            return {"sent": 0, "pending": len(self._pending_paths()), "error": str(exc)}
        return {**result, "was_paused": was_paused}

    def _request_flush(self) -> dict[str, Any]:
        """Send everything pending now (held and failed files too); answer once it landed."""
        now = self.clock()
        if not self.remote.connected:
            self.link.retry_now(now)
            self._maintain_connection()
            if not self.remote.connected:
                raise ConnectError(self.link.error or "not connected")
        changes = {c.path: c for c in (self.held.changes if self.held else ())}
        self.held = None
        self._extra.pop("held_reason", None)
        for path in self.failed:
            changes.setdefault(path, Change(path, ChangeKind.MODIFIED))
        self.failed.clear()
        for path in self.recorder.take_rolled_back() if self.recorder else ():
            changes.setdefault(path, Change(path, ChangeKind.MODIFIED))
        self._note_history()
        pending = self.debouncer.take()
        for change in pending.changes if pending else ():
            changes[change.path] = change
        if not changes:
            return {"sent": 0, "failed": {}}
        report = self._send(Batch(tuple(changes.values())), flush=True)
        assert report is not None
        if report.failed or report.refused:
            raise RemoteError(
                f"{len(report.failed) + len(report.refused)} file(s) failed: {self._error}"
            )
        return {"sent": len(report.uploaded) + len(report.removed), "failed": {}}

    def _request_undo(self, batch: object = None, force: object = False) -> dict[str, Any]:
        """``opswatch undo``: the files go back here, on the engine thread; the rebuilds are
        queued as for a forward batch (the command waits for them in the history)."""
        if self.recorder is None:
            raise HistoryError("the deploy history is not available (see the log)")
        if (batch is not None and not isinstance(batch, int)) or not isinstance(force, bool):
            raise UsageError("undo takes a batch number and a force flag")
        if not self.remote.connected:
            raise ConnectError(self.link.error or "not connected")
        undoer = Undoer(self.recorder.history, self.remote, self.manifest, self.config.local_root)
        with self._syncing():
            done = undoer.undo(batch, force=force)
        self._after(PassReport(landed=list(done.locals), batch=done.batch), "undo")
        return {
            "undone": done.undone,
            "batch": done.batch,
            "restored": list(done.restored),
            "removed": list(done.removed),
            "locals": list(done.locals),
            "rebuilds": bool(self.after_batch),  # whether this daemon rebuilds at all
        }

    def _request_rollback(self, batch: object, paths: object) -> dict[str, Any]:
        """A service failed its health check: its files of ``batch`` go back (the rebuild
        worker asks, and rebuilds itself; no after-batch hooks, so no second rebuild)."""
        if self.recorder is None:
            raise HistoryError("the deploy history is not available (see the log)")
        if not isinstance(batch, int) or not isinstance(paths, list):
            raise UsageError("rollback takes a batch number and a list of paths")
        undoer = Undoer(self.recorder.history, self.remote, self.manifest, self.config.local_root)
        with self._syncing():
            done = undoer.undo(batch, only=[str(p) for p in paths], kind="rollback")
        self._note_history()
        earlier = self.recorder.history.earlier_change(batch, [*done.restored, *done.removed])
        to = f"batch {earlier}" if earlier else f"the version before batch {batch}"
        return {"batch": done.batch, "to": to}

    def _request_reconnect(self) -> dict[str, Any]:
        self.link.reconnect(self.clock())
        return {}

    def _request_rebuilt(
        self,
        service: str,
        ok: bool,
        at: str,
        detail: str,
        batch: int | None = None,
        rolled_back: bool = False,
    ) -> dict[str, Any]:
        """A rebuild finished on the rebuild worker thread; recorded here, where status is made."""
        result = RebuildResult(service, ok, at, detail, batch, rolled_back)
        self.rebuilds[service] = result
        if self.recorder is not None and batch is not None:
            self.recorder.rebuilt(batch, result)
        if not ok:
            self._error = f"rebuild {service}: {detail.splitlines()[0] if detail else 'failed'}"
        return {}

    # -- pause flag on disk ----------------------------------------------------------------

    def _load_pause(self) -> None:
        try:
            saved = json.loads(self.paths.pause_file.read_text())
        except (OSError, ValueError):
            return
        until = saved.get("until")
        self.paused_until = float("inf") if until is None else float(until)

    def _save_pause(self) -> None:
        if self.paused_until is None:
            self.paths.pause_file.unlink(missing_ok=True)
            return
        until = None if self.paused_until == float("inf") else self.paused_until
        temp = self.paths.pause_file.with_suffix(".tmp")
        temp.write_text(json.dumps({"until": until}))
        os.replace(temp, self.paths.pause_file)

    # -- status ----------------------------------------------------------------------------

    def _pending_paths(self) -> tuple[str, ...]:
        if not self.failed and self.held is None:
            # The common case, and a burst's: status is published after every watcher event,
            # so merging 500 paths each time would cost more than handling the events.
            return self.debouncer.paths
        held = self.held.paths if self.held else ()
        return tuple(dict.fromkeys((*self.debouncer.paths, *self.failed, *held)))

    @contextmanager
    def _syncing(self) -> Iterator[None]:
        self._state = State.SYNCING
        self._publish()
        try:
            yield
        finally:
            self._state = State.WATCHING

    def _derive_state(self) -> State:
        if self._paused():
            return State.PAUSED
        if self.link.fatal:
            return State.ERROR
        if not self.remote.connected:
            return State.OFFLINE
        if self.held is not None:
            return State.HELD
        return self._state if self._state is State.SYNCING else State.WATCHING

    def _publish(self) -> None:
        state = self._derive_state()
        paused = self.paused_until if self.paused_until not in (None, float("inf")) else None
        status = Status(
            state=state,
            connected=self.remote.connected,
            host=self.config.remote.host,
            pending_paths=self._pending_paths(),
            last_sync=iso(self._last_sync),
            last_error=self.link.error or self._error,
            paused_until=iso(paused),
            uploaded=self._counters["uploaded"],
            removed=self._counters["removed"],
            connected_since=iso(self.link.connected_since),
            rebuilds=tuple(self.rebuilds.values()),
            conflicts=self._conflicts,
            held_paths=self.held.paths if self.held else (),
            pid=os.getpid(),
            config=str(self.config.source),
            extra=dict(self._extra),
        )
        with self._status_lock:
            self._status = status
