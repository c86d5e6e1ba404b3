"""OpenSSH set up as servers out there are: SFTP-only chrooted accounts, no sftp subsystem, a
BusyBox userland first on PATH, key exchange by its RFC 8731 name only. Each against a real sshd.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon_process import opswatch
from helpers import wait_until
from opswatch.config import load_config
from opswatch.demo.sshd import LocalSshd, find_sftp_server
from opswatch.errors import ConnectError, RemoteCommandError
from opswatch.ssh.endpoint import resolve_endpoint
from opswatch.ssh.remote import SshRemote

WriteConfig = Callable[..., Path]
MakeSshd = Callable[..., LocalSshd]
COMPOSE = "docs/ops/docker-compose.production.yml"
SFTP_ONLY = "this account allows SFTP only; rebuilds need a shell"
NO_SFTP = "the server offers no sftp subsystem (Subsystem sftp in sshd_config)"


def connect(config: Path) -> SshRemote:
    remote = SshRemote(resolve_endpoint(load_config(config).remote))
    remote.connect()
    return remote


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# -- SFTP-only, chrooted -----------------------------------------------------------------------


def _root_owned_base() -> Path | None:
    """A folder sshd accepts above a ChrootDirectory: it and its parents owned by root and
    writable by nobody else (not /tmp)."""
    for base in (Path("/run"), Path("/var/lib"), Path("/srv"), Path("/opt")):
        chain = [base, *base.parents]
        if all(p.exists() for p in chain) and all(
            p.stat().st_uid == 0 and not p.stat().st_mode & 0o022 for p in chain
        ):
            return base
    return None


@pytest.fixture
def chroot() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("sshd applies ChrootDirectory only when it runs as root")
    base = _root_owned_base()
    assert base is not None, "no root-owned folder outside /tmp to hold a chroot"
    folder = Path(tempfile.mkdtemp(prefix="opswatch-chroot-", dir=base))
    folder.chmod(0o755)
    (folder / "site").mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_sftp_only_chrooted_account_syncs_verifies_and_says_rebuilds_need_a_shell(
    make_sshd: MakeSshd, chroot: Path, repo: Path, write_config: WriteConfig
) -> None:
    sshd = make_sshd(extra_config=["ForceCommand internal-sftp", f"ChrootDirectory {chroot}"])
    config = write_config(
        repo, sshd, Path("/site"), rebuild={"compose_dir": "ops", "compose_file": COMPOSE}
    )
    done = opswatch(config, "sync")
    assert done.returncode == 0, done.stdout + done.stderr
    runbook = "docs/ops/runbooks/deploy.md"
    assert (chroot / "site" / runbook).read_bytes() == (repo / runbook).read_bytes()

    # Named paths: the seed's gateway build copies sources no rule sends, a gap verify reports
    # (exit 1) when it checks everything; this test is about how the files are read.
    done = opswatch(config, "verify", str(repo / "docs/ops"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"read over SFTP: {SFTP_ONLY}" in done.stdout

    done = opswatch(config, "rebuild", "demo")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {SFTP_ONLY}"]
    assert "Channel closed" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_sftp_only_is_found_once_per_connection(
    make_sshd: MakeSshd, chroot: Path, repo: Path, write_config: WriteConfig
) -> None:
    sshd = make_sshd(extra_config=["ForceCommand internal-sftp", f"ChrootDirectory {chroot}"])
    remote = connect(write_config(repo, sshd, Path("/site")))
    try:
        for _ in range(2):
            with pytest.raises(RemoteCommandError, match=SFTP_ONLY):
                remote.run("true", timeout=30)
        assert remote.connected  # the SFTP side goes on
        assert remote.list_folder("/site") == {}
    finally:
        remote.close()
    # One session for SFTP, one for the first command; the second command never went out.
    sessions = sshd.log_path.read_text().count("Starting session: forced-command")
    assert sessions == 2


def test_a_forced_sftp_server_program_is_sftp_only_too(
    make_sshd: MakeSshd, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    # Unlike internal-sftp it does not refuse a command: it waits for SFTP requests on stdin,
    # and only the end of stdin ends it. A deadline would pass first if stdin stayed open.
    program = find_sftp_server()
    assert program is not None, "OpenSSH's sftp-server is missing (openssh-sftp-server)"
    sshd = make_sshd(extra_config=[f"ForceCommand {program}"])
    remote = connect(write_config(repo, sshd, remote_root))
    try:
        with pytest.raises(RemoteCommandError, match=SFTP_ONLY):
            remote.run("true", timeout=30)
    finally:
        remote.close()


# -- no sftp subsystem --------------------------------------------------------------------------


@pytest.mark.parametrize("setup", ["no Subsystem line", "a Subsystem that cannot start"])
def test_a_server_without_sftp_says_so(
    setup: str, make_sshd: MakeSshd, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    if setup == "no Subsystem line":
        sshd = make_sshd(sftp_subsystem=False)
    else:
        sshd = make_sshd(sftp_command="/nonexistent/sftp-server")
    config = write_config(repo, sshd, remote_root)
    done = opswatch(config, "sync")
    assert done.returncode == 1
    assert NO_SFTP in done.stderr
    assert "EOF during negotiation" not in done.stderr
    assert "Channel closed" not in done.stderr
    assert "Traceback" not in done.stderr


# -- BusyBox first on PATH ------------------------------------------------------------------------


@pytest.fixture
def busybox_sshd(make_sshd: MakeSshd, tmp_path: Path) -> LocalSshd:
    busybox = shutil.which("busybox")
    assert busybox, "busybox is needed here; tests/run.sh installs it (apt busybox)"
    applets = tmp_path / "busybox-bin"
    applets.mkdir()
    listed = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for name in listed.stdout.split():
        (applets / name).symlink_to(busybox)
    return make_sshd(path_prepend=[applets])


def test_busybox_userland_is_what_the_commands_get(
    busybox_sshd: LocalSshd, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    remote = connect(write_config(repo, busybox_sshd, remote_root))
    try:
        found = remote.run(
            'readlink -f "$(command -v setsid)"; setsid -w true; echo $?', timeout=30
        )
    finally:
        remote.close()
    assert found.output[0].endswith("busybox")
    assert found.output[-1] != "0"  # BusyBox's setsid has no -w


def test_busybox_commands_keep_their_exit_status_and_deadline(
    busybox_sshd: LocalSshd,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    remote = connect(write_config(repo, busybox_sshd, remote_root))
    pids = tmp_path / "pids"
    try:
        result = remote.run("echo out; exit 3", timeout=30)
        assert (result.exit_status, result.output) == (3, ["out"])
        command = f"sh -c 'sleep 600 & echo $$ $! > {pids}; wait'; echo never"
        result = remote.run(command, timeout=1)
    finally:
        remote.close()
    assert result.timed_out and result.exit_status == -1
    assert "never" not in result.output
    shell, sleeper = map(int, pids.read_text().split())
    wait_until(lambda: not alive(shell) and not alive(sleeper), message="the command to be gone")


def test_busybox_verify_reads_over_sftp(
    busybox_sshd: LocalSshd, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    config = write_config(repo, busybox_sshd, remote_root)
    assert opswatch(config, "sync").returncode == 0
    done = opswatch(config, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "read over SFTP: the server has no `sha256sum -z` (GNU coreutils)" in done.stdout
    (remote_root / "docs/ops/runbooks/deploy.md").write_text("changed on the server\n")
    done = opswatch(config, "verify")
    assert done.returncode == 1
    assert "DIFFERS" in done.stdout


# -- key exchange ---------------------------------------------------------------------------------


def test_key_exchange_by_its_rfc_8731_name_only(
    make_sshd: MakeSshd, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    sshd = make_sshd(extra_config=["KexAlgorithms curve25519-sha256"])
    config = write_config(repo, sshd, remote_root)
    done = opswatch(config, "sync")
    assert done.returncode == 0, done.stderr


def test_no_common_key_exchange_lists_both_sides_in_one_line(
    make_sshd: MakeSshd, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    sshd = make_sshd(extra_config=["KexAlgorithms sntrup761x25519-sha512@openssh.com"])
    config = write_config(repo, sshd, remote_root)
    done = opswatch(config, "sync")
    assert done.returncode == 1
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "no key exchange in common" in line
    assert "the server offers sntrup761x25519-sha512@openssh.com;" in line
    assert "curve25519-sha256, " in line.partition("opswatch supports ")[2]
    assert "Traceback" not in done.stderr
    with pytest.raises(ConnectError, match="no key exchange in common"):
        connect(config)


def test_sftp_extensions_are_read_at_connect(
    sshd_server: LocalSshd, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    remote = connect(write_config(repo, sshd_server, remote_root))
    try:
        assert remote.sftp_info.version == 3
        assert remote.sftp_info.offers("posix-rename@openssh.com")
    finally:
        remote.close()
