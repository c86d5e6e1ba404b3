"""One-shot syncing: a connected ``Syncer`` for a command, and its plan and report as JSON."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from opswatch.config import Config
from opswatch.core.builds import BuildGap
from opswatch.core.rules import Router
from opswatch.core.when import unmatchable_when
from opswatch.local.builds import SourceCheck
from opswatch.local.manifest import Manifest
from opswatch.local.scan import read_ignore_files
from opswatch.model import Plan, Refusal
from opswatch.paths import StatePaths
from opswatch.ssh.remote import connected_remote
from opswatch.sync.recording import open_recorder
from opswatch.sync.syncer import PassReport, Syncer

# Refusals printed even without --dry-run: a never-listed name is expected to stay, these are not.
SAID_ALOUD = frozenset(
    {
        Refusal.SYMLINK_OUTSIDE,
        Refusal.SYMLINK_TO_NEVER,
        Refusal.SYMLINK_FOLDER,
        Refusal.HARD_LINK,
        Refusal.NOT_REGULAR,
        Refusal.BAD_NAME,
        Refusal.UNREADABLE,
        Refusal.IGNORE_FILE,
    }
)


@contextmanager
def connected_syncer(config: Config, paths: StatePaths) -> Iterator[Syncer]:
    """A connected ``Syncer`` over the config's manifest, closed afterwards."""
    router = Router.from_config(
        config, read_ignore_files(config.local_root, config.watched_folders)
    )
    manifest = Manifest(paths.ensure().manifest)
    recorder = open_recorder(paths.history, config.history.max_bytes, config.local_root)
    try:
        with connected_remote(config.remote) as remote:
            yield Syncer(config, remote, manifest, router, recorder)
    finally:
        manifest.close()
        if recorder is not None:
            recorder.history.close()


def printable(path: str) -> str:
    """A path as a terminal can print it: bytes that are not UTF-8 as ``\\xff`` escapes."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def plan_to_json(plan: Plan) -> dict[str, object]:
    return {
        "upload": [
            {"path": u.local, "remote": u.remote, "bytes": u.file.size} for u in plan.uploads
        ],
        "remove": [{"path": r.local, "remote": r.remote} for r in plan.removes],
        "conflicts": [{"path": c.local, "remote": c.remote} for c in plan.conflicts],
        "skipped": [{"path": s.local, "reason": s.reason} for s in plan.skipped],
        "refused": [
            {"path": s.local, "reason": s.reason, "refusal": s.refusal.value}
            for s in plan.skipped
            if s.refusal is not None
        ],
    }


def report_to_json(report: PassReport) -> dict[str, object]:
    return {
        "uploaded": [o.job.remote for o in report.uploaded],
        "removed": report.removed,
        "removed_folders": report.removed_folders,  # emptied by the removes (sync.delete)
        "unchanged": report.unchanged,  # same bytes as last pushed: stat refreshed, not sent
        "failed": report.failed,
        "refused": report.refused,
        "conflicts": [c.remote for c in report.conflicts],
    }


def build_gaps(syncer: Syncer) -> list[BuildGap]:
    """Sources the builds copy that the server lacks and no rule sends (after this pass)."""
    return SourceCheck(syncer.config, syncer.router, syncer.remote.stat_many).gaps()


def when_problems(syncer: Syncer) -> list[str]:
    """``rebuild.service.when`` patterns that can never match a change."""
    config = syncer.config
    services = [(s.name, s.when) for s in config.rebuild.services]
    return unmatchable_when(services, config.watched_folders, syncer.router.never_reason)
