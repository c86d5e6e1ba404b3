"""``init`` and ``verify``: the prompting and printing around local/starter and sync/verify."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from opswatch.cli.app import App, echo_json, expected_errors, pass_app
from opswatch.logs import escaped

if TYPE_CHECKING:
    from opswatch.local.starter import Layout
    from opswatch.sync.verify import VerifyReport


def _ask_folder(question: str, choices: list[str]) -> str:
    if choices:
        for number, choice in enumerate(choices, 1):
            click.echo(f"  {number}. {choice or '.'}")
        picked: int = click.prompt(question, type=click.IntRange(1, len(choices)), default=1)
        return choices[picked - 1]
    answer: str = click.prompt(question + " (relative to the repository)")
    return answer


@click.command()
@click.option("--from", "ops_from", metavar="FOLDER", help="The ops folder (default: docs/ops).")
@click.option("--host", help="The server: an ~/.ssh/config alias or a host name.")
@click.option(
    "--remote-root",
    metavar="PATH",
    help="The repository's copy on the server: absolute, or ~/x relative to the login's home "
    "(default: ~/ and this repository's name).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing config.")
@click.pass_context
@expected_errors
def init(
    ctx: click.Context,
    ops_from: str | None,
    host: str | None,
    remote_root: str | None,
    force: bool,
) -> None:
    """Write a starter opswatch.toml for the repository this is run in."""
    import tomllib

    from opswatch.config import parse_config
    from opswatch.errors import UsageError
    from opswatch.local import starter

    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    root = starter.repository_root(Path.cwd())
    explicit = ctx.parent.params.get("config_path") if ctx.parent else None
    target = Path(explicit) if explicit else root / starter.CONFIG_NAME
    if target.exists() and not force:
        raise UsageError(f"{target} exists; `opswatch init --force` overwrites it")
    ops = starter.find_ops_folder(root, ops_from, _ask_folder if interactive else None)
    layout = starter.inspect(root, ops)
    if host is None:
        host = (
            click.prompt("Server (ssh alias or host)", default="droplet")
            if interactive
            else "droplet"
        )
    if remote_root is None:
        # The login's home on the server, whoever logs in (not /root): as scp reads ~/x.
        default_root = f"~/{root.name}"
        remote_root = (
            click.prompt("Repository's folder on the server", default=default_root)
            if interactive
            else default_root
        )
    expanded = starter.locally_expanded(remote_root, Path.home())
    if expanded is not None:
        click.echo(
            f"warning: --remote-root {remote_root} starts with your local home "
            f"({Path.home()}): your shell may have expanded ~. On the server it means that "
            f"absolute path; for the login's home there, quote it: --remote-root '~/{expanded}'",
            err=True,
        )
    text = starter.render(layout, host, remote_root)
    parse_config(tomllib.loads(text), target.absolute(), str(target))  # never write a bad one
    starter.write_config(target, text, force=force)
    _summarize(target, layout)


def _summarize(target: Path, layout: Layout) -> None:
    from opswatch.local.starter import dockerfile_patterns

    ops = (layout.ops or ".") + "/"
    click.echo(f"wrote {target}")
    if layout.compose_files:
        to = layout.compose_to.rstrip("/") + "/"
        click.echo(f"  {ops}: {' '.join(layout.compose_files)}  → {to}")
        if to == ops:
            click.echo("      beside its Dockerfiles: its build paths are relative to itself")
    picked = dockerfile_patterns(layout.dockerfiles) + [f + "/" for f in layout.folders]
    click.echo(f"  {ops}: {' '.join(picked)}  → {ops}")
    for rule in layout.sources.rules:
        shown = " ".join(rule.match) if rule.match else ""
        click.echo(f"  {rule.source}/ {shown}".rstrip() + f"  → {rule.to}/  (build sources)")
        for why in rule.why:
            click.echo(f"      for {why}")
    for note in layout.sources.notes:
        click.echo(f"  no rule: {note}")
    if layout.refused:
        click.echo(f"  stays here (never): {' '.join(layout.refused)}")
    if layout.services:
        names = ", ".join(name for name, _ in layout.services)
        click.echo(f"  compose services: {names} (rebuild is off: see [rebuild])")
    click.echo(
        "next: `opswatch sync --dry-run` shows what would go; `opswatch run` keeps it in step"
    )


@click.command()
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
@expected_errors
def verify(app: App, paths: tuple[str, ...], as_json: bool) -> None:
    """Compare the server's copy of every synced file with the local one (sha256).

    With PATHs (files or folders, relative to the current folder), only the files under them.
    Exit 0 when every file matches, 1 when one differs, is missing on the server, or a PATH
    names nothing the rules select; without PATHs, also when a build would miss a source its
    Dockerfile copies.
    """
    from opswatch.core.selection import parse_selection
    from opswatch.ssh.remote import connected_remote
    from opswatch.sync.verify import verify as check

    config = app.config
    only = parse_selection(paths, Path.cwd(), config.local_root)
    with connected_remote(config.remote) as remote:
        report = check(config, remote, show_progress=not as_json, only=only)
    if as_json:
        echo_json(report.to_json())
    else:
        _print_report(report)
    sys.exit(0 if report.ok else 1)


def _print_report(report: VerifyReport) -> None:
    rows = [("DIFFERS", t.local, t.remote) for t, _ in report.differ]
    rows += [("MISSING", t.local, t.remote) for t in report.missing]
    if rows:
        width = max(len(escaped(r[1])) for r in rows)
        click.echo(f"{'STATE':<8} {'LOCAL':<{width}}  REMOTE")
        for state, local, remote in rows:
            click.echo(f"{state:<8} {escaped(local):<{width}}  {escaped(remote)}")
    for path, reason in report.unreadable_locally.items():
        click.echo(f"warning: {escaped(path)}: cannot read: {escaped(reason)}", err=True)
    for path in report.unselected:
        click.echo(f"error: {escaped(path)}: no rule selects it", err=True)
    for gap in report.build_gaps:
        click.echo(f"GAP      {escaped(gap.message)}")
    for path, reason in report.refused.items():  # never sent: not drift
        click.echo(f"REFUSED  {escaped(path)}  ({escaped(reason)})")
    matching = report.checked - len(rows)
    how = f"{report.hashed_remotely} hashed by the server"
    if report.read_over_sftp:
        how += f", {report.read_over_sftp} read over SFTP"
    if report.no_remote_hash:
        how += f": {report.no_remote_hash}"
    click.echo(
        f"{report.checked} checked: {matching} match, {len(report.differ)} differ, "
        f"{len(report.missing)} missing ({how})"
        + (f"; {len(report.refused)} refused" if report.refused else "")
        + (f"; {len(report.build_gaps)} build sources missing" if report.build_gaps else "")
    )
