"""What a watcher event means: a change to keep pending, an ignore file to read again, a folder
to scan or to forget, a reconcile when the kernel dropped events. Engine thread only."""

from __future__ import annotations

import os

import structlog

from opswatch.config import Config
from opswatch.core.rules import IGNORE_FILE, Router, Verdict
from opswatch.daemon.sender import Sender
from opswatch.errors import ConfigError
from opswatch.local.manifest import Manifest
from opswatch.local.scan import read_ignore_file, scan
from opswatch.local.watcher import EventsLost, FolderAppeared, FolderGone
from opswatch.model import Change, ChangeKind

log = structlog.get_logger("opswatch.daemon")


class WatchedEvents:
    def __init__(self, config: Config, router: Router, manifest: Manifest, sender: Sender) -> None:
        self.config = config
        self.router = router
        self.manifest = manifest
        self.sender = sender

    def handle(self, event: object) -> None:
        if isinstance(event, Change):
            self._change(event)
        elif isinstance(event, FolderAppeared):
            self._folder_appeared(event.path)
        elif isinstance(event, FolderGone):
            for entry in self.manifest.all().values():
                if entry.local.startswith(event.path + "/"):
                    self.sender.add(Change(entry.local, ChangeKind.DELETED))
        elif isinstance(event, EventsLost):
            if not self.sender.needs_reconcile:  # watchdog reports one overflow on several loggers
                log.warning("events_lost", reason=event.reason, action="reconcile")
            self.sender.needs_reconcile = True

    def _change(self, change: Change) -> None:
        if change.path.endswith("/" + IGNORE_FILE) or change.path == IGNORE_FILE:
            self._ignore_file_changed(change.path)
            return
        for link in self.sender.syncer.tree.links_to(change.path):
            self.sender.add(Change(link, ChangeKind.MODIFIED))  # a followed link shows its target
        decision = self.router.decide(change.path)
        if decision.verdict is Verdict.REFUSED:
            log.debug("never", path=change.path, reason=decision.reason)
            return
        if decision.verdict is Verdict.ROUTED or self.manifest.for_local(change.path):
            self.sender.add(change)
        elif decision.verdict is Verdict.UNROUTED and self.sender.when.match(change.path):
            self.sender.add(change)  # not sent: it goes through the batch to rebuild

    def _ignore_file_changed(self, path: str) -> None:
        folder = path.rpartition("/")[0]
        root = self.config.local_root
        self.sender.needs_reconcile = True  # files it no longer ignores must go now
        try:
            lines = read_ignore_file(root, path) if os.path.lexists(root / path) else None
        except ConfigError as exc:  # held until fixed; status names the file and line
            log.warning("ignore_file_invalid", path=path, error=str(exc))
            self.router.hold(folder, str(exc))
            return
        self.router.set_ignore_file(folder, lines)

    def _folder_appeared(self, folder: str) -> None:
        if self.router.excluded_folder(folder):
            return
        index = scan(self.sender.syncer.tree, within=folder)
        for path in index.files:
            self.sender.add(Change(path, ChangeKind.CREATED))
