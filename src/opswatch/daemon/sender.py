"""What is pending, and getting it to the server: the quiet period, big batches held for
``flush``, failed files retried, the periodic reconcile. Engine thread only.

Nothing pending is ever dropped here. A batch the link fails goes back to the debouncer; one the
server fails, or one that raises something unexpected, waits in ``failed`` and is retried after
``failed_retry_s``. A batch that raises unexpectedly is tried again file by file, so that one bad
file costs only itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial

import structlog

from opswatch.config import Config
from opswatch.core.debounce import Debouncer
from opswatch.core.rules import Router, Verdict
from opswatch.core.when import WhenPatterns
from opswatch.daemon.guard import Guard, Unit, describe
from opswatch.daemon.heap import release_free_memory
from opswatch.daemon.history import HistoryKeeper
from opswatch.daemon.hold import Hold
from opswatch.daemon.link import LinkKeeper
from opswatch.errors import ConnectError, RemoteError
from opswatch.model import Batch, Change, ChangeKind, Skip
from opswatch.sync.progress import progress_bar
from opswatch.sync.syncer import PassReport, Syncer

log = structlog.get_logger("opswatch.daemon")

AfterBatch = Callable[[PassReport], None]


class Sender:
    def __init__(
        self,
        config: Config,
        syncer: Syncer,
        router: Router,
        link: LinkKeeper,
        guard: Guard,
        history: HistoryKeeper,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float],
        failed_retry_s: float,
        publish: Callable[[], None],
    ) -> None:
        self.config = config
        self.syncer = syncer
        self.router = router
        self.link = link
        self.guard = guard
        self.history = history
        self.clock = clock
        self.wall = wall
        self.failed_retry_s = failed_retry_s  # a file or folder that failed is tried again after
        self.publish = publish  # shows `syncing` before a long pass starts
        sync = config.sync
        self.debouncer = Debouncer(sync.debounce_ms / 1000, sync.max_delay_ms / 1000)
        self.hold = Hold(config.local_root, sync.hold_over)
        self.after_batch: list[AfterBatch] = []  # rebuilds plug in here
        self.when = WhenPatterns(config)  # unsent paths whose change still rebuilds
        self.failed: dict[str, str] = {}  # local path → why; retried
        self.conflicts: tuple[str, ...] = ()
        self.refused: dict[str, Skip] = {}  # local path → why it is not sent (status)
        self.error: str | None = None  # the last file-level failure; the link's is link.error
        self.syncing = False
        self.uploaded = 0
        self.removed = 0
        self.removed_folders = 0
        self.last_sync: float | None = None  # wall clock
        self.reconciles = 0
        self.last_reconcile: float | None = None  # wall clock
        self.needs_reconcile = True
        self._next_reconcile = 0.0
        self._next_failed_retry = 0.0
        self._swept = False  # stale temp files on the server: removed at each (re)connect

    # -- what is pending ------------------------------------------------------------------------

    def add(self, change: Change) -> None:
        self.debouncer.add(change, self.clock())

    def pending_paths(self) -> tuple[str, ...]:
        if not self.failed and self.hold.batch is None:
            # The common case, and a burst's: status is published after every watcher event,
            # so merging 500 paths each time would cost more than handling the events.
            return self.debouncer.paths
        return tuple(dict.fromkeys((*self.debouncer.paths, *self.failed, *self.hold.paths)))

    def deadline(self) -> float:
        """When something is next due (monotonic), given that the link is up and not paused."""
        due = [self.clock() if self.needs_reconcile else self._next_reconcile]
        if (batch_due := self.debouncer.deadline()) is not None:
            due.append(batch_due)
        if self.failed:
            due.append(self._next_failed_retry)
        return min(due)

    def connected(self) -> None:
        """A (re)connect happened: reconcile now, sweep the temp files a cut upload left."""
        self.needs_reconcile = True
        self._swept = False
        self.error = None

    # -- the engine's turn ----------------------------------------------------------------------

    def settle_head(self) -> None:
        """While nothing is pending, accept a HEAD that moved a while ago (``HeadWatch.settle``)."""
        if self.debouncer.deadline() is None:
            self.hold.settle(self.wall())

    def step(self) -> None:
        """Send what is due: a reconcile first, then failed files whose retry time came, then
        the batch whose quiet period ended. The caller checked the link and the pause."""
        now = self.clock()
        if self.needs_reconcile or now >= self._next_reconcile:
            self._reconcile_guarded(now)
            return
        if self.failed and now >= self._next_failed_retry:
            for path in list(self.failed):
                self.debouncer.add(Change(path, ChangeKind.MODIFIED), now)
            self.failed.clear()
        batch = self.debouncer.due(now)
        if batch is None:
            return
        try:
            self._offer(batch)
        except RemoteError:
            pass  # the batch is pending again; the error is in status
        except Exception as exc:  # before sending: the hold check
            self._crashed_before_sending(batch, exc)

    def flush(self) -> PassReport | None:
        """Everything pending now, held, failed and rolled-back files too, skipping the quiet
        period; None when nothing was pending. Raises ``RemoteError`` when the link or the
        server failed it (it is pending again)."""
        changes = {c.path: c for c in self.hold.release()}
        for path in self.failed:
            changes.setdefault(path, Change(path, ChangeKind.MODIFIED))
        self.failed.clear()
        for path in self.history.release_rolled_back():
            changes.setdefault(path, Change(path, ChangeKind.MODIFIED))
        pending = self.debouncer.take()
        for change in pending.changes if pending else ():
            changes[change.path] = change
        if not changes:
            return None
        batch = Batch(tuple(changes.values()))
        try:
            return self._send(batch)
        except RemoteError:
            raise
        except Exception as exc:  # after it was taken from pending: put it back, then tell
            self._crashed_before_sending(batch, exc)
            raise

    # -- batches --------------------------------------------------------------------------------

    def _offer(self, batch: Batch) -> None:
        reason = self.hold.reason_for(batch)
        if reason is not None:
            self.hold.keep(batch, reason)
            return
        self._send(batch)

    def _send(self, batch: Batch) -> PassReport:
        """Send ``batch``; unexpected exceptions cost one file each (see ``_file_by_file``)."""
        try:
            report = self._sync(batch)
        except RemoteError:
            raise
        except Exception as exc:
            report = self._file_by_file(batch, exc)
        else:
            self.guard.clear(Unit.BATCH)
        report.triggered = [p for p in batch.paths if self._only_triggers(p)]
        log.info(
            "batch", files=len(batch), uploaded=len(report.uploaded), removed=len(report.removed)
        )
        self._after(report, "batch")
        return report

    def _only_triggers(self, path: str) -> bool:
        return self.router.decide(path).verdict is Verdict.UNROUTED and self.when.match(path)

    def _sync(self, batch: Batch) -> PassReport:
        """Plan and execute ``batch``; on a link or server failure it is pending again and the
        error is raised."""
        try:
            with self.syncing_pass():
                plan = self.syncer.plan_paths(batch.paths)
                self._note_refused(batch.paths, plan.skipped)
                # A target looked at again is a conflict now or no longer (sync --force).
                looked = {t for p in batch.paths for t in self.router.decide(p).targets}
                self.conflicts = tuple(
                    sorted(set(self.conflicts) - looked | {c.remote for c in plan.conflicts})
                )
                report = self.syncer.execute(plan)
        except ConnectError as exc:
            self._requeue(batch.changes)
            self.link.failed(exc, self.clock())
            raise
        except RemoteError as exc:
            # One file's stat or remove failed; the link is fine: retry these paths later.
            self._batch_failed(batch, exc)
            raise
        for path in batch.paths:
            self.guard.clear(Unit.FILE, path)
        return report

    def _file_by_file(self, batch: Batch, exc: Exception) -> PassReport:
        """``batch`` raised ``exc``: try each file alone; what raises again waits in ``failed``."""
        report = PassReport()
        if len(batch) == 1:
            self._crashed(report, batch.paths[0], exc)
            return report
        self.guard.record(Unit.BATCH, exc)
        log.warning("batch_split", files=len(batch), reason="internal error; each file alone")
        for index, change in enumerate(batch.changes):
            try:
                _merge(report, self._sync(Batch((change,))))
            except ConnectError:
                self._requeue(batch.changes[index + 1 :])
                raise
            except RemoteError as failure:
                report.failed[change.path] = str(failure)
            except Exception as again:
                self._crashed(report, change.path, again)
        return report

    def _crashed(self, report: PassReport, path: str, exc: Exception) -> None:
        self.guard.record(Unit.FILE, exc, subject=path)
        report.failed[path] = f"internal error: {describe(exc)}"

    def _crashed_before_sending(self, batch: Batch, exc: Exception) -> None:
        self.guard.record(Unit.BATCH, exc)
        reason = f"internal error: {describe(exc)}"
        for path in batch.paths:
            self.failed.setdefault(path, reason)
        self._next_failed_retry = self.clock() + self.failed_retry_s

    def _batch_failed(self, batch: Batch, exc: RemoteError) -> None:
        for path in batch.paths:
            self.failed.setdefault(path, str(exc))
        self._next_failed_retry = self.clock() + self.failed_retry_s
        if str(exc) != self.error:
            log.warning("batch_failed", files=len(batch), error=str(exc))
        self.error = str(exc)

    def _requeue(self, changes: tuple[Change, ...]) -> None:
        now = self.clock()
        for change in changes:
            self.debouncer.add(change, now)

    # -- the reconcile --------------------------------------------------------------------------

    def _reconcile_guarded(self, now: float) -> None:
        try:
            self._reconcile(now)
        except Exception as exc:
            self.guard.record(Unit.RECONCILE, exc)
            self.needs_reconcile = False  # not at every turn: at the retry interval
            self._next_reconcile = now + self.failed_retry_s
            return
        self.guard.clear(Unit.RECONCILE)

    def _note_refused(self, looked: Iterable[str], skipped: Iterable[Skip]) -> None:
        """Paths looked at again are replaced by what they are now."""
        for path in looked:
            self.refused.pop(path, None)
        self.refused.update((s.local, s) for s in skipped if s.refusal is not None)

    def _reconcile(self, now: float) -> None:
        try:
            with self.syncing_pass():
                plan, _index = self.syncer.plan_reconcile()
                if not self._swept:
                    self._sweep(plan.stale)
                self.conflicts = tuple(c.remote for c in plan.conflicts)
                self.refused = {}
                self._note_refused((), plan.skipped)
                if self.hold.batch is not None:
                    # A reconnect or the periodic reconcile must not send what waits for flush.
                    held = set(self.hold.paths)
                    actions = tuple(a for a in plan.actions if a.local not in held)
                    plan = replace(plan, actions=actions)
                with progress_bar("reconcile", len(plan.actions), log_only=True) as advance:
                    report = self.syncer.execute(plan, progress=advance, kind="reconcile")
        except ConnectError as exc:
            self.link.failed(exc, now)
            return
        except RemoteError as exc:
            # e.g. a rule's remote folder can't be listed: say so, try again at the next interval
            if str(exc) != self.error:
                log.warning("reconcile_failed", error=str(exc))
            self.error = str(exc)
            self.needs_reconcile = False
            self._next_reconcile = now + self.failed_retry_s
            return
        self.needs_reconcile = False
        self._next_reconcile = now + max(self.config.sync.reconcile_interval_s, 1)
        self.reconciles += 1
        self.last_reconcile = self.wall()
        self.guard.clear(Unit.EVENT)  # what a crashed watcher event missed, this pass caught
        self._after(report, "reconcile")
        release_free_memory()  # a reconcile of a big tree leaves megabytes of freed heap

    def _sweep(self, stale: tuple[str, ...]) -> None:
        """Only right after a (re)connect: later, a temp name may be a running upload's."""
        removed = self.syncer.sweep(stale)
        self._swept = True
        if removed:
            log.info("swept", temp_files=len(removed), first=removed[:5])

    # -- after a pass ---------------------------------------------------------------------------

    def _after(self, report: PassReport, kind: str) -> None:
        now = self.clock()
        self.uploaded += len(report.uploaded)
        self.removed += len(report.removed)
        self.removed_folders += len(report.removed_folders)
        for path in report.changed_meanwhile:
            self.debouncer.add(Change(path, ChangeKind.MODIFIED), now)
        if report.failed:
            self.failed.update(report.failed)
            self._next_failed_retry = now + self.failed_retry_s
            first = next(iter(report.failed.items()))
            self.error = f"{first[0]}: {first[1]}"
        elif not self.failed:
            self.error = None
        # Refused for its content while being sent: listed with the other refusals (kept until
        # the file changes), not an error: the design working.
        self.refused.update(
            (path, Skip(path, reason, refusal=report.refusals[path]))
            for path, reason in report.refused.items()
        )
        if report.uploaded or report.removed or kind == "reconcile":
            self.last_sync = self.wall()
        if report.batch is not None:
            self.history.refresh()
        for hook in self.after_batch:
            self.guard.run(Unit.AFTER_BATCH, partial(hook, report))

    def undone(self, paths: Sequence[str], batch: int) -> None:
        """An undo put these local files back as ``batch`` (``RequestHandlers``): followed as a
        batch is, so that the rebuilds of what went back are queued."""
        self._after(PassReport(landed=list(paths), batch=batch), "undo")

    def forced(self, paths: Sequence[str], batch: int | None) -> int:
        """``opswatch sync --force`` put these local files in place: their targets are no longer
        conflicts, and they are followed as a batch is (rebuilds). Returns how many cleared."""
        targets = {t for path in paths for t in self.router.decide(path).targets}
        before = len(self.conflicts)
        self.conflicts = tuple(c for c in self.conflicts if c not in targets)
        log.info("forced", files=len(paths), conflicts_cleared=before - len(self.conflicts))
        self._after(PassReport(landed=list(paths), batch=batch), "forced")
        return before - len(self.conflicts)

    @contextmanager
    def syncing_pass(self) -> Iterator[None]:
        """``syncing`` in status while a pass runs (a batch, a reconcile, an undo, a rollback)."""
        self.syncing = True
        self.publish()
        try:
            yield
        finally:
            self.syncing = False


def _merge(into: PassReport, part: PassReport) -> None:
    into.uploaded += part.uploaded
    into.removed += part.removed
    into.failed.update(part.failed)
    into.refused.update(part.refused)
    into.refusals.update(part.refusals)
    into.changed_meanwhile += part.changed_meanwhile
    into.conflicts += part.conflicts
    into.landed += part.landed
