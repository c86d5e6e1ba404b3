"""Reloading the config in a running daemon: ``opswatch reload``, SIGHUP, the file changing.

A reload reads the file again, on the engine thread. An invalid file is refused with every
problem (exit 2) and the running config is kept. A valid, different one gets a whole new daemon
(router, watcher, connection, rebuild hooks), built before the old one stops so that a config
that can't be served is refused too; the engine loop then ends and ``run`` hands over: what was
pending, failed or held goes to the new daemon, which reconciles at its first connect (new
folders are scanned, files no rule selects any more are dropped, rule changes re-plan).

The file is watched by its stat (inode, size, mtime), checked at each engine turn: editors write
a new file and rename it over the old one, which a watch on the file itself would lose.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from opswatch.config import Config, load_config
from opswatch.daemon.engine import Daemon
from opswatch.daemon.requests import Result
from opswatch.errors import ConfigError
from opswatch.model import Change, ChangeKind

log = structlog.get_logger("opswatch.daemon")

Build = Callable[[Config], Daemon]


@dataclass(frozen=True)
class FileStamp:
    """What tells that a file was written or replaced; None fields when it is missing."""

    inode: int | None
    size: int | None
    mtime_ns: int | None

    @classmethod
    def of(cls, path: Path) -> FileStamp:
        try:
            info = os.stat(path)
        except OSError:
            return cls(None, None, None)
        return cls(info.st_ino, info.st_size, info.st_mtime_ns)


class Reloader:
    """Attached to one daemon: reloads its config on request or when the file changes."""

    def __init__(self, daemon: Daemon, build: Build) -> None:
        self.daemon = daemon
        self.build = build
        self.path = daemon.config.source
        self.stamp = FileStamp.of(self.path)
        daemon.handlers.reload = self.reload
        daemon.on_turn.append(self.check_file)

    def reload(self) -> Result:
        """Read the file again; raises ``ConfigError`` (the old config is kept) when invalid."""
        self.stamp = FileStamp.of(self.path)
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            log.warning("reload_refused", problems=exc.problems, action="kept the running config")
            raise
        if self.daemon.successor is not None:  # two reloads before the loop ended: the last wins
            self.daemon.successor.discard()
            self.daemon.successor = None
        old = self.daemon.config
        if config == old:
            log.info("reload", changed=False)
            return {"changed": False}
        successor = self.build(config)
        changes = describe_changes(old, config)
        log.info("reload", changed=True, **changes)
        self.daemon.successor = successor
        return {"changed": True, **changes}

    def check_file(self) -> None:
        """At each engine turn: the file changed since it was last read → reload (logged)."""
        stamp = FileStamp.of(self.path)
        if stamp == self.stamp or self.daemon.successor is not None:
            return
        log.info("config_changed", config=str(self.path))
        with contextlib.suppress(ConfigError):  # logged; read again when it changes again
            self.reload()


def describe_changes(old: Config, new: Config) -> dict[str, object]:
    """What a reload changes that a user may want to see: folders, the server."""
    before, after = set(old.watched_folders), set(new.watched_folders)
    return {
        "folders_added": sorted(after - before),
        "folders_removed": sorted(before - after),
        "server_changed": old.remote != new.remote,
    }


def hand_over(old: Daemon, new: Daemon) -> None:
    """After ``old``'s loop ended for a reload: what it had pending goes to ``new`` (a held
    batch stays held: the new daemon's first reconcile must not send it); control requests
    still queued for it are forwarded; its worker threads are told to end."""
    held = old.sender.hold
    kept: set[str] = set()
    if held.batch is not None and new.config.sync.hold_over:
        new.sender.hold.keep(held.batch, held.reason or "held before the reload")
        kept = set(held.paths)
    for path in old.sender.pending_paths():
        if path not in kept:  # the plan looks at what the file is now
            new.sender.add(Change(path, ChangeKind.MODIFIED))
    new.rebuilds.update(old.rebuilds)
    new.sender.uploaded = old.sender.uploaded
    new.sender.removed = old.sender.removed
    new.sender.removed_folders = old.sender.removed_folders
    new.sender.last_sync = old.sender.last_sync
    old.stopping.set()  # the old rebuild worker and anything waiting on it
    old.forward_queued(new)
