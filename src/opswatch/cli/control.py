"""The commands that talk to a running daemon: ``status``, ``pause``, ``resume``, ``flush``,
``stop``, ``reload``.

They need no valid config, only its path: the path names the state folder and so the socket.
No daemon answering is exit 3, as LSB init scripts' ``status`` does.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import click

from opswatch.cli.app import App, echo_json, expected_errors, pass_app
from opswatch.daemon.control import ControlClient
from opswatch.daemon.pause import MAX_PAUSE_S
from opswatch.errors import ConfigError, NotRunningError, OpswatchError
from opswatch.logs import escaped
from opswatch.paths import state_paths

SHOW_PATHS = 5
PAUSE_TIMEOUT_S = 120.0  # the engine takes the request after the batch in flight
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str) -> float:
    """``30s``, ``10m``, ``2h``, ``1h30m``, ``1d``; a bare number is seconds."""
    cleaned = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        seconds = float(cleaned)
    elif cleaned and re.fullmatch(rf"(?:{_PART.pattern})+", cleaned):
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(cleaned))
    else:
        raise ValueError(f"{text!r} is not a duration (like 30s, 10m, 2h or 1h30m)")
    if seconds <= 0:
        raise ValueError(f"{text!r}: a pause must last longer than 0 s")
    if seconds > MAX_PAUSE_S:
        raise ValueError(f"{text!r}: a pause lasts at most a year (365d)")
    return seconds


class Duration(click.ParamType[float]):
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def client(app: App) -> ControlClient:
    return ControlClient(state_paths(app.config_path), os.path.abspath(app.config_path))


def ask(app: App, name: str, **kwargs: Any) -> dict[str, Any]:
    """One request to the daemon. With none running, a config that fails to load is the
    better answer (exit 2): it is most likely why the daemon is not running."""
    try:
        return client(app).request(name, **kwargs)
    except NotRunningError:
        problem = config_problem(app)
        if problem is not None:
            raise problem from None
        raise


def config_problem(app: App) -> ConfigError | None:
    """Why the config file fails to load; None when it loads or does not exist at all."""
    if not app.config_path.exists():
        return None
    try:
        app.config  # noqa: B018 - loading is the check
    except ConfigError as exc:
        return exc
    return None


# -- human output ----------------------------------------------------------------------------


def span(seconds: float) -> str:
    """``45s``, ``12m``, ``2h 13m``, ``3d 4h``: two units at most."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def _when(stamp: str | None, now: datetime) -> datetime | None:
    if not stamp:
        return None
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _local(moment: datetime, now: datetime) -> str:
    local = moment.astimezone()
    same_day = local.date() == now.astimezone().date()
    return local.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M")


def _paths(paths: list[str], total: int) -> str:
    shown = ", ".join(escaped(path) for path in paths[:SHOW_PATHS])
    return shown + (f", … ({total - SHOW_PATHS} more)" if total > SHOW_PATHS else "")


def format_status(status: dict[str, Any], now: datetime) -> str:
    lines = [f"opswatch is {status['state']}  (pid {status['pid']}, config {status['config']})"]
    since = _when(status.get("connected_since"), now)
    if status["connected"] and since:
        host = f"{status['host']}, connected for {span((now - since).total_seconds())}"
    else:
        host = f"{status['host']}, not connected"
    lines.append(f"host:        {host}")
    paused = _when(status.get("paused_until"), now)
    if paused:
        left = span((paused - now).total_seconds())
        lines.append(f"paused:      until {_local(paused, now)} (in {left})")
    elif status["state"] == "paused":
        lines.append("paused:      until `opswatch resume`")
    pending = f"{status['pending']}"
    if status["pending"]:
        pending += f": {_paths(status['pending_paths'], status['pending'])}"
    lines.append(f"pending:     {pending}")
    if status.get("held"):
        held = f"{status['held']} file(s) waiting for `opswatch flush`"
        lines.append(f"held:        {held}: {_paths(status['held_paths'], status['held'])}")
    last = _when(status.get("last_sync"), now)
    last_text = f"{_local(last, now)} ({span((now - last).total_seconds())} ago)" if last else "—"
    lines.append(f"last sync:   {last_text}")
    removed = f"removed {status['removed']}"
    if status.get("removed_folders"):
        removed += f" and {status['removed_folders']} emptied folder(s)"
    lines.append(f"uploaded:    {status['uploaded']} file(s), {removed}")
    lines.append(f"last error:  {escaped(status['last_error'] or '—')}")
    for rebuild in status.get("rebuilds", []):
        at = _when(rebuild.get("at"), now)
        outcome = "ok" if rebuild["ok"] else "FAILED"
        when = f" at {_local(at, now)}" if at else ""
        detail = f": {rebuild['detail']}" if rebuild.get("detail") else ""
        lines.append(f"rebuild:     {rebuild['service']} {outcome}{when}{detail}")
    if status.get("conflicts"):
        conflicts = status["conflicts"]
        lines.append(f"conflicts:   {_paths(conflicts, len(conflicts))} (`opswatch sync --force`)")
    for gap in status.get("build_gaps", []):
        source = f"{gap.get('instruction', 'COPY')} {gap.get('source')}"
        lines.append(f"build gap:   {gap.get('service')}: {source}: {gap.get('reason', '')}")
    refused = status.get("refused") or []
    if refused:
        # A name that is not UTF-8 arrives with lone surrogates: escaped, never an encode error.
        shown = [
            f"{r['path']} ({r['reason']})".encode(errors="backslashreplace").decode()
            for r in refused
        ]
        lines.append(f"refused:     {_paths(shown, len(shown))}")
    lines += _history_lines(status, now)
    return "\n".join(lines)


def _history_lines(status: dict[str, Any], now: datetime) -> list[str]:
    lines = []
    batch = status.get("last_batch")
    if isinstance(batch, dict):
        at = _when(batch.get("at"), now)
        commit = f", commit {str(batch['commit'])[:9]}" if batch.get("commit") else ""
        when = f" at {_local(at, now)}" if at else ""
        lines.append(f"last batch:  {batch.get('id')}{when}{commit} (`opswatch history`)")
    rolled = status.get("rolled_back") or []
    if rolled:
        paths = _paths(rolled, len(rolled))
        lines.append(f"rolled back: {paths} (sent again when edited, or by `opswatch flush`)")
    return lines


# -- commands --------------------------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@pass_app
@expected_errors
def status(app: App, as_json: bool) -> None:
    """What the running daemon is doing (exit 3 if none is running)."""
    result = ask(app, "status")
    if as_json:
        echo_json(result)
    else:
        click.echo(format_status(result, datetime.now(UTC)))
    problem = config_problem(app)
    if problem is not None:  # the daemon keeps the config it loaded; say the file is broken
        for line in problem.problems:
            click.echo(
                f"warning: {escaped(line)} (the daemon still runs the last good one)", err=True
            )


@click.command()
@click.option(
    "--for",
    "duration",
    type=Duration(),
    help="Resume by itself after this long (30s, 10m, 2h); default: until `opswatch resume`.",
)
@pass_app
@expected_errors
def pause(app: App, duration: float | None) -> None:
    """Stop sending; changes keep being recorded as pending. Survives a restart."""
    result = ask(app, "pause", timeout=PAUSE_TIMEOUT_S, seconds=duration)
    until = _when(result.get("paused_until"), datetime.now(UTC))
    if until is not None and duration is not None:
        now = datetime.now(UTC)
        click.echo(f"paused until {_local(until, now)} ({span(duration)}); changes stay pending")
    else:
        click.echo("paused until `opswatch resume`; changes stay pending")


@click.command()
@pass_app
@expected_errors
def resume(app: App) -> None:
    """Send what is pending now, as one batch, then keep watching."""
    result = ask(app, "resume", timeout=None)
    if result.get("error"):
        click.echo(
            f"resumed; {result.get('pending', 0)} file(s) still pending: {result['error']}",
            err=True,
        )
        return
    sent = int(result.get("sent", 0))
    click.echo(f"resumed; sent {sent} file(s)" if sent else "resumed; nothing was pending")


@click.command()
@pass_app
@expected_errors
def flush(app: App) -> None:
    """Send what is pending now, skipping the quiet period; return once it landed."""
    result = ask(app, "flush", timeout=None)
    click.echo(flushed_line(result))


def flushed_line(result: Mapping[str, Any]) -> str:
    """What a flush did: uploads landed, removals removed, each said as what it was."""
    sent, removed = int(result.get("sent", 0)), int(result.get("removed", 0))
    folders = int(result.get("removed_folders", 0))
    done = [f"{sent} file(s) landed"] if sent else []
    done += [f"{removed} file(s) removed"] if removed else []
    done += [f"{folders} emptied folder(s) removed"] if folders else []
    return "flushed; " + ", ".join(done) if done else "nothing pending"


STOP_WAIT_S = 600.0  # the batch in flight may be a big one
# A clean exit is not restarted by the units `opswatch service install` writes
# (Restart=on-failure, KeepAlive.SuccessfulExit=false), but the next login starts them again.
RESTARTS = {
    "systemd": "systemd may start it again (at the next login; "
    "`systemctl --user disable opswatch` keeps it off)",
    "launchd": "launchd may start it again (at the next login; "
    "`opswatch service uninstall` keeps it off)",
}


@click.command()
@pass_app
@expected_errors
def stop(app: App) -> None:
    """Finish the batch in flight, then exit; what is pending waits for the next start."""
    control = client(app)
    result = control.request("stop", timeout=STOP_WAIT_S)
    try:  # the reply comes once the engine took the request: the process is on its way out
        wait_until_gone(control, STOP_WAIT_S)
    except TimeoutError:
        click.echo(f"error: opswatch did not exit within {STOP_WAIT_S:g} s", err=True)
        sys.exit(1)
    click.echo("stopped")
    manager = result.get("service_manager")
    if isinstance(manager, str) and manager in RESTARTS:
        click.echo(f"note: opswatch ran under {manager}: {RESTARTS[manager]}", err=True)


def wait_until_gone(control: ControlClient, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            control.request("status", timeout=5)
        except NotRunningError:
            return
        except OpswatchError:
            pass  # shutting down: the socket is still there but nobody answers
        time.sleep(0.1)
    raise TimeoutError


@click.command()
@pass_app
@expected_errors
def reload(app: App) -> None:
    """Read the config again; an invalid one is refused (exit 2) and the running one kept."""
    result = client(app).request("reload", timeout=None)
    if not result.get("changed"):
        click.echo("reloaded; the config is unchanged")
        return
    click.echo("reloaded; the new config is applied")
    for folder in result.get("folders_added", []):
        click.echo(f"watching:    {escaped(str(folder))}")
    for folder in result.get("folders_removed", []):
        click.echo(f"not watched: {escaped(str(folder))}")
    if result.get("server_changed"):
        click.echo("server:      changed; reconnecting")


COMMANDS = (status, pause, resume, flush, stop, reload)
