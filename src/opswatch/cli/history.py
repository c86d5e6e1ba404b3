"""``opswatch history [BATCH]``: the deploy history, read from the state folder (no daemon
needed; sqlite lets it read while the daemon writes)."""

from __future__ import annotations

import difflib
import sys
from datetime import datetime

import click

from opswatch.cli.app import App, echo_json, expected_errors, pass_app
from opswatch.local.history import History
from opswatch.local.history_records import BatchRecord, FileChange, batch_to_json


def open_history(app: App) -> History:
    config = app.config
    return History(app.paths.ensure().history, config.history.max_bytes)


@click.command()
@click.argument("batch", type=int, required=False)
@click.option("-n", "limit", type=click.IntRange(1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the batches as JSON.")
@pass_app
@expected_errors
def history(app: App, batch: int | None, limit: int, as_json: bool) -> None:
    """The deploy history: each batch that landed, newest first (or one BATCH in full)."""
    store = open_history(app)
    try:
        if batch is None:
            batches = store.batches(limit)
            if as_json:
                echo_json([batch_to_json(b) for b in batches])
            else:
                for record in batches:
                    click.echo(_line(record))
            return
        found = store.get(batch)
        if found is None:
            click.echo(f"error: no batch {batch} in the deploy history", err=True)
            sys.exit(1)
        if as_json:
            echo_json(batch_to_json(found))
        else:
            _show(store, found)
    finally:
        store.close()


def _when(at: float) -> str:
    return datetime.fromtimestamp(at).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _git(record: BatchRecord) -> str:
    git = record.git
    if git.commit is None:
        return "-"
    where = git.branch or "detached"
    return f"{git.commit[:9]} {where}{'*' if git.dirty else ''}"


def _line(record: BatchRecord) -> str:
    builds = ", ".join(
        f"{r.service} {'ok' if r.ok else 'FAILED'}{' rolled back' if r.rolled_back else ''}"
        for r in record.rebuilds
    )
    undoes = f" (undoes {record.undoes})" if record.undoes else ""
    text = f"{record.id:>5}  {_when(record.at)}  {record.kind:<9} {_git(record):<22}"
    text += f" {len(record.files)} file(s){undoes}"
    return text + (f"  rebuilds: {builds}" if builds else "")


def _show(store: History, record: BatchRecord) -> None:
    click.echo(_line(record))
    for change in record.files:
        click.echo(f"  {_verb(change):<8} {change.local} → {change.remote}  {_stat(store, change)}")
    for rebuild in record.rebuilds:
        state = "ok" if rebuild.ok else "FAILED"
        first = rebuild.detail.splitlines()[0] if rebuild.detail else ""
        click.echo(f"  rebuild  {rebuild.service}: {state}: {first}")


def _verb(change: FileChange) -> str:
    if change.after is None:
        return "removed"
    return "created" if change.created else "changed"


def _stat(store: History, change: FileChange) -> str:
    """``+3 -1`` lines between the kept versions; what is not kept (or not text) is said so."""
    sides = []
    for sha in (change.before, change.after):
        data = store.blob(sha) if sha else b""
        if data is None:
            return "(those bytes are no longer kept)"
        try:
            sides.append(data.decode("utf-8").splitlines())
        except UnicodeDecodeError:
            return "(binary)"
    if change.before is None and not change.created:
        return "(what the server held before is not known)"
    added = removed = 0
    for line in difflib.unified_diff(sides[0], sides[1], lineterm="", n=0):
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return f"+{added} -{removed}"
