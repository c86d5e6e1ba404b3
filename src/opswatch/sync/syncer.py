"""One pass of syncing: look at the local files, the manifest and the server, plan, execute.

Serves the daemon (a watched batch, a reconcile) and ``opswatch sync``. Owns no thread and no
clock of its own; the caller decides when a pass runs and what happens to what failed.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from opswatch.config import Config
from opswatch.core.plan import plan
from opswatch.core.rules import Router, Verdict
from opswatch.core.selection import EVERYTHING, Selection
from opswatch.errors import RemoteFileError
from opswatch.local.content import file_sha256
from opswatch.local.history_records import RolledBack
from opswatch.local.manifest import Manifest
from opswatch.local.scan import LocalIndex, local_file, scan
from opswatch.model import Action, Conflict, LocalFile, Plan, Pushed, RemoteFile, Skip, Upload
from opswatch.ssh.remote import Remote
from opswatch.ssh.transfer import UploadJob, UploadOutcome, is_temp_name
from opswatch.sync.recording import Recorder

log = structlog.get_logger("opswatch.sync")

Progress = Callable[[int, int], None]  # (done, total)
ROLLED_BACK = "rolled back by an undo; sent again when edited, or by `opswatch flush`"


@dataclass
class PassReport:
    uploaded: list[UploadOutcome] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # remote paths
    failed: dict[str, str] = field(default_factory=dict)  # local path → reason, retried later
    refused: dict[str, str] = field(default_factory=dict)  # local path → reason, not retried
    changed_meanwhile: list[str] = field(default_factory=list)  # local paths to send again
    conflicts: tuple[Conflict, ...] = ()
    landed: list[str] = field(default_factory=list)  # local paths confirmed remotely (rebuilds)
    unchanged: list[str] = field(default_factory=list)  # local paths whose bytes were there already
    batch: int | None = None  # its id in the deploy history


class Syncer:
    def __init__(
        self,
        config: Config,
        remote: Remote,
        manifest: Manifest,
        router: Router,
        recorder: Recorder | None = None,
    ) -> None:
        self.config = config
        self.recorder = recorder
        self.remote = remote
        self.manifest = manifest
        self.router = router
        self.folders = config.watched_folders
        # Uploads the last plan dropped because the server holds those bytes already (by remote
        # path); ``execute`` refreshes their manifest stat and remote mtime.
        self._same: dict[str, Upload] = {}

    # -- planning --------------------------------------------------------------------------

    def plan_reconcile(
        self, *, force: bool = False, only: Selection = EVERYTHING
    ) -> tuple[Plan, LocalIndex]:
        """Every routed local file and every file the manifest knows, against the server;
        with ``only``, just those under the named paths."""
        index = scan(self.config.local_root, self.router, self.folders)
        manifest = self.manifest.all()
        if not only.everything:
            index = LocalIndex(
                {p: f for p, f in index.files.items() if p in only},
                [s for s in index.refused if s.local in only],
            )
            manifest = {r: e for r, e in manifest.items() if e.local in only}
        targets = [t for p in index.files for t in self.router.decide(p).targets]
        targets += list(manifest)
        remote, stale = self._list_remote(targets)
        paths = [*index.files, *(e.local for e in manifest.values())]
        local: dict[str, LocalFile | Skip | None] = dict(index.files)
        result = plan(
            paths,
            self.router,
            local,
            manifest,
            remote,
            delete=self.config.sync.delete,
            force=force,
        )
        result = self._content_decides(result, manifest, remote)
        skipped = (*index.refused, *result.skipped)
        return Plan(result.actions, skipped, result.conflicts, stale), index

    def plan_paths(self, paths: Iterable[str], *, force: bool = False) -> Plan:
        """The files of a watched batch: only they are looked at, locally and remotely."""
        paths = list(dict.fromkeys(paths))
        local = {p: local_file(self.config.local_root, p, self.folders) for p in paths}
        manifest = {entry.remote: entry for entry in self.manifest.for_locals(paths)}
        targets: list[str] = []
        for path in paths:
            decision = self.router.decide(path)
            if decision.verdict is Verdict.ROUTED and local[path] is not None:
                targets.extend(decision.targets)
        remote = self.remote.stat_many(targets) if targets else {}
        result = plan(
            paths, self.router, local, manifest, remote, delete=self.config.sync.delete, force=force
        )
        return self._content_decides(result, manifest, remote)

    def _content_decides(
        self,
        result: Plan,
        manifest: Mapping[str, Pushed],
        remote: Mapping[str, RemoteFile | None],
    ) -> Plan:
        """Drop the uploads whose bytes the server already holds: same sha256 as last pushed,
        same mode, and the server's copy untouched since. Size and mtime only said "look"."""
        self._same = {}
        kept: list[Action] = []
        skipped = list(result.skipped)
        marks = self.recorder.rolled_back() if self.recorder and result.uploads else {}
        for action in result.actions:
            if isinstance(action, Upload) and self._same_content(
                action, manifest.get(action.remote), remote
            ):
                self._same[action.remote] = action
                skipped.append(Skip(action.local, "same content as last pushed", action.remote))
            elif isinstance(action, Upload) and self._still_rolled_back(action, marks):
                skipped.append(Skip(action.local, ROLLED_BACK, action.remote))
            else:
                kept.append(action)
        if self.recorder is not None:
            self.recorder.plan_seen(tuple(kept), manifest, remote)
        return replace(result, actions=tuple(kept), skipped=tuple(skipped))

    def _still_rolled_back(self, upload: Upload, marks: Mapping[str, RolledBack]) -> bool:
        """An undo put an older version back: the local file is not sent while it holds
        what it held then (an edit or ``opswatch flush`` sends it)."""
        mark = marks.get(upload.remote)
        if mark is None:
            return False
        return file_sha256(self.config.local_root / upload.local) == mark.local_sha256

    def _same_content(
        self, upload: Upload, pushed: Pushed | None, remote: Mapping[str, RemoteFile | None]
    ) -> bool:
        if pushed is None or (pushed.size, pushed.mode) != (upload.file.size, upload.file.mode):
            return False
        if upload.remote in remote:
            there = remote[upload.remote]
            if there is None or not pushed.matches_remote(there):
                return False  # gone or changed on the server: only an upload puts it right
        return file_sha256(self.config.local_root / upload.local) == pushed.sha256

    def _list_remote(
        self, targets: list[str]
    ) -> tuple[dict[str, RemoteFile | None], tuple[str, ...]]:
        """One listing per remote folder instead of one stat per file; also the opswatch temp
        files those folders hold (what a cut upload left behind).

        Each listing is looked up and dropped before the next one: the full paths of every
        remote file, all at once, would be megabytes of peak on a big tree.
        """
        by_folder: dict[str, list[str]] = {}
        for target in targets:
            by_folder.setdefault(posixpath.dirname(target) or "/", []).append(target)
        found: dict[str, RemoteFile | None] = {}
        stale: list[str] = []
        for folder, listing in self.remote.list_folders(sorted(by_folder)):
            for target in by_folder[folder]:
                found[target] = listing.get(posixpath.basename(target))
            stale.extend(posixpath.join(folder, name) for name in listing if is_temp_name(name))
        return found, tuple(stale)

    # -- execution -------------------------------------------------------------------------

    def execute(
        self, plan: Plan, progress: Progress | None = None, *, kind: str = "batch"
    ) -> PassReport:
        """Carry ``plan`` out; what landed is recorded in the deploy history as ``kind``."""
        report = PassReport(conflicts=plan.conflicts)
        self._refresh_same(report)
        try:
            self._execute(plan, report, progress)
        finally:
            if self.recorder is not None:
                by_remote = {u.remote: u for u in plan.uploads}
                sent = [(by_remote[o.job.remote], o) for o in report.uploaded]
                removed = [r for r in plan.removes if r.remote in report.removed]
                report.batch = self.recorder.record(kind, sent, removed)
        return report

    def _execute(self, plan: Plan, report: PassReport, progress: Progress | None) -> None:
        for conflict in plan.conflicts:
            log.warning("conflict", path=conflict.local, remote=conflict.remote)
        uploads = plan.uploads
        total = len(uploads) + len(plan.removes)
        if uploads:
            self._upload(uploads, report, progress, total)
        else:  # still ends the pass: what the look opened for an upload is removed now
            self.remote.upload_many(())
        done = len(uploads)
        for remove in plan.removes:
            self.remote.remove(remove.remote)
            self.manifest.forget([remove.remote])
            report.removed.append(remove.remote)
            report.landed.append(remove.local)
            log.info("remove", path=remove.local, remote=remove.remote)
            done += 1
            if progress:
                progress(done, total)

    def _refresh_same(self, report: PassReport) -> None:
        """The new stat of files whose bytes did not change: the server's mtime as an upload
        would have set it (the manifest's stat also tells a server-side change), then the
        manifest. If the server refuses the mtime, the next look hashes the file again."""
        same, self._same = self._same, {}
        refreshed = []
        for upload in same.values():
            pushed = self.manifest.get(upload.remote)
            if pushed is None:
                continue
            try:
                self.remote.set_mtime(upload.remote, upload.file.mtime_s)
            except RemoteFileError as exc:
                log.debug("unchanged_mtime_failed", path=upload.local, error=str(exc))
                continue
            refreshed.append(replace(pushed, mtime_ns=upload.file.mtime_ns))
            report.unchanged.append(upload.local)
            log.debug("unchanged", path=upload.local, remote=upload.remote, reason="same content")
        self.manifest.record(refreshed)

    def _upload(
        self, uploads: tuple[Upload, ...], report: PassReport, progress: Progress | None, total: int
    ) -> None:
        root = self.config.local_root
        # One unreadable file must fail alone, not take its whole batch down with it.
        unreadable = [u for u in uploads if not os.access(root / u.local, os.R_OK)]
        for upload in unreadable:
            report.failed[upload.local] = "cannot read the local file: permission denied"
            log.warning("upload_failed", path=upload.local, error="permission denied (local)")
        uploads = tuple(u for u in uploads if u not in unreadable)
        jobs = [UploadJob(root / u.local, u.remote, u.file.mode, u.file.mtime_ns) for u in uploads]
        by_remote = {u.remote: u for u in uploads}
        started = time.monotonic()
        outcomes = self.remote.upload_many(jobs)
        elapsed_ms = (time.monotonic() - started) * 1000 / max(len(jobs), 1)
        pushed = []
        for count, outcome in enumerate(outcomes, 1):
            upload = by_remote[outcome.job.remote]
            if outcome.refused:
                report.refused[upload.local] = outcome.refused
                log.warning("refused", path=upload.local, reason=outcome.refused)
            elif outcome.error is not None:
                report.failed[upload.local] = str(outcome.error)
                log.warning("upload_failed", path=upload.local, error=str(outcome.error))
            else:
                pushed.append(self._landed(upload, outcome, report, elapsed_ms))
            if progress:
                progress(count, total)
        self.manifest.record(pushed)

    def _landed(
        self, upload: Upload, outcome: UploadOutcome, report: PassReport, ms: float
    ) -> Pushed:
        report.uploaded.append(outcome)
        report.landed.append(upload.local)
        now = local_file(self.config.local_root, upload.local, self.folders)
        if now != upload.file:
            # Written to while we read it: what landed is whole, but not the latest version.
            report.changed_meanwhile.append(upload.local)
        log.info(
            "upload",
            path=upload.local,
            remote=upload.remote,
            bytes=outcome.size,
            ms=round(ms, 2),
        )
        return Pushed(
            remote=upload.remote,
            local=upload.local,
            sha256=outcome.sha256,
            size=outcome.size,
            mtime_ns=upload.file.mtime_ns,
            mode=upload.file.mode,
            pushed_at=time.time(),
        )

    # -- housekeeping ----------------------------------------------------------------------

    def sweep(self, stale: Iterable[str]) -> list[str]:
        """Remove the temp files a reconcile's listings found (``Plan.stale``)."""
        removed = []
        for path in stale:
            self.remote.remove(path)
            removed.append(path)
        return removed

    def save_remote_copies(self, conflicts: Iterable[Conflict], folder: Path) -> list[Path]:
        """Copy each conflicting server file to ``folder/<time>/<remote path>`` before --force."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        saved = []
        for conflict in conflicts:
            target = folder / stamp / conflict.remote.lstrip("/")
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            data = self.remote.read(conflict.remote)
            target.write_bytes(data)
            if self.recorder is not None:
                there = self.remote.stat_many([conflict.remote]).get(conflict.remote)
                self.recorder.kept_server_copy(conflict.remote, data, there.mode if there else None)
            saved.append(target)
            log.info("saved_remote_copy", remote=conflict.remote, to=str(target))
        return saved
