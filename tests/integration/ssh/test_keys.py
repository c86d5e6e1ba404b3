"""Keys as OpenSSH uses them, against a real sshd and a real ssh-agent.

A passphrase-protected key held by ssh-agent works for every command, also with
``IdentitiesOnly yes``; without the agent each command says which key is locked and how to add
it; on a terminal the passphrase is asked for once; certificates are offered; and no key file,
however broken, makes a traceback.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import MakeSshd, WriteConfig
from daemon_process import DaemonProcess, opswatch, opswatch_command
from keytools import PASSPHRASE, SshAgent, keygen, on_terminal, public_line
from opswatch.demo.sshd import LocalSshd

RUNBOOK = "docs/ops/runbooks/deploy.md"
COMPOSE = "docs/ops/docker-compose.production.yml"


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[SshAgent]:
    running = SshAgent()
    monkeypatch.setenv("SSH_AUTH_SOCK", str(running.socket))
    yield running
    running.close()


@pytest.fixture
def server(make_sshd: MakeSshd, tmp_path: Path) -> LocalSshd:
    """A private sshd with a stand-in ``docker`` that succeeds, for ``opswatch rebuild``."""
    remote_bin = tmp_path / "remote-bin"
    remote_bin.mkdir()
    (remote_bin / "docker").write_text("#!/bin/sh\nexit 0\n")
    (remote_bin / "docker").chmod(0o755)
    return make_sshd(path_prepend=[remote_bin])


@pytest.fixture
def locked_key(server: LocalSshd, tmp_path: Path) -> Path:
    """A passphrase-protected key the server accepts (and nothing else would log in)."""
    key = keygen(tmp_path / "keys" / "id_locked", passphrase=PASSPHRASE)
    server.authorized_keys.write_text(public_line(key) + "\n")
    return key


def identities_only_config(
    write_config: WriteConfig,
    repo: Path,
    server: LocalSshd,
    remote_root: Path,
    key: Path,
    **remote: object,
) -> Path:
    """Keys named only in the ssh config, with ``IdentitiesOnly yes``, as many laptops have."""
    ssh_config = repo.parent / "ssh_config"
    ssh_config.write_text(f"Host *\n    IdentityFile {key}\n    IdentitiesOnly yes\n")
    return write_config(
        repo,
        server,
        remote_root,
        remote={"identity_file": None, "ssh_config": str(ssh_config), **remote},
        rebuild={"mode": "off", "compose_dir": "ops", "compose_file": COMPOSE},
    )


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr


def test_an_encrypted_key_in_ssh_agent_works_for_every_command_with_identities_only(
    server: LocalSshd,
    locked_key: Path,
    agent: SshAgent,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    agent.add(locked_key)
    (remote_root / "integrations/mcp/servers/coda").mkdir(parents=True)  # no build gap
    config = identities_only_config(write_config, repo, server, remote_root, locked_key)
    for command in (["sync"], ["verify"], ["rebuild", "demo"], ["trust", "--yes"]):
        done = opswatch(config, *command)
        no_traceback(done)
        assert done.returncode == 0, (command, done.stderr)
    assert (remote_root / RUNBOOK).read_text() == (repo / RUNBOOK).read_text()

    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()  # waits until synced
    try:
        (repo / RUNBOOK).write_text("# Deploy\n\nedited while the daemon runs\n")
        daemon.wait_for(lambda s: s["uploaded"] >= 1, "the edit to land")
        assert (remote_root / RUNBOOK).read_text() == (repo / RUNBOOK).read_text()
    finally:
        assert daemon.stop() == 0


def test_the_agent_is_found_by_the_key_files_header_when_its_pub_is_missing(
    server: LocalSshd,
    locked_key: Path,
    agent: SshAgent,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
) -> None:
    agent.add(locked_key)
    locked_key.with_name(locked_key.name + ".pub").unlink()
    config = identities_only_config(write_config, repo, server, remote_root, locked_key)
    done = opswatch(config, "sync")
    no_traceback(done)
    assert done.returncode == 0, done.stderr


def test_without_the_agent_each_command_names_the_locked_key_and_ssh_add(
    server: LocalSshd,
    locked_key: Path,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    config = identities_only_config(write_config, repo, server, remote_root, locked_key)
    for command in (["sync"], ["verify"], ["rebuild", "demo"]):
        done = opswatch(config, *command)
        no_traceback(done)
        assert done.returncode == 1, (command, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: "), done.stderr
        assert f"the key {locked_key} is encrypted" in lines[0]
        assert f"run `ssh-add {locked_key}`" in lines[0]
    assert not (remote_root / RUNBOOK).exists()

    # The daemon never waits for a person: it reports the same line and keeps running.
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start(wait="answering")
    try:
        status = daemon.wait_for(
            lambda s: "ssh-add" in (s["last_error"] or ""), "the locked-key error in status"
        )
        assert str(locked_key) in status["last_error"]
        assert "Traceback" not in daemon.text
    finally:
        assert daemon.stop() == 0


def test_on_a_terminal_the_passphrase_is_asked_once_without_echo(
    server: LocalSshd,
    locked_key: Path,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
) -> None:
    config = write_config(repo, server, remote_root, remote={"identity_file": str(locked_key)})
    code, terminal = on_terminal([*opswatch_command(), "--config", str(config), "sync"], PASSPHRASE)
    assert code == 0, terminal
    assert terminal.count(f"Enter passphrase for key '{locked_key}'") == 1
    assert PASSPHRASE not in terminal  # not echoed
    assert "Traceback" not in terminal
    assert (remote_root / RUNBOOK).read_text() == (repo / RUNBOOK).read_text()


def test_a_certificate_next_to_the_key_is_offered(
    make_sshd: MakeSshd,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    authority = keygen(keys / "user_ca")
    server = make_sshd(extra_config=[f"TrustedUserCAKeys {authority}.pub"])
    server.authorized_keys.write_text("")  # only the certificate can let us in
    user_key = keygen(keys / "id_ed25519")
    principal = server.user
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-s",
            str(authority),
            "-I",
            "test",
            "-n",
            principal,
            f"{user_key}.pub",
        ],
        check=True,
        capture_output=True,
    )
    assert (keys / "id_ed25519-cert.pub").is_file()
    config = write_config(repo, server, remote_root, remote={"identity_file": str(user_key)})
    done = opswatch(config, "sync")
    no_traceback(done)
    assert done.returncode == 0, done.stderr
    assert (remote_root / RUNBOOK).is_file()

    # CertificateFile in the ssh config, under any name, does the same.
    elsewhere = keys / "certs" / "work.pub"
    elsewhere.parent.mkdir()
    (keys / "id_ed25519-cert.pub").rename(elsewhere)
    ssh_config = tmp_path / "ssh_config.cert"
    ssh_config.write_text(f"Host *\n    IdentityFile {user_key}\n    CertificateFile {elsewhere}\n")
    by_config = write_config(
        repo,
        server,
        remote_root,
        remote={"identity_file": None, "ssh_config": str(ssh_config)},
    )
    (remote_root / RUNBOOK).unlink()
    done = opswatch(by_config, "sync")
    assert done.returncode == 0, done.stderr
    assert (remote_root / RUNBOOK).is_file()

    elsewhere.unlink()  # proof that the certificate did it
    refused = opswatch(by_config, "sync")
    assert refused.returncode == 1
    assert "refused every key" in refused.stderr


def _broken_keys(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    corrupt = folder / "corrupt"
    corrupt.write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA!!!\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    )
    truncated = keygen(folder / "truncated")
    truncated.write_text(truncated.read_text()[:200] + "\n-----END OPENSSH PRIVATE KEY-----\n")
    public = keygen(folder / "public")
    putty = folder / "putty.ppk"
    putty.write_text("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n")
    unreadable = folder / "a-folder"
    unreadable.mkdir()
    pem_locked = keygen(folder / "pem_locked", passphrase=PASSPHRASE, kind="rsa", pem=True)
    pem_locked.with_name(pem_locked.name + ".pub").unlink()
    return {
        "corrupt": corrupt,
        "truncated": truncated,
        "public key": public.with_name(public.name + ".pub"),
        "putty": putty,
        "unreadable": unreadable,
        "encrypted PEM without .pub": pem_locked,
        "missing": folder / "nothing-here",
    }


def test_no_key_file_makes_a_traceback(
    server: LocalSshd,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    for what, key in _broken_keys(tmp_path / "broken").items():
        config = write_config(repo, server, remote_root, remote={"identity_file": str(key)})
        done = opswatch(config, "sync")
        no_traceback(done)
        assert done.returncode == 1, (what, done.stderr)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, (what, done.stderr)
        if what == "encrypted PEM without .pub":
            assert f"ssh-add {key}" in errors[0]
        else:
            assert str(key) in done.stderr, (what, done.stderr)


def test_an_identity_file_naming_the_public_key_picks_it_from_the_agent(
    server: LocalSshd,
    locked_key: Path,
    agent: SshAgent,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
) -> None:
    """``IdentityFile ~/.ssh/key.pub``, as hardware keys and password managers' agents use."""
    agent.add(locked_key)
    public = locked_key.with_name(locked_key.name + ".pub")
    config = identities_only_config(write_config, repo, server, remote_root, public)
    done = opswatch(config, "sync")
    no_traceback(done)
    assert done.returncode == 0, done.stderr
