"""One pass of syncing: look at the local files, the manifest and the server, plan, execute.

Serves the daemon (a watched batch, a reconcile) and ``opswatch sync``. Owns no thread and no
clock of its own; the caller decides when a pass runs and what happens to what failed.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import structlog

from opswatch.config import Config
from opswatch.core.keyblock import KEY_REFUSAL
from opswatch.core.plan import plan
from opswatch.core.prune import emptied_folders
from opswatch.core.rules import Router, Verdict
from opswatch.core.selection import EVERYTHING, Selection
from opswatch.errors import LocalFileError, RemoteFileError
from opswatch.local.content import read_content
from opswatch.local.history_records import RolledBack
from opswatch.local.manifest import Manifest
from opswatch.local.scan import LocalIndex, LocalTree, scan
from opswatch.model import (
    Action,
    Conflict,
    LocalFile,
    Plan,
    Pushed,
    Refusal,
    RemoteFile,
    Skip,
    Upload,
    sftp_seconds,
)
from opswatch.ssh.remote import Remote
from opswatch.ssh.transfer import UploadJob, UploadOutcome, is_temp_name
from opswatch.sync.recording import Recorder

log = structlog.get_logger("opswatch.sync")

Progress = Callable[[int, int], None]  # (done, total)
ROLLED_BACK = "rolled back by an undo; sent again when edited, or by `opswatch flush`"
RETRY_ALONE = 16  # files of a batch that failed beside others, tried again alone at once


@dataclass
class PassReport:
    uploaded: list[UploadOutcome] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # remote paths
    removed_folders: list[str] = field(default_factory=list)  # emptied remote folders
    failed: dict[str, str] = field(default_factory=dict)  # local path → reason, retried later
    refused: dict[str, str] = field(default_factory=dict)  # local path → reason, not retried
    refusals: dict[str, Refusal] = field(default_factory=dict)  # local path → why, typed
    changed_meanwhile: list[str] = field(default_factory=list)  # local paths to send again
    conflicts: tuple[Conflict, ...] = ()
    landed: list[str] = field(default_factory=list)  # local paths confirmed remotely (rebuilds)
    unchanged: list[str] = field(default_factory=list)  # local paths whose bytes were there already
    triggered: list[str] = field(default_factory=list)  # unsent paths a rebuild `when` matched
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
        self.tree = LocalTree(
            config.local_root,
            self.folders,
            router,
            allow_hard_links=config.sync.allow_hard_links,
        )

    # -- planning --------------------------------------------------------------------------

    def plan_reconcile(
        self, *, force: bool = False, only: Selection = EVERYTHING
    ) -> tuple[Plan, LocalIndex]:
        """Every routed local file and every file the manifest knows, against the server;
        with ``only``, just those under the named paths."""
        index = scan(self.tree)
        manifest = self.manifest.all()
        if not only.everything:
            index = LocalIndex(
                {p: f for p, f in index.files.items() if p in only},
                [s for s in index.refused if s.local in only],
                index.unknown,
            )
            manifest = {r: e for r, e in manifest.items() if e.local in only}
        targets = [t for p in index.files for t in self.router.decide(p).targets]
        targets += list(manifest)
        remote, stale = self._list_remote(targets)
        paths = [*index.files, *(e.local for e in manifest.values())]
        local: dict[str, LocalFile | Skip | None] = dict(index.files)
        # A refused file is there, not gone: its server copy is never removed for it.
        local.update((skip.local, skip) for skip in index.refused)
        for entry in manifest.values():
            if entry.local not in local and index.in_unknown(entry.local):
                # Its folder could not be read: unknown, not deleted.
                reason = "its folder cannot be read; not deleted"
                local[entry.local] = Skip(entry.local, reason, refusal=Refusal.UNREADABLE)
        result = self._decide(paths, local, manifest, remote, force=force)
        skipped = (*index.refused, *result.skipped)
        return Plan(result.actions, skipped, result.conflicts, stale), index

    def refuse_by_content(self, plan: Plan) -> Plan:
        """The plan with the uploads whose content holds a private key block turned into
        refusals, as the upload would refuse them: for ``--dry-run``, which sends nothing."""
        uploads: list[Action] = []
        refused: list[Skip] = []
        for action in plan.actions:
            if isinstance(action, Upload) and self._holds_key(action):
                refused.append(
                    Skip(action.local, KEY_REFUSAL, action.remote, refusal=Refusal.PRIVATE_KEY)
                )
            else:
                uploads.append(action)
        if not refused:
            return plan
        return replace(plan, actions=tuple(uploads), skipped=(*plan.skipped, *refused))

    def _holds_key(self, upload: Upload) -> bool:
        try:
            with self.tree.open(upload.local, upload.file) as handle:
                return read_content(handle).holds_key
        except (LocalFileError, OSError):
            return False  # the upload itself says why it can't be read

    def plan_paths(self, paths: Iterable[str], *, force: bool = False) -> Plan:
        """The files of a watched batch: only they are looked at, locally and remotely."""
        paths = list(dict.fromkeys(paths))
        local = {p: self.tree.inspect(p) for p in paths}
        manifest = {entry.remote: entry for entry in self.manifest.for_locals(paths)}
        targets: list[str] = []
        for path in paths:
            decision = self.router.decide(path)
            if decision.verdict is Verdict.ROUTED and local[path] is not None:
                targets.extend(decision.targets)
        # A delete checks the server copy first, as an upload does.
        targets += [e.remote for e in manifest.values() if local.get(e.local) is None]
        remote = self.remote.stat_many(targets) if targets else {}
        return self._decide(paths, local, manifest, remote, force=force)

    def _decide(
        self,
        paths: list[str],
        local: Mapping[str, LocalFile | Skip | None],
        manifest: Mapping[str, Pushed],
        remote: Mapping[str, RemoteFile | None],
        *,
        force: bool,
    ) -> Plan:
        """The plan for ``paths``, then what content and the manifest's gaps settle."""
        result = plan(
            paths,
            self.router,
            local,
            manifest,
            remote,
            delete=self.config.sync.delete,
            force=force,
            first_sync=self.manifest.first_sync,
        )
        return self._content_decides(self._settle_unrecorded(result), manifest, remote)

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
        return self._local_sha256(upload) == mark.local_sha256

    def _same_content(
        self, upload: Upload, pushed: Pushed | None, remote: Mapping[str, RemoteFile | None]
    ) -> bool:
        if pushed is None or (pushed.size, pushed.mode) != (upload.file.size, upload.file.mode):
            return False
        if upload.remote in remote:
            there = remote[upload.remote]
            if there is None or not pushed.matches_remote(there):
                return False  # gone or changed on the server: only an upload puts it right
        return self._local_sha256(upload) == pushed.sha256

    def _local_sha256(self, upload: Upload) -> str | None:
        """The local file's sha256, read the guarded way; None when it cannot be read."""
        try:
            with self.tree.open(upload.local, upload.file) as handle:
                return hashlib.file_digest(handle, "sha256").hexdigest()
        except (OSError, LocalFileError):
            return None

    def _settle_unrecorded(self, result: Plan) -> Plan:
        """Conflicts of a lost manifest, decided by content: a server copy equal to the local
        file is adopted (sent again, which loses nothing, so the manifest records it as
        pushed), a differing one stays a conflict."""
        kept: list[Conflict] = []
        adopted: list[Upload] = []
        for conflict in result.conflicts:
            upload = self._adopt(conflict) if conflict.unrecorded else None
            if upload is None:
                kept.append(conflict)
            else:
                adopted.append(upload)
        if adopted:
            log.info("adopted", files=len(adopted))
        return replace(result, actions=(*result.actions, *adopted), conflicts=tuple(kept))

    def _adopt(self, conflict: Conflict) -> Upload | None:
        found = self.tree.inspect(conflict.local)
        if not isinstance(found, LocalFile):
            return None
        try:
            with self.tree.open(conflict.local, found) as handle:
                local_hash = hashlib.file_digest(handle, "sha256").hexdigest()
            remote_hash = hashlib.sha256(self.remote.read(conflict.remote)).hexdigest()
        except (OSError, LocalFileError, RemoteFileError):
            return None  # cannot tell: it stays a conflict
        if local_hash != remote_hash:
            return None
        return Upload(conflict.local, conflict.remote, found)

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
        self.manifest.mark_synced()
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
        if plan.removes and self.config.sync.delete:
            self._remove_emptied(plan, report)

    def _remove_emptied(self, plan: Plan, report: PassReport) -> None:
        """The folders the removes emptied go too, deepest first (as ``rsync --delete``)."""
        removed = [(r.local, r.remote) for r in plan.removes if r.remote in report.removed]
        kept: list[str] = []  # a folder that stays keeps its parents
        for folder in emptied_folders(removed, self.config.rules, self.config.remote.root):
            if any(k.startswith(folder + "/") for k in kept) or not self.remote.remove_folder(
                folder
            ):
                kept.append(folder)
                continue
            report.removed_folders.append(folder)
            log.info("remove_folder", remote=folder)

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
                self.remote.set_mtime(upload.remote, sftp_seconds(upload.file.mtime_ns))
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
        jobs = [
            UploadJob(
                root / u.local,
                u.remote,
                u.file.mode,
                u.file.mtime_ns,
                opener=partial(self.tree.open, u.local, u.file),
            )
            for u in uploads
        ]
        by_remote = {u.remote: u for u in uploads}
        started = time.monotonic()
        outcomes = self._alone(jobs, self.remote.upload_many(jobs), [u.file.size for u in uploads])
        elapsed_ms = (time.monotonic() - started) * 1000 / max(len(jobs), 1)
        pushed = []
        for count, outcome in enumerate(outcomes, 1):
            upload = by_remote[outcome.job.remote]
            if outcome.refused:
                report.refused[upload.local] = outcome.refused
                report.refusals[upload.local] = outcome.refusal or Refusal.NOT_REGULAR
                log.warning("refused", path=upload.local, reason=outcome.refused)
            elif outcome.error is not None and self.tree.inspect(upload.local) != upload.file:
                # Changed between the check and the read (the guarded open saw it): not a
                # failure, a newer version to send.
                report.changed_meanwhile.append(upload.local)
            elif outcome.error is not None:
                report.failed[upload.local] = str(outcome.error)
                log.warning("upload_failed", path=upload.local, error=str(outcome.error))
            else:
                pushed.append(self._landed(upload, outcome, report, elapsed_ms))
            if progress:
                progress(count, total)
        self.manifest.record(pushed)

    def _alone(
        self, jobs: list[UploadJob], outcomes: list[UploadOutcome], sizes: list[int]
    ) -> list[UploadOutcome]:
        """Files that failed beside others are tried once more, each alone, smallest first:
        on a full disk the big file in flight filled it, and the small ones fit by themselves.
        At most ``RETRY_ALONE`` of them: the rest wait for the next retry as they did."""
        if len(jobs) < 2:
            return outcomes
        failed = sorted(
            (i for i, outcome in enumerate(outcomes) if outcome.error is not None),
            key=lambda i: sizes[i],
        )
        for index in failed[:RETRY_ALONE]:
            [outcomes[index]] = self.remote.upload_many([jobs[index]])
        return outcomes

    def _landed(
        self, upload: Upload, outcome: UploadOutcome, report: PassReport, ms: float
    ) -> Pushed:
        report.uploaded.append(outcome)
        report.landed.append(upload.local)
        now = self.tree.inspect(upload.local)
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
