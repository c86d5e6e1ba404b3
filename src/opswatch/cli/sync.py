"""``opswatch sync``: one reconcile pass, printed as a plan (``--dry-run``) or carried out."""

from __future__ import annotations

import json
from collections.abc import Iterator

import click

from opswatch.config import Config
from opswatch.core.builds import BuildGap
from opswatch.core.selection import EVERYTHING, Selection
from opswatch.daemon.control import ControlClient
from opswatch.errors import NotRunningError, OpswatchError
from opswatch.local.scan import LocalIndex
from opswatch.logs import escaped
from opswatch.model import Plan
from opswatch.paths import StatePaths
from opswatch.sync.oneshot import (
    SAID_ALOUD,
    build_gaps,
    connected_syncer,
    plan_to_json,
    printable,
    report_to_json,
    when_problems,
)
from opswatch.sync.progress import progress_bar
from opswatch.sync.syncer import PassReport


def print_plan(plan: Plan) -> None:
    for upload in plan.uploads:
        click.echo(f"upload    {escaped(upload.local)} → {escaped(upload.remote)}")
    for remove in plan.removes:
        click.echo(f"remove    {escaped(remove.remote)}")
    for conflict in plan.conflicts:
        click.echo(
            f"conflict  {escaped(conflict.remote)} changed on the server (sync --force overwrites)"
        )
    for skip in plan.skipped:
        word = "refused" if skip.refusal is not None else "skip"
        click.echo(f"{word:<9} {escaped(printable(skip.local))} ({escaped(skip.reason)})")
    click.echo(
        f"{len(plan.uploads)} to upload, {len(plan.removes)} to remove, "
        f"{len(plan.conflicts)} conflicts, {len(plan.skipped)} skipped or refused"
    )


def run_sync(
    config: Config,
    paths: StatePaths,
    *,
    dry_run: bool,
    force: bool,
    as_json: bool,
    only: Selection = EVERYTHING,
) -> int:
    with connected_syncer(config, paths) as syncer:
        plan, index = syncer.plan_reconcile(only=only)
        unselected = only.unmatched(_looked_at(plan, index))
        for path in unselected:
            click.echo(f"error: {escaped(path)}: no rule selects it", err=True)
        if force and plan.conflicts:
            if not dry_run:
                # --force overwrites what someone changed on the server: keep their copy first.
                saved = syncer.save_remote_copies(plan.conflicts, paths.conflicts)
                for conflict, copy in zip(plan.conflicts, saved, strict=True):
                    click.echo(f"saved the server's {escaped(conflict.remote)} as {copy}", err=True)
            plan, _index = syncer.plan_reconcile(force=True, only=only)
        if dry_run:
            for problem in when_problems(syncer):
                click.echo(f"warning: {escaped(problem)}", err=True)
            show_plan(syncer.refuse_by_content(plan), build_gaps(syncer), as_json=as_json)
            return 1 if unselected else 0
        total = len(plan.actions)
        with progress_bar("syncing", total, enabled=not as_json) as advance:
            report = syncer.execute(plan, progress=advance, kind="sync")
        gaps = build_gaps(syncer)
    if force and report.landed:
        tell_daemon(config, paths, report)
    if as_json:
        shown = {**report_to_json(report), "build_gaps": [g.to_json() for g in gaps]}
        click.echo(json.dumps(shown, indent=2))
    else:
        print_report(plan, report, gaps)
    # Changed between the check and the read: not sent this time; the next sync sends it.
    unsent = [p for p in report.changed_meanwhile if p not in report.landed]
    for path in unsent:
        click.echo(f"error: {path}: changed while syncing; not sent (sync again)", err=True)
    # A refusal is the design working (INTERFACE: "refusals are warnings"), not a failure.
    failed = report.failed or report.conflicts or unselected or unsent
    return 1 if failed else 0


def tell_daemon(config: Config, paths: StatePaths, report: PassReport) -> None:
    """A daemon running for this config follows what ``--force`` put in place: its conflict
    list clears and the rebuilds follow, as after a batch of its own."""
    control = ControlClient(paths, config.source)
    try:
        result = control.request("forced", paths=report.landed, batch=report.batch)
    except NotRunningError:
        return
    except OpswatchError as exc:
        click.echo(f"warning: the running opswatch was not told: {escaped(str(exc))}", err=True)
        return
    cleared = int(result.get("conflicts_cleared", 0))
    click.echo(f"told the running opswatch ({cleared} conflict(s) cleared)", err=True)


def show_plan(plan: Plan, gaps: list[BuildGap], *, as_json: bool) -> None:
    """The dry run: what would go, and the sources a build would still miss after it."""
    if as_json:
        shown = {**plan_to_json(plan), "build_gaps": [g.to_json() for g in gaps]}
        click.echo(json.dumps(shown, indent=2))
        return
    print_plan(plan)
    for gap in gaps:
        click.echo(f"gap       {escaped(gap.message)}")


def print_report(plan: Plan, report: PassReport, gaps: list[BuildGap]) -> None:
    for gap in gaps:
        click.echo(f"warning: {escaped(gap.message)}", err=True)
    folders = f" (and {len(report.removed_folders)} emptied folders)"
    click.echo(
        f"{len(report.uploaded)} uploaded, {len(report.removed)} removed"
        f"{folders if report.removed_folders else ''}, "
        f"{len(report.failed)} failed, {len(report.refused)} refused, "
        f"{len(report.conflicts)} conflicts"
    )
    for path, reason in report.failed.items():
        click.echo(f"error: {escaped(path)}: {escaped(reason)}", err=True)
    for path, reason in report.refused.items():
        click.echo(f"warning: refused: {escaped(path)}: {escaped(reason)}", err=True)
    for skip in plan.skipped:
        if skip.refusal in SAID_ALOUD:  # what a user may believe was sent: say it was not
            click.echo(
                f"refused: {escaped(printable(skip.local))}: {escaped(skip.reason)}", err=True
            )
    for conflict in report.conflicts:
        click.echo(
            f"error: {escaped(conflict.remote)} changed on the server; not overwritten "
            "(opswatch sync --force overwrites it)",
            err=True,
        )


def _looked_at(plan: Plan, index: LocalIndex) -> Iterator[str]:
    """Every local path the pass considered: routed files, refusals, and deletes it planned."""
    yield from index.files
    yield from (skip.local for skip in index.refused)
    yield from (action.local for action in plan.actions)
