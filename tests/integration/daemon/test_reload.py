"""`opswatch reload`, SIGHUP, the config file changing, `opswatch stop`, and `sync --force` while
the daemon runs: the real `opswatch run` against the session's real sshd, driven by the real CLI.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import SEED_RULES
from daemon_process import DaemonProcess, opswatch
from helpers import wait_until
from opswatch.demo.sshd import LocalSshd

pytestmark = pytest.mark.sshd

RUNBOOK = "docs/ops/runbooks/deploy.md"
QUIET = {"debounce_ms": 100, "max_delay_ms": 300}
DEPLOY_RULE = {"from": "deploy", "to": "deploy"}

Start = Callable[..., DaemonProcess]
Write = Callable[..., Path]


@pytest.fixture
def write(repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: Write) -> Write:
    """Writes `repo/opswatch.toml` with the seed rules, a short quiet period and `overrides`."""

    def write(**overrides: Any) -> Path:
        overrides.setdefault("sync", QUIET)
        return write_config(repo, sshd_server, remote_root, **overrides)

    return write


@pytest.fixture
def start(write: Write, tmp_path: Path) -> Iterator[Start]:
    started: list[DaemonProcess] = []

    def start(*, wait: str = "synced", **overrides: Any) -> DaemonProcess:
        daemon = DaemonProcess(write(**overrides), tmp_path / f"daemon-{len(started)}.log")
        started.append(daemon)
        return daemon.start(wait=wait)

    yield start
    for daemon in started:
        daemon.close()


def edit(repo: Path, relative: str, text: str) -> None:
    path = repo / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def handed_over(daemon: DaemonProcess, reloads: int = 1) -> None:
    """The new daemon serves: its `starting` is logged after the old one handed over."""
    wait_until(lambda: len(daemon.events("starting")) > reloads, 20, message="the hand-over")


def seed_rules_and(*rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [*SEED_RULES, *rules]


# -- reload -----------------------------------------------------------------------------------


def test_an_invalid_config_is_refused_and_the_running_one_kept(
    start: Start, write: Write, repo: Path, remote_root: Path
) -> None:
    daemon = start()
    config = daemon.config
    good = config.read_text()
    config.write_text(good.replace("debounce_ms = 100", 'debounce_ms = "soon"'))
    done = opswatch(config, "reload")
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("error: ") for line in lines)
    assert any(str(config) in line and "sync.debounce_ms" in line for line in lines), lines
    # Still running, on the old config: an edit lands after the old quiet period.
    edit(repo, RUNBOOK, "# after a refused reload\n")
    wait_until(lambda: (remote_root / RUNBOOK).read_text() == "# after a refused reload\n", 20)
    assert daemon.events("reload_refused")
    assert daemon.status() is not None


def test_reload_watches_a_new_folder_and_keeps_what_was_pending(
    start: Start, write: Write, repo: Path, remote_root: Path
) -> None:
    daemon = start()
    assert opswatch(daemon.config, "pause").returncode == 0
    edit(repo, RUNBOOK, "# pending across the reload\n")
    daemon.wait_for(lambda s: s["pending"] == 1, "the edit to be pending")
    edit(repo, "deploy/compose.yaml", "services: {}\n")  # no rule reaches it yet
    write(rule=seed_rules_and(DEPLOY_RULE))
    done = opswatch(daemon.config, "reload")
    assert done.returncode == 0, done.stderr
    assert "reloaded; the new config is applied" in done.stdout
    assert "watching:    deploy" in done.stdout
    handed_over(daemon)
    status = daemon.wait_for(lambda s: s["connected"], "the new daemon to connect")
    assert status["pending_paths"] == [RUNBOOK] and status["state"] == "paused"
    assert opswatch(daemon.config, "resume").returncode == 0
    wait_until(lambda: (remote_root / "deploy/compose.yaml").is_file(), 20)
    assert (remote_root / RUNBOOK).read_text() == "# pending across the reload\n"
    # The new folder is watched, not only scanned once.
    edit(repo, "deploy/compose.yaml", "services: {api: {}}\n")
    wait_until(lambda: (remote_root / "deploy/compose.yaml").read_text().endswith("{}}\n"), 20)
    assert daemon.process is not None and daemon.process.poll() is None  # same process


def test_reload_of_an_unchanged_config_changes_nothing(start: Start) -> None:
    daemon = start()
    done = opswatch(daemon.config, "reload")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reloaded; the config is unchanged"


def test_a_new_remote_root_reconnects_and_fills_it(
    start: Start, write: Write, repo: Path, tmp_path: Path
) -> None:
    daemon = start()
    other = (tmp_path / "other-root").resolve()
    other.mkdir()
    text = daemon.config.read_text()
    assert text.count(f'"{tmp_path / "remote"}"') == 1
    daemon.config.write_text(text.replace(f'"{tmp_path / "remote"}"', f'"{other}"'))
    done = opswatch(daemon.config, "reload")
    assert done.returncode == 0, done.stderr
    assert "server:      changed; reconnecting" in done.stdout
    wait_until(lambda: (other / RUNBOOK).is_file(), 20)
    edit(repo, RUNBOOK, "# to the new root\n")
    wait_until(lambda: (other / RUNBOOK).read_text() == "# to the new root\n", 20)


def test_sighup_reloads(start: Start) -> None:
    daemon = start()
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: daemon.events("reload"), 20)
    assert '"signal": "SIGHUP"' in daemon.events("reload_requested")[0]
    assert '"changed": false' in daemon.events("reload")[0]
    assert not daemon.events("config_changed")  # the file did not change: the signal did it
    assert daemon.process is not None and daemon.process.poll() is None


def test_the_daemon_notices_its_config_file_changing(
    start: Start, write: Write, repo: Path, remote_root: Path
) -> None:
    daemon = start()
    edit(repo, "deploy/compose.yaml", "services: {}\n")
    write(rule=seed_rules_and(DEPLOY_RULE))
    wait_until(lambda: (remote_root / "deploy/compose.yaml").is_file(), 20)
    assert daemon.events("config_changed")
    assert any('"changed": true' in line for line in daemon.events("reload"))
    # A broken save is logged and refused; the daemon goes on with what it has.
    daemon.config.write_text("[remote\n")
    wait_until(lambda: daemon.events("reload_refused"), 20)
    edit(repo, RUNBOOK, "# still syncing\n")
    wait_until(lambda: (remote_root / RUNBOOK).read_text() == "# still syncing\n", 20)


# -- stop -------------------------------------------------------------------------------------


def test_stop_exits_0_and_a_second_stop_exits_3(start: Start) -> None:
    daemon = start()
    done = opswatch(daemon.config, "stop")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"
    assert "note:" not in done.stderr
    assert daemon.wait() == 0
    assert daemon.events("stop_requested") and daemon.events("stopped")
    again = opswatch(daemon.config, "stop")
    assert again.returncode == 3
    assert again.stderr.strip() == f"error: opswatch is not running (config {daemon.config})"
    assert opswatch(daemon.config, "reload").returncode == 3


def test_stop_under_systemd_says_it_may_be_restarted(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")  # what systemd gives each unit
    daemon = start()
    done = opswatch(daemon.config, "stop")
    assert done.returncode == 0, done.stderr
    assert "note: opswatch ran under systemd: systemd may start it again" in done.stderr
    assert daemon.wait() == 0


# -- sync --force while the daemon runs ---------------------------------------------------------


GATEWAY = "coda-mcp-gateway"
DOCKERFILE = f"docs/ops/Dockerfile.{GATEWAY}"
COMPOSE = "docs/ops/docker-compose.production.yml"


@pytest.fixture
def docker_log(remote_bin: Path, tmp_path: Path) -> Iterator[Path]:
    """A stand-in `docker` on the server's PATH; each call's arguments, one line each."""
    log = tmp_path / "docker.log"
    stub = remote_bin / "docker"
    stub.write_text(f"#!/bin/sh\necho \"$*\" >> '{log}'\n")
    stub.chmod(0o755)
    yield log
    stub.unlink(missing_ok=True)  # the session's sshd is shared


def test_sync_force_clears_the_daemons_conflict_and_rebuilds(
    start: Start, repo: Path, remote_root: Path, docker_log: Path
) -> None:
    (remote_root / "integrations/mcp/servers/coda").mkdir(parents=True)  # what the build copies
    rebuild = {"mode": "auto", "compose_dir": "ops", "compose_file": COMPOSE}
    daemon = start(rebuild=rebuild)
    (remote_root / DOCKERFILE).write_text("FROM changed-on-the-server\n")
    edit(repo, DOCKERFILE, (repo / DOCKERFILE).read_text() + "# local edit\n")
    status = daemon.wait_for(lambda s: s["conflicts"], "the conflict to be seen")
    assert status["conflicts"] == [str(remote_root / DOCKERFILE)]
    assert not docker_log.exists()

    done = opswatch(daemon.config, "sync", "--force", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["uploaded"] == [str(remote_root / DOCKERFILE)]
    assert "told the running opswatch (1 conflict(s) cleared)" in done.stderr
    assert (remote_root / DOCKERFILE).read_text().endswith("# local edit\n")
    status = daemon.wait_for(lambda s: s["rebuilds"], "the forced file's rebuild")
    assert status["conflicts"] == []
    assert [r["service"] for r in status["rebuilds"]] == [GATEWAY]
    wait_until(lambda: docker_log.exists() and len(docker_log.read_text().splitlines()) == 2, 20)
    assert docker_log.read_text().splitlines() == [
        f"compose build {GATEWAY}",
        f"compose up -d {GATEWAY}",
    ]


def test_a_rule_dropped_by_a_reload_no_longer_sends_what_was_pending(
    start: Start, write: Write, repo: Path, remote_root: Path
) -> None:
    daemon = start()
    before = (remote_root / RUNBOOK).read_text()
    assert opswatch(daemon.config, "pause").returncode == 0
    edit(repo, RUNBOOK, "# pending when its rule goes\n")
    daemon.wait_for(lambda s: s["pending"] == 1, "the edit to be pending")
    without_runbooks = {"from": "docs/ops", "match": ["Dockerfile.*", "quality_gates/"]}
    write(rule=[SEED_RULES[0], {**without_runbooks, "to": "docs/ops"}])
    done = opswatch(daemon.config, "reload")
    assert done.returncode == 0, done.stderr
    handed_over(daemon)
    daemon.wait_for(lambda s: s["connected"], "the new daemon to connect")
    done = opswatch(daemon.config, "resume")
    assert done.returncode == 0, done.stderr
    status = daemon.wait_for(lambda s: s["pending"] == 0, "nothing pending")
    assert status["last_error"] is None
    assert (remote_root / RUNBOOK).read_text() == before


def test_a_held_batch_stays_held_across_a_reload(
    start: Start, write: Write, repo: Path, remote_root: Path
) -> None:
    # A long max delay: the burst must arrive as one batch even on a loaded machine.
    daemon = start(sync={"debounce_ms": 200, "max_delay_ms": 5000, "hold_over": 3})
    burst = repo / "docs/ops/runbooks/burst"
    burst.mkdir()
    for number in range(5):
        (burst / f"page-{number}.md").write_text(f"page {number}\n")
    daemon.wait_for(lambda s: s["state"] == "held" and s["held"] == 5, "the burst to be held")
    write(sync={"debounce_ms": 100, "max_delay_ms": 5000, "hold_over": 3})
    assert opswatch(daemon.config, "reload").returncode == 0
    # The new daemon's first reconcile has run: it must have left the held files alone.
    handed_over(daemon)
    status = daemon.wait_for(lambda s: s["reconciles"] >= 1, "the new daemon's reconcile")
    assert status["state"] == "held" and status["held"] == 5
    assert not (remote_root / "docs/ops/runbooks/burst").exists()
    done = opswatch(daemon.config, "flush")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "flushed; 5 file(s) landed"
