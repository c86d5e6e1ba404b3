"""``remote.root = "~/portfolio"`` (or ``portfolio``) as scp reads it: below the login's home."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import WriteConfig
from daemon_process import DaemonProcess, opswatch
from helpers import wait_until
from opswatch.demo.sshd import LocalSshd

RUNBOOK = "docs/ops/runbooks/deploy.md"
COMPOSE = "docs/ops/docker-compose.production.yml"


@pytest.fixture
def home_folder() -> Iterator[str]:
    """A fresh folder name below the login's home (the test sshd logs in as this user)."""
    name = f"opswatch-test-{secrets.token_hex(4)}"
    yield name
    shutil.rmtree(Path(pwd.getpwuid(os.getuid()).pw_dir) / name, ignore_errors=True)


@pytest.mark.parametrize("spelling", ["~/{}/portfolio", "{}/portfolio"])
def test_a_home_relative_root_lands_in_the_logins_home(
    spelling: str,
    home_folder: str,
    sshd_server: LocalSshd,
    remote_bin: Path,
    repo: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    landed = Path(pwd.getpwuid(os.getuid()).pw_dir) / home_folder / "portfolio"
    config = write_config(
        repo,
        sshd_server,
        tmp_path / "unused",
        remote={"root": spelling.format(home_folder)},
        rebuild={"mode": "off", "compose_dir": "ops", "compose_file": COMPOSE},
    )
    done = opswatch(config, "sync")
    assert done.returncode == 0, done.stderr
    assert (landed / RUNBOOK).read_text() == (repo / RUNBOOK).read_text()
    assert (landed / "ops/docker-compose.production.yml").is_file()

    # What the coda service's Dockerfile copies is on the server already: no build gap.
    (landed / "integrations/mcp/servers/coda").mkdir(parents=True)
    checked = opswatch(config, "verify")  # hashes on the server, in the same folder
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 differ, 0 missing" in checked.stdout

    docker = remote_bin / "docker"
    record = tmp_path / "docker-cwd"
    docker.write_text(f"#!/bin/sh\npwd > '{record}'\n")
    docker.chmod(0o755)
    try:
        rebuilt = opswatch(config, "rebuild", "demo")
    finally:
        docker.unlink()
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert record.read_text().strip() == str(landed / "ops")


def test_the_daemon_keeps_a_home_relative_root_in_step(
    home_folder: str,
    sshd_server: LocalSshd,
    repo: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    landed = Path(pwd.getpwuid(os.getuid()).pw_dir) / home_folder / "portfolio"
    config = write_config(
        repo, sshd_server, tmp_path / "unused", remote={"root": f"~/{home_folder}/portfolio"}
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()  # the first reconcile
    try:
        assert (landed / RUNBOOK).read_text() == (repo / RUNBOOK).read_text()
        (repo / RUNBOOK).write_text("# Deploy\n\nedited while watched\n")
        wait_until(
            lambda: (landed / RUNBOOK).read_text() == "# Deploy\n\nedited while watched\n",
            message="the edit to land below the login's home",
        )
        assert f'"home": "{landed.parent.parent}"' in daemon.text  # resolved once, logged
    finally:
        assert daemon.stop() == 0
