"""ProxyJump through a real sshd: to a target known by its IPv6 address, and when the jump fails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daemon_process import opswatch
from opswatch.demo.sshd import LocalSshd, _path_arg, _public_key

WriteConfig = Callable[..., Path]
MakeSshd = Callable[..., LocalSshd]


def jump_config(tmp_path: Path, jump: LocalSshd, target: LocalSshd, *, trust_jump: bool) -> Path:
    """An ssh config: `target6` is ::1 on the target's port, reached through `jumphost`."""
    jump_known = tmp_path / "jump_known_hosts"
    jump_known.write_text(
        f"[{jump.host}]:{jump.port} {_public_key(jump.host_key)}\n" if trust_jump else ""
    )
    path = tmp_path / "ssh_config.jump"
    path.write_text(
        "\n".join(
            [
                "Host jumphost",
                f"    HostName {jump.host}",
                f"    Port {jump.port}",
                f"    User {jump.user}",
                f"    IdentityFile {_path_arg(jump.client_key)}",
                "    IdentitiesOnly yes",
                f"    UserKnownHostsFile {_path_arg(jump_known)}",
                "    GlobalKnownHostsFile /dev/null",
                "    StrictHostKeyChecking yes",
                "    BatchMode yes",
                "Host target6",
                "    HostName ::1",
                f"    Port {target.port}",
                "    ProxyJump jumphost",
                "",
            ]
        )
    )
    return path


def target_config(
    tmp_path: Path,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    jump: LocalSshd,
    target: LocalSshd,
    *,
    trust_jump: bool = True,
) -> Path:
    known = tmp_path / "target_known_hosts"
    known.write_text(f"[::1]:{target.port} {_public_key(target.host_key)}\n")
    remote = {
        "host": "target6",
        "port": None,  # from the ssh config, as HostName is
        "known_hosts": str(known),
        "ssh_config": str(jump_config(tmp_path, jump, target, trust_jump=trust_jump)),
    }
    return write_config(repo, target, remote_root, remote=remote)


def test_proxyjump_to_an_ipv6_target(
    make_sshd: MakeSshd,
    tmp_path: Path,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
) -> None:
    jump = make_sshd()
    target = make_sshd(extra_config=["ListenAddress ::1"])
    config = target_config(tmp_path, repo, remote_root, write_config, jump, target)
    done = opswatch(config, "sync")
    assert done.returncode == 0, done.stdout + done.stderr
    runbook = "docs/ops/runbooks/deploy.md"
    assert (remote_root / runbook).read_bytes() == (repo / runbook).read_bytes()
    # Through the jump host, to the target's IPv6 address.
    assert "Accepted publickey" in jump.log_path.read_text()
    assert "Connection from ::1 port" in target.log_path.read_text()


def test_a_failing_jump_host_is_reported_as_its_own_error(
    make_sshd: MakeSshd,
    tmp_path: Path,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
) -> None:
    jump = make_sshd()
    target = make_sshd(extra_config=["ListenAddress ::1"])
    config = target_config(
        tmp_path, repo, remote_root, write_config, jump, target, trust_jump=False
    )
    done = opswatch(config, "sync")
    assert done.returncode == 1
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: ProxyJump jumphost failed: ")
    assert "Host key verification failed." in line
    assert "banner" not in line and "timed out" not in line
    assert "Traceback" not in done.stderr


def test_a_jump_host_that_cannot_reach_the_target(
    make_sshd: MakeSshd,
    tmp_path: Path,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
) -> None:
    jump = make_sshd()
    target = make_sshd(extra_config=["ListenAddress ::1"])
    config = target_config(tmp_path, repo, remote_root, write_config, jump, target)
    target.stop()
    done = opswatch(config, "sync")
    assert done.returncode == 1
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: ProxyJump jumphost failed: ")
    assert "Connection refused" in line


def test_trust_through_the_jump_host_files_the_key_under_the_ipv6_name(
    make_sshd: MakeSshd,
    tmp_path: Path,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
) -> None:
    jump = make_sshd()
    target = make_sshd(extra_config=["ListenAddress ::1"])
    config = target_config(tmp_path, repo, remote_root, write_config, jump, target)
    known = tmp_path / "target_known_hosts"
    known.write_text("")
    done = opswatch(config, "trust", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert known.read_text().split()[:3] == [
        f"[::1]:{target.port}",
        *_public_key(target.host_key).split(),
    ]
    assert opswatch(config, "sync").returncode == 0
