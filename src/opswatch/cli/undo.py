"""``opswatch undo [BATCH] [--force]``: put the server back as before a batch, then rebuild and
health-check what it affects, as a forward batch does.

With a daemon running, the daemon does it (one engine does all remote I/O) and this command
waits for the rebuilds it queued (the worker records each in the history); without one, it runs
here over a connection of its own. Exit 0 when the files went back and every rebuild passed;
1 when refused or failed.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from opswatch.cli.app import App, expected_errors, pass_app
from opswatch.config import Config
from opswatch.errors import NotRunningError
from opswatch.local.history import History
from opswatch.local.history_records import RebuildEntry
from opswatch.paths import StatePaths

POLL_S = 0.2


@click.command()
@click.argument("batch", type=int, required=False)
@click.option("--force", is_flag=True, help="Undo even files changed since on the server.")
@pass_app
@expected_errors
def undo(app: App, batch: int | None, force: bool) -> None:
    """Put the server back as it was before BATCH (default: the last one), rebuild, check."""
    from opswatch.cli.control import client

    config = app.config
    try:
        result = client(app).request("undo", timeout=None, batch=batch, force=force)
    except NotRunningError:
        result, rebuilds = run_undo(config, app.paths, batch, force)
    else:
        # The daemon's own config decides whether it rebuilds (it may predate an edit of ours).
        expected = _expected_rebuilds(config, result["locals"]) if result.get("rebuilds") else 0
        rebuilds = _wait_rebuilds(config, app.paths, int(result["batch"]), expected)
    click.echo(
        f"batch {result['undone']} undone as batch {result['batch']}: "
        f"{len(result['restored'])} restored, {len(result['removed'])} removed"
    )
    for entry in rebuilds:
        first = entry.detail.splitlines()[0] if entry.detail else ""
        click.echo(f"{entry.service}: {'ok' if entry.ok else 'FAILED'}: {first}")
    sys.exit(0 if all(entry.ok for entry in rebuilds) else 1)


def _expected_rebuilds(config: Config, paths: list[str]) -> int:
    from opswatch.core.rules import Router
    from opswatch.rebuild.deploy import ComposeView

    found = ComposeView(config, Router.from_config(config).targets).affected(paths)
    return len(found.services) + (1 if found.apply else 0)


def _wait_rebuilds(
    config: Config, paths: StatePaths, batch: int, expected: int
) -> list[RebuildEntry]:
    if not expected:
        return []
    rebuild = config.rebuild
    deadline = time.monotonic() + 2 * rebuild.timeout_s + rebuild.health_timeout_s + 60
    history = History(paths.history, config.history.max_bytes)
    try:
        while True:
            record = history.get(batch)
            found = list(record.rebuilds) if record else []
            if len(found) >= expected or time.monotonic() > deadline:
                return found
            time.sleep(POLL_S)
    finally:
        history.close()


def run_undo(
    config: Config, paths: StatePaths, batch: int | None, force: bool
) -> tuple[dict[str, Any], list[RebuildEntry]]:
    """The one-shot undo: files back over a connection of its own, then the rebuilds."""
    from opswatch.core.rules import Router
    from opswatch.local.builds import SourceCheck
    from opswatch.local.manifest import Manifest
    from opswatch.rebuild.deploy import ComposeView, Deployer, Work
    from opswatch.ssh.remote import connected_remote
    from opswatch.sync.undo import Undoer

    paths = paths.ensure()
    history = History(paths.history, config.history.max_bytes)
    manifest = Manifest(paths.manifest)
    entries: list[RebuildEntry] = []
    try:
        with connected_remote(config.remote) as remote:
            done = Undoer(history, remote, manifest, config.local_root).undo(batch, force=force)
            if config.rebuild.mode == "auto":
                router = Router.from_config(config)
                view = ComposeView(config, router.targets)
                found = view.affected(done.locals)
                work = Work(found.services, found.apply, done.batch)
                check = SourceCheck(config, router, remote.stat_many)
                deployer = Deployer(view, remote.run, preflight=check.before_build)
                for result in deployer.deploy(work) if work else []:
                    entry = RebuildEntry(result.service, result.ok, result.at, result.detail)
                    history.add_rebuild(done.batch, entry)
                    entries.append(entry)
    finally:
        manifest.close()
        history.close()
    summary = {
        "undone": done.undone,
        "batch": done.batch,
        "restored": list(done.restored),
        "removed": list(done.removed),
    }
    return summary, entries
