"""What lands on the server, and how: private temp files, no special mode bits, any mtime, any
name length; a name that is not UTF-8 is refused with a reason, never a crash."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import MakeSshd, WriteConfig
from daemon_process import opswatch
from opswatch.demo.sshd import LocalSshd, find_sftp_server
from opswatch.ssh.transfer import is_temp_name

RUNBOOKS = "docs/ops/runbooks"

LOGGING_SERVER = """\
#!/bin/sh
# OpenSSH's sftp-server, logging each request (with the mode of each OPEN) to a file.
exec '{server}' -e -l INFO 2>>'{log}'
"""


@pytest.fixture
def logging_sshd(make_sshd: MakeSshd, tmp_path: Path) -> tuple[LocalSshd, Path]:
    server = find_sftp_server()
    if server is None:
        pytest.fail("OpenSSH's sftp-server was not found (package openssh-sftp-server)")
    log = tmp_path / "sftp-server.log"
    wrapper = tmp_path / "sftp-server-logging"
    wrapper.write_text(LOGGING_SERVER.format(server=server, log=log))
    wrapper.chmod(0o755)
    return make_sshd(sftp_command=str(wrapper)), log


def temp_files(remote_root: Path) -> list[Path]:
    return [p for p in remote_root.rglob("*") if is_temp_name(p.name)]


def sync(config: Path) -> tuple[int, str]:
    done = opswatch(config, "sync")
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout + done.stderr


def test_temp_files_are_created_private_and_special_bits_never_land(
    repo: Path,
    logging_sshd: tuple[LocalSshd, Path],
    remote_root: Path,
    write_config: WriteConfig,
) -> None:
    sshd, log = logging_sshd
    private = repo / RUNBOOKS / "private.md"
    private.write_text("for the owner only\n")
    private.chmod(0o600)
    tool = repo / "docs/ops/quality_gates/tool.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o4777)  # setuid, as a careless `chmod` leaves it
    sticky = repo / RUNBOOKS / "sticky.md"
    sticky.write_text("sticky\n")
    sticky.chmod(0o3644)
    config = write_config(repo, sshd, remote_root)
    code, output = sync(config)
    assert code == 0, output
    opens = re.findall(
        r'open "[^"]*\.opswatch-[0-9a-f]+\.tmp" flags \S+ mode (0\d+)', log.read_text()
    )
    assert opens and set(opens) == {"0600"}, log.read_text()
    landed = {
        p.name: stat.S_IMODE((remote_root / p).stat().st_mode)
        for p in (private.relative_to(repo), tool.relative_to(repo), sticky.relative_to(repo))
    }
    assert landed == {"private.md": 0o600, "tool.sh": 0o777, "sticky.md": 0o644}
    assert "mode_stripped" in output


@pytest.mark.parametrize("mtime", [-86400 * 365 * 30, 2**32 + 86400, 2**40])
def test_mtimes_sftp_cannot_carry_are_clamped(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig, mtime: int
) -> None:
    old = repo / RUNBOOKS / "timeless.md"
    old.write_text("from another era\n")
    os.utime(old, (mtime, mtime))
    config = write_config(repo, sshd_server, remote_root)
    code, output = sync(config)
    assert code == 0, output
    there = remote_root / RUNBOOKS / "timeless.md"
    assert there.read_bytes() == old.read_bytes()
    assert there.stat().st_mtime in (0, 2**32 - 1)
    assert temp_files(remote_root) == []
    code, output = sync(config)  # and the next pass finds nothing to do
    assert (code, "0 uploaded") == (0, output.split(",")[0].split("\n")[-1]), output


@pytest.mark.parametrize("length", [230, 250, 255])
def test_names_up_to_255_bytes_land(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig, length: int
) -> None:
    name = ("é" * length)[: (length - 3) // 2] + ".md"  # two bytes a character
    name = name if len(name.encode()) <= 255 else name[1:]
    (repo / RUNBOOKS / name).write_text("a long name\n")
    config = write_config(repo, sshd_server, remote_root)
    code, output = sync(config)
    assert code == 0, output
    assert (remote_root / RUNBOOKS / name).read_text() == "a long name\n"
    assert temp_files(remote_root) == []


def test_a_name_that_is_not_utf8_is_refused_and_the_rest_lands(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> None:
    bad = os.path.join(os.fsencode(repo / RUNBOOKS), b"bad\xff.md")
    with open(bad, "wb") as handle:
        handle.write(b"latin-1 leftovers\n")
    config = write_config(repo, sshd_server, remote_root)
    code, output = sync(config)
    assert code == 0, output
    assert "name is not valid UTF-8" in output
    assert (remote_root / RUNBOOKS / "deploy.md").exists()
    assert not any(b"bad" in os.fsencode(p.name) for p in remote_root.rglob("*"))


def test_a_dry_run_shows_a_name_that_is_not_utf8_escaped(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> None:
    with open(os.path.join(os.fsencode(repo / RUNBOOKS), b"bad\xff.md"), "wb") as handle:
        handle.write(b"x\n")
    config = write_config(repo, sshd_server, remote_root)
    done = opswatch(config, "sync", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"refused   {RUNBOOKS}/bad\\xff.md (name is not valid UTF-8)" in done.stdout


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB file system as the server's remote root: really full, not a per-file limit."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.fail("a real full disk needs root to mount a small tmpfs")
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_on_a_full_disk_one_too_big_file_fails_alone(
    repo: Path, sshd_server: LocalSshd, tiny_disk: Path, write_config: WriteConfig
) -> None:
    (repo / RUNBOOKS / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    small = {f"{RUNBOOKS}/small-{n}.md": f"small {n}\n" * 2000 for n in range(8)}
    for relative, text in small.items():
        (repo / relative).write_text(text)
    config = write_config(repo, sshd_server, tiny_disk)
    code, output = sync(config)
    assert code == 1, output
    assert f"error: {RUNBOOKS}/big.bin:" in output
    for relative, text in small.items():
        assert (tiny_disk / relative).read_text() == text, output
    assert temp_files(tiny_disk) == []
