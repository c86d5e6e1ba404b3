"""Servers that are not OpenSSH: asyncssh's and a paramiko-based one, each a real server process.

What differs from OpenSSH: no posix-rename@openssh.com (asyncssh with it withheld, paramiko-based
servers), no fsetstat (paramiko-based), no commands at all (most such servers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon_process import opswatch
from sftp_servers import SftpServerProcess

WriteConfig = Callable[..., Path]
StartServer = Callable[..., SftpServerProcess]
RUNBOOK = "docs/ops/runbooks/deploy.md"
DOCKERFILE = "docs/ops/Dockerfile.demo"


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    started: list[SftpServerProcess] = []

    def start(kind: str, *options: str) -> SftpServerProcess:
        server = SftpServerProcess(tmp_path / f"{kind}-{len(started)}", kind, *options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def landed(remote_root: Path, repo: Path) -> None:
    """The seed's files are on the server, byte for byte, with mode and mtime, and no temp."""
    for relative, remote in ((RUNBOOK, RUNBOOK), (DOCKERFILE, DOCKERFILE)):
        local, there = repo / relative, remote_root / remote
        assert there.read_bytes() == local.read_bytes()
        assert int(there.stat().st_mtime) == int(local.stat().st_mtime)
        assert there.stat().st_mode & 0o777 == local.stat().st_mode & 0o777
    check = remote_root / "docs/ops/quality_gates/check.sh"
    assert check.stat().st_mode & 0o777 == 0o755
    temps = [p for p in remote_root.rglob("*") if ".opswatch-" in p.name]
    assert temps == []


def sync_json(config: Path) -> tuple[int, dict[str, object], str]:
    done = opswatch(config, "sync", "--json")
    assert done.stdout.startswith("{"), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def test_asyncssh_with_posix_rename_syncs_and_verifies(
    start_server: StartServer, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    server = start_server("asyncssh", "--exec")
    config = write_config(repo, server, remote_root)
    code, _, stderr = sync_json(config)
    assert code == 0, stderr
    landed(remote_root, repo)
    done = opswatch(config, "verify")
    assert done.returncode == 0, done.stdout + done.stderr


def test_asyncssh_without_posix_rename_moves_with_mv_over_exec(
    start_server: StartServer, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    server = start_server("asyncssh", "--no-posix-rename", "--exec")
    config = write_config(repo, server, remote_root)
    code, _, stderr = sync_json(config)
    assert code == 0, stderr
    landed(remote_root, repo)
    # A second round replaces existing files: the case posix-rename exists for.
    (repo / RUNBOOK).write_text("# Deploy\n\nchanged\n")
    code, _, stderr = sync_json(config)
    assert code == 0, stderr
    assert (remote_root / RUNBOOK).read_text() == "# Deploy\n\nchanged\n"
    landed(remote_root, repo)


def test_asyncssh_without_posix_rename_or_shell_refuses_to_overwrite(
    start_server: StartServer, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    server = start_server("asyncssh", "--no-posix-rename")
    target = remote_root / RUNBOOK
    target.parent.mkdir(parents=True)
    target.write_text("the server's copy\n")
    config = write_config(repo, server, remote_root)
    code, report, stderr = sync_json(config)
    assert code == 1, stderr
    assert target.read_text() == "the server's copy\n"  # never written in place
    assert [p for p in remote_root.rglob("*") if ".opswatch-" in p.name] == []
    assert "posix-rename@openssh.com" in json.dumps(report)
    assert "Traceback" not in stderr


def test_paramiko_server_without_fsetstat_sets_mode_and_mtime_by_path(
    start_server: StartServer, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    # It implements posix-rename without advertising it: tried once, then used.
    server = start_server("paramiko")
    os.utime(repo / RUNBOOK, (1_600_000_000, 1_600_000_000))
    config = write_config(repo, server, remote_root)
    code, _, stderr = sync_json(config)
    assert code == 0, stderr
    landed(remote_root, repo)
    assert int((remote_root / RUNBOOK).stat().st_mtime) == 1_600_000_000


def test_paramiko_server_without_posix_rename_names_the_extension(
    start_server: StartServer, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    server = start_server("paramiko", "--no-posix-rename")
    config = write_config(repo, server, remote_root)
    done = opswatch(config, "sync")
    assert done.returncode == 1
    assert "lacks posix-rename@openssh.com" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert not (remote_root / RUNBOOK).exists()
    assert [p for p in remote_root.rglob("*") if ".opswatch-" in p.name] == []
