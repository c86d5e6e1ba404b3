"""Every command finds the config as git finds ``.git``; global options go before or after."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import WriteConfig
from daemon_process import DaemonProcess, opswatch_command
from opswatch.cli.main import hoist_global_options
from opswatch.demo.sshd import LocalSshd


def run_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*opswatch_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("given", "read"),
    [
        (["status", "--config", "x.toml"], ["--config", "x.toml", "status"]),
        (["status", "--json", "-c", "x.toml"], ["-c", "x.toml", "status", "--json"]),
        (["sync", "--config=x.toml", "-n"], ["--config=x.toml", "sync", "-n"]),
        (["verify", "-cx.toml"], ["-cx.toml", "verify"]),
        (
            ["sync", "--log-format", "json", "--log-level=debug", "--dry-run"],
            ["--log-format", "json", "--log-level=debug", "sync", "--dry-run"],
        ),
        (["--config", "x.toml", "status"], ["--config", "x.toml", "status"]),
        (["sync", "--", "--config"], ["sync", "--", "--config"]),
        (["rebuild", "demo"], ["rebuild", "demo"]),
    ],
)
def test_global_options_after_the_subcommand_are_read_as_before_it(
    given: list[str], read: list[str]
) -> None:
    assert hoist_global_options(given) == read


def test_status_from_a_subfolder_finds_the_repositorys_config(
    sshd_server: LocalSshd,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    config = write_config(repo, sshd_server, remote_root)
    assert run_in(repo / "docs/ops/runbooks", "status").returncode == 3  # found, not running
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        done = run_in(repo / "docs/ops/runbooks", "status", "--json")
    finally:
        daemon.stop()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["config"] == str(config)


def test_config_after_the_subcommand_works_for_sync(
    sshd_server: LocalSshd,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = write_config(repo, sshd_server, remote_root)
    done = run_in(elsewhere, "sync", "--dry-run", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "docs/ops/runbooks/deploy.md" in done.stdout
    assert not any(remote_root.iterdir())
