"""``opswatch demo``: the interactive tour and the scripted run, printed for a person."""

from __future__ import annotations

import json
import shlex
import signal
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from opswatch.cli.app import expected_errors

if TYPE_CHECKING:
    from opswatch.demo.script import Step
    from opswatch.demo.site import DemoSite

FOLLOW_INTERVAL_S = 0.2


@click.command()
@click.option("--script", is_flag=True, help="Make edits, check what lands, print a report, exit.")
@click.option("--keep", is_flag=True, help="Keep the demo folder afterwards, to look around.")
@expected_errors
def demo(script: bool, keep: bool) -> None:
    """The whole loop against a throwaway server on 127.0.0.1: no droplet, no root.

    Creates a sample repository, starts OpenSSH's sshd as you on a free port, runs the real
    daemon against it and shows what lands. With --script it edits files itself and exits
    0 when every check passed, 1 otherwise.
    """
    from opswatch.demo.site import demo_site, wait_ready

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with demo_site(keep=keep) as site:
            took = wait_ready(site)
            header = f"first sync: the sample repository is on the server ({_ms(took)})"
            if keep:
                header += f"\nthe demo folder stays afterwards: {site.base}"
            if script:
                sys.exit(_scripted(site, header))
            _interactive(site, header)
    except KeyboardInterrupt:
        click.echo(
            "\nstopped; the demo's server and daemon are gone" + (" (folder kept)" if keep else "")
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


# -- scripted ----------------------------------------------------------------------------------


def _scripted(site: DemoSite, header: str) -> int:
    from opswatch.demo.script import Script

    click.echo(f"opswatch demo: a throwaway sshd on 127.0.0.1:{site.sshd.port}, the real daemon")
    click.echo(header)
    steps = Script(site, _print_step).run()
    failed = [s for s in steps if not s.ok]
    timed = [s.seconds for s in steps if s.seconds is not None]
    if timed:
        click.echo(
            f"edits landed in {_ms(min(timed))}–{_ms(max(timed))} "
            f"(the 300 ms quiet period included)"
        )
    if failed:
        click.echo(f"FAILED: {len(failed)} of {len(steps)} checks; daemon log:", err=True)
        click.echo(site.log_tail(), err=True)
        return 1
    click.echo(f"all {len(steps)} checks passed")
    return 0


def _print_step(step: Step) -> None:
    mark = "ok  " if step.ok else "FAIL"
    took = f"landed in {_ms(step.seconds):>7}" if step.seconds is not None else " " * 17
    note = f"  ({step.note})" if step.note else ""
    click.echo(f"  {mark} {step.name:<34} {took}{note}")


# -- interactive -------------------------------------------------------------------------------


def _interactive(site: DemoSite, header: str) -> None:
    env = f"OPSWATCH_STATE_DIR={shlex.quote(str(site.state))}"
    ops = site.repo / "docs/ops"
    q = shlex.quote
    click.echo(
        f"""opswatch demo is running: the real daemon, a throwaway sshd on port {site.sshd.port}
{header}

  repository   {site.repo}
  server copy  {site.remote_root}
  config       {site.config}
  daemon log   {site.log_path}

Try, in another terminal:
  echo '# hello' >> {q(str(ops / "Dockerfile.demo-gateway"))}
  ls -l {q(str(site.remote_root / "docs/ops"))}
  echo 'SECRET=x' >> {q(str(ops / ".env"))}        # stays here
  cd {q(str(site.repo))}
  {env} opswatch status
  {env} opswatch pause      # edits keep being recorded
  {env} opswatch resume     # and go now

Ctrl-C stops the daemon and the server and removes the demo folder.
What the daemon does shows up here:"""
    )
    _follow(site)


def _follow(site: DemoSite) -> None:
    shown = ""
    with open(site.log_path, "rb") as log:
        log.seek(0, 2)
        while site.daemon is not None and site.daemon.poll() is None:
            for raw in log.readlines():
                line = _describe(raw)
                if line and line != shown:  # one save is often two events (modify, close)
                    click.echo(line)
                    shown = line
            time.sleep(FOLLOW_INTERVAL_S)
    click.echo(f"the daemon exited:\n{site.log_tail()}", err=True)


def _describe(raw: bytes) -> str | None:
    try:
        event: dict[str, Any] = json.loads(raw)
    except ValueError:
        return None
    name = event.get("event")
    at = str(event.get("timestamp", ""))[11:19]
    path = event.get("path", "")
    if name == "upload":
        return f"  {at} ↑ {path} → {event.get('remote')} ({event.get('ms')} ms)"
    if name == "remove":
        return f"  {at} ✗ {event.get('remote')} removed"
    if name == "never":
        return f"  {at} · {path} stays here ({event.get('reason')})"
    if name in ("held", "paused", "resumed", "conflict", "refused", "disconnected", "error"):
        details = {k: v for k, v in event.items() if k not in ("event", "timestamp", "logger")}
        details.pop("level", None)
        return f"  {at} {name} {json.dumps(details, ensure_ascii=False)}"
    return None
