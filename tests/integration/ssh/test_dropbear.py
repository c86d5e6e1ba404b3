"""Dropbear with OpenSSH's sftp-server, as small boxes and routers run it: the real `dropbear`.

Dropbear reads ``~/.ssh/authorized_keys`` of the login and has no option to look elsewhere, so it
runs in a mount namespace of its own where the login's home is a folder of this test.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon_process import opswatch
from helpers import wait_until
from opswatch.config import load_config
from opswatch.demo.sshd import _keygen, _public_key, free_port
from opswatch.ssh.endpoint import resolve_endpoint
from opswatch.ssh.remote import SshRemote

WriteConfig = Callable[..., Path]
SFTP_SERVER = Path("/usr/lib/sftp-server")  # where Debian's dropbear looks for it


class Dropbear:
    host = "127.0.0.1"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.port = free_port(self.host)
        self.client_key = workdir / "client_key"
        self.known_hosts = workdir / "known_hosts"
        self.log_path = workdir / "dropbear.log"
        _keygen(self.client_key, "opswatch-test-client")
        home = workdir / "home"
        (home / ".ssh").mkdir(parents=True)
        home.chmod(0o700)
        (home / ".ssh/authorized_keys").write_text(_public_key(self.client_key) + "\n")
        host_key = workdir / "host_key"
        made = subprocess.run(
            ["dropbearkey", "-t", "ed25519", "-f", str(host_key)],
            capture_output=True,
            text=True,
            check=True,
        )
        public = next(line for line in made.stdout.splitlines() if line.startswith("ssh-"))
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {' '.join(public.split()[:2])}\n")
        login_home = pwd.getpwuid(os.getuid()).pw_dir
        script = (
            f"mount --bind '{home}' '{login_home}' && exec dropbear -F -E -s "
            f"-p {self.host}:{self.port} -r '{host_key}' -P '{workdir}/dropbear.pid'"
        )
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._answers, timeout=20, message="dropbear to answer")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"dropbear exited:\n{self.log_path.read_text()}")
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as conn:
                return conn.recv(32).startswith(b"SSH-2.0-dropbear")
        except OSError:
            return False

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(10)
        self._log.close()


@pytest.fixture
def dropbear(tmp_path: Path) -> Iterator[Dropbear]:
    if shutil.which("dropbear") is None:
        pytest.skip("dropbear is not installed (tests/run.sh installs dropbear-bin where apt can)")
    if os.geteuid() != 0:
        pytest.skip("dropbear logs in only as root unless it runs as the login itself")
    assert SFTP_SERVER.exists(), "OpenSSH's sftp-server is missing (openssh-sftp-server)"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here for dropbear's home: {probe.stderr.strip()}")
    server = Dropbear(tmp_path / "dropbear")
    yield server
    server.stop()


def test_dropbear_syncs_verifies_and_runs_commands(
    dropbear: Dropbear, repo: Path, remote_root: Path, write_config: WriteConfig, tmp_path: Path
) -> None:
    config = write_config(repo, dropbear, remote_root)
    done = opswatch(config, "sync")
    assert done.returncode == 0, done.stdout + done.stderr
    runbook = "docs/ops/runbooks/deploy.md"
    assert (remote_root / runbook).read_bytes() == (repo / runbook).read_bytes()
    done = opswatch(config, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "read over SFTP" not in done.stdout

    remote = SshRemote(resolve_endpoint(load_config(config).remote))
    remote.connect()
    pids = tmp_path / "pids"
    try:
        result = remote.run("echo out; exit 3", timeout=30)
        assert (result.exit_status, result.output) == (3, ["out"])
        result = remote.run(f"sh -c 'sleep 600 & echo $$ $! > {pids}; wait'", timeout=1)
    finally:
        remote.close()
    assert result.timed_out
    gone = [int(pid) for pid in pids.read_text().split()]
    wait_until(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in gone),
        message="the command to be gone",
    )
