"""`opswatch trust` against a real sshd: the fingerprint as `ssh` shows it, known_hosts as
OpenSSH writes it, and a daemon stopped by a changed host key that recovers once it is trusted.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import WriteConfig
from daemon_process import DaemonProcess, opswatch, opswatch_command
from helpers import wait_until
from opswatch.demo.sshd import LocalSshd
from opswatch.ssh.known_hosts import hashed_name

RUNBOOK = "docs/ops/runbooks/deploy.md"


def ssh_keygen_fingerprint(sshd: LocalSshd) -> str:
    """What OpenSSH itself says: `256 SHA256:… comment (ED25519)` → `SHA256:…`."""
    public = sshd.host_key.with_name(sshd.host_key.name + ".pub")
    done = subprocess.run(["ssh-keygen", "-lf", str(public)], capture_output=True, text=True)
    return done.stdout.split()[1]


def openssh_finds(known_hosts: Path, name: str) -> str:
    """The line `ssh-keygen -F` finds for `name` (it reads plain and hashed entries alike)."""
    done = subprocess.run(
        ["ssh-keygen", "-F", name, "-f", str(known_hosts)], capture_output=True, text=True
    )
    return done.stdout if done.returncode == 0 else ""


def opswatch_cmd(config: Path) -> list[str]:
    return [*opswatch_command(), "--config", str(config)]


def test_trust_shows_the_fingerprint_and_adds_the_key_only_when_confirmed(
    own_sshd: LocalSshd,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    known_hosts = tmp_path / "ssh" / "known_hosts"  # neither the file nor its folder exists yet
    config = write_config(repo, own_sshd, remote_root, remote={"known_hosts": str(known_hosts)})
    name = f"[{own_sshd.host}]:{own_sshd.port}"

    unknown = opswatch(config, "sync")
    assert unknown.returncode == 1
    assert "opswatch trust" in unknown.stderr
    assert not (remote_root / RUNBOOK).exists()

    declined = subprocess.run(
        [*opswatch_cmd(config), "trust"], input="n\n", capture_output=True, text=True
    )
    assert declined.returncode == 1
    assert f"ED25519 key fingerprint is {ssh_keygen_fingerprint(own_sshd)}." in declined.stdout
    assert "can't be established" in declined.stdout
    assert not known_hosts.exists()

    accepted = subprocess.run(
        [*opswatch_cmd(config), "trust"], input="y\n", capture_output=True, text=True
    )
    assert accepted.returncode == 0, accepted.stderr
    assert (
        openssh_finds(known_hosts, name)
        .strip()
        .endswith(own_sshd.host_key.with_name("host_key.pub").read_text().split()[1])
    )
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    assert known_hosts.read_text().startswith(f"{name} ssh-ed25519 ")

    again = opswatch(config, "trust")
    assert again.returncode == 0
    assert "already in" in again.stdout
    assert known_hosts.read_text().count("ssh-ed25519") == 1

    synced = opswatch(config, "sync")
    assert synced.returncode == 0, synced.stderr
    assert (remote_root / RUNBOOK).read_text() == (repo / RUNBOOK).read_text()


def test_trust_writes_hashed_names_where_known_hosts_is_hashed(
    own_sshd: LocalSshd,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    known_hosts = tmp_path / "known_hosts"
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHN0YW5kLWluIGtleSBmb3IgYW5vdGhlciBob3N0"
    known_hosts.write_text(f"{hashed_name('elsewhere.example')} {other}\n")
    config = write_config(repo, own_sshd, remote_root, remote={"known_hosts": str(known_hosts)})
    name = f"[{own_sshd.host}]:{own_sshd.port}"

    done = opswatch(config, "trust", "--yes")
    assert done.returncode == 0, done.stderr
    lines = known_hosts.read_text().splitlines()
    assert len(lines) == 2 and all(line.startswith("|1|") for line in lines)
    assert name not in known_hosts.read_text()
    assert openssh_finds(known_hosts, name)
    assert openssh_finds(known_hosts, "elsewhere.example")  # the other host's entry is kept
    assert opswatch(config, "sync").returncode == 0


def test_changed_host_key_is_an_error_state_until_trusted(
    own_sshd: LocalSshd,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    config = write_config(repo, own_sshd, remote_root)
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        own_sshd.regenerate_host_key()
        own_sshd.restart()  # the same server, re-keyed: the daemon's connection drops
        refused = daemon.wait_for(lambda s: s["state"] == "error", "the error state")
        assert "HOST KEY" in refused["last_error"] and "opswatch trust" in refused["last_error"]
        before = (remote_root / RUNBOOK).read_text()
        (repo / RUNBOOK).write_text("# Deploy\n\nwritten while the key was refused\n")
        daemon.wait_for(lambda s: RUNBOOK in s["pending_paths"], "the edit to be pending")
        assert daemon.status()["state"] == "error"  # no retry loop: still the same error
        assert (remote_root / RUNBOOK).read_text() == before  # nothing sent

        trusted = opswatch(config, "trust", "--yes")
        assert trusted.returncode == 0, trusted.stderr
        assert "WARNING" in trusted.stderr
        assert f"ED25519 key fingerprint is {own_sshd.host_key_fingerprint}." in trusted.stdout
        assert "reconnecting" in trusted.stdout
        wait_until(
            lambda: (remote_root / RUNBOOK).read_text() == (repo / RUNBOOK).read_text(),
            message="the edit to land after trust",
        )
        daemon.wait_for(lambda s: s["state"] == "watching" and s["pending"] == 0, "watching")
        assert own_sshd.known_hosts.read_text().count(own_sshd.host) == 1  # replaced, not added
    finally:
        daemon.stop()


def test_another_key_type_already_known_is_kept_and_not_called_a_change(
    own_sshd: LocalSshd,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    """known_hosts holds an ECDSA line for the host, as `ssh-keyscan` writes it; the server
    offers its ED25519 key: that is a new key type, added next to it, not an interception."""
    ecdsa = tmp_path / "ecdsa_host_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(ecdsa)],
        check=True,
        capture_output=True,
    )
    name = f"[{own_sshd.host}]:{own_sshd.port}"
    ecdsa_line = f"{name} {' '.join(ecdsa.with_name('ecdsa_host_key.pub').read_text().split()[:2])}"
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"# from ssh-keyscan\n{ecdsa_line}\n")
    config = write_config(repo, own_sshd, remote_root, remote={"known_hosts": str(known_hosts)})

    before = opswatch(config, "sync")
    assert before.returncode == 1
    assert "HAS CHANGED" not in before.stderr and "opswatch trust" in before.stderr

    done = opswatch(config, "trust", "--yes")
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr + done.stdout
    assert "intercepting" not in done.stderr + done.stdout
    assert "already known for this host: ECDSA" in done.stdout
    lines = known_hosts.read_text().splitlines()
    assert lines[:2] == ["# from ssh-keyscan", ecdsa_line]  # no valid line deleted
    assert lines[2].startswith(f"{name} ssh-ed25519 ")
    assert "Traceback" not in done.stderr

    synced = opswatch(config, "sync")
    assert synced.returncode == 0, synced.stderr
    assert opswatch(config, "trust").stdout.count("already in") == 1
