"""The throwaway sshd works with ssh, scp and paramiko; it restarts, re-keys and cuts off."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko
import pytest

from helpers import wait_until
from opswatch.demo.sshd import LocalSshd, LocalSshdError

pytestmark = pytest.mark.sshd


@contextmanager
def connected(server: LocalSshd) -> Iterator[paramiko.SSHClient]:
    """A paramiko client that trusts only known_hosts and offers only the client key."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.load_host_keys(str(server.known_hosts))
    try:
        client.connect(
            server.host,
            port=server.port,
            username=server.user,
            key_filename=str(server.client_key),
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
        )
        yield client
    finally:
        client.close()


def ssh(server: LocalSshd, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(server.ssh_config), server.alias, command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_plain_ssh_logs_in_through_the_alias(sshd_server: LocalSshd) -> None:
    done = ssh(sshd_server, "true")
    assert done.returncode == 0, done.stderr


def test_scp_uses_the_same_config(
    sshd_server: LocalSshd, remote_root: Path, tmp_path: Path
) -> None:
    local = tmp_path / "runbook.md"
    local.write_text("# runbook\n")
    target = f"{sshd_server.alias}:{remote_root}/runbook.md"
    done = subprocess.run(
        ["scp", "-q", "-F", str(sshd_server.ssh_config), str(local), target],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (remote_root / "runbook.md").read_text() == "# runbook\n"


def test_paramiko_verifies_the_host_and_puts_a_file(
    sshd_server: LocalSshd, remote_root: Path, tmp_path: Path
) -> None:
    local = tmp_path / "Dockerfile.demo"
    local.write_bytes(b"FROM scratch\n")
    with connected(sshd_server) as client, client.open_sftp() as sftp:
        sftp.put(str(local), str(remote_root / "Dockerfile.demo"))
    assert (remote_root / "Dockerfile.demo").read_bytes() == b"FROM scratch\n"


def test_known_hosts_holds_the_host_key_in_openssh_format(sshd_server: LocalSshd) -> None:
    entry = sshd_server.known_hosts.read_text().split()
    assert entry[0] == f"[127.0.0.1]:{sshd_server.port}"
    assert entry[1] == "ssh-ed25519"
    assert len(entry) == 3


def test_fingerprint_is_the_one_ssh_keygen_prints(sshd_server: LocalSshd) -> None:
    printed = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd_server.known_hosts)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert printed[1] == sshd_server.host_key_fingerprint
    assert sshd_server.host_key_fingerprint.startswith("SHA256:")


def test_a_changed_host_key_is_refused_until_trusted(own_sshd: LocalSshd) -> None:
    before = own_sshd.host_key_fingerprint
    own_sshd.regenerate_host_key()
    own_sshd.restart()
    assert own_sshd.host_key_fingerprint != before
    with pytest.raises(paramiko.BadHostKeyException), connected(own_sshd):
        pass
    assert ssh(own_sshd, "true").returncode != 0

    own_sshd.trust_current_host_key()
    with connected(own_sshd) as client:
        assert client.get_transport() is not None


def test_restart_keeps_the_port_and_the_host_key(own_sshd: LocalSshd) -> None:
    port, fingerprint = own_sshd.port, own_sshd.host_key_fingerprint
    own_sshd.restart()
    assert (own_sshd.port, own_sshd.host_key_fingerprint) == (port, fingerprint)
    assert ssh(own_sshd, "true").returncode == 0


def test_stop_cuts_open_connections_and_restart_serves_again(own_sshd: LocalSshd) -> None:
    with connected(own_sshd) as client:
        transport = client.get_transport()
        assert transport is not None
        own_sshd.stop()
        wait_until(lambda: not transport.is_active(), message="the connection to drop")
        assert not own_sshd.running
    with pytest.raises(OSError), connected(own_sshd):
        pass
    own_sshd.start()
    assert ssh(own_sshd, "true").returncode == 0


def test_drop_sessions_cuts_connections_but_keeps_listening(own_sshd: LocalSshd) -> None:
    with connected(own_sshd) as client:
        transport = client.get_transport()
        assert transport is not None
        own_sshd.drop_sessions()
        wait_until(lambda: not transport.is_active(), message="the connection to drop")
    assert own_sshd.running
    assert ssh(own_sshd, "true").returncode == 0


def test_path_prepend_puts_stand_in_commands_first(
    make_sshd: Callable[..., LocalSshd], tmp_path: Path
) -> None:
    bin_dir = tmp_path / "stand in bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "docker"
    stand_in.write_text('#!/bin/sh\necho "stand-in docker: $*"\n')
    stand_in.chmod(0o755)
    server = make_sshd(path_prepend=[bin_dir])
    done = ssh(server, "docker compose build demo")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stand-in docker: compose build demo\n"


def test_remote_bin_is_on_the_shared_servers_path(sshd_server: LocalSshd, remote_bin: Path) -> None:
    stand_in = remote_bin / "opswatch-test-echo"
    stand_in.write_text('#!/bin/sh\necho "$PWD $*"\n')
    stand_in.chmod(0o755)
    try:
        done = ssh(sshd_server, "cd / && opswatch-test-echo hi")
    finally:
        stand_in.unlink()
    assert (done.returncode, done.stdout) == (0, "/ hi\n"), done.stderr


def test_a_bad_config_fails_start_with_sshds_message(tmp_path: Path) -> None:
    server = LocalSshd(tmp_path / "sshd", extra_config=["NoSuchOption yes"])
    with pytest.raises(LocalSshdError, match="NoSuchOption"):
        server.start()
    assert not server.running


def test_a_taken_port_fails_start_clearly(own_sshd: LocalSshd, tmp_path: Path) -> None:
    second = LocalSshd(tmp_path / "second", port=own_sshd.port)
    with pytest.raises(LocalSshdError, match="exited at start"):
        second.start()
    assert ssh(own_sshd, "true").returncode == 0


def test_context_manager_starts_and_stops(tmp_path: Path) -> None:
    with LocalSshd(tmp_path / "sshd") as server:
        assert server.running
        assert ssh(server, "true").returncode == 0
    assert not server.running
