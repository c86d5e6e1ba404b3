"""``opswatch rebuild SERVICE…``: build, redeploy and health-check services now, over a fresh
connection of its own (a running daemon keeps its own).

Exit 0 when every service built, came up and answered its health URL; 1 otherwise; 2 for a
name that is not a service of the compose file.
"""

from __future__ import annotations

import sys

import click

from opswatch.cli.app import App, echo_json, expected_errors, pass_app
from opswatch.config import Config
from opswatch.model import RebuildResult


def run_rebuild(config: Config, services: tuple[str, ...]) -> list[RebuildResult]:
    from opswatch.core.rules import Router
    from opswatch.errors import LocalFileError, UsageError
    from opswatch.local.builds import SourceCheck
    from opswatch.model import SERVICE_NAME_RULE, valid_service_name
    from opswatch.rebuild.deploy import ComposeView, Deployer, Work, unknown_services
    from opswatch.ssh.remote import connected_remote

    bad = [s for s in services if not valid_service_name(s)]
    if bad:
        raise UsageError(f"{bad[0]!r} is not a compose service name ({SERVICE_NAME_RULE})")
    router = Router.from_config(config)
    view = ComposeView(config, router.targets)
    try:
        unknown = unknown_services(view.project(), services)
    except LocalFileError:
        unknown = []  # the server's copy may still be fine: let `docker compose` decide
    if unknown:
        source = config.rebuild.compose_file or "rebuild.service"
        raise UsageError(f"{unknown[0]!r} is not a service of {source}")
    with connected_remote(config.remote) as remote:
        check = SourceCheck(config, router, remote.stat_many)
        deployer = Deployer(view, remote.run, preflight=check.before_build)
        return deployer.deploy(Work(tuple(dict.fromkeys(services))))


@click.command()
@click.argument("services", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@pass_app
@expected_errors
def rebuild(app: App, services: tuple[str, ...], as_json: bool) -> None:
    """Rebuild and redeploy SERVICES now, then check their health."""
    results = run_rebuild(app.config, services)
    if as_json:
        echo_json(
            [{"service": r.service, "ok": r.ok, "at": r.at, "detail": r.detail} for r in results]
        )
    else:
        for result in results:
            lines = result.detail.splitlines() or [""]
            click.echo(f"{result.service}: {'ok' if result.ok else 'FAILED'}: {lines[0]}")
            for line in lines[1:]:
                click.echo(f"    {line}", err=not result.ok)
    sys.exit(0 if all(r.ok for r in results) else 1)
