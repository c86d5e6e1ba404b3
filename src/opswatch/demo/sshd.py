"""A throwaway OpenSSH sshd on 127.0.0.1 (keys, configs, process) for tests and `opswatch demo`.

`LocalSshd(workdir)` writes everything it needs into `workdir` (host and client keys,
authorized_keys, known_hosts, an ssh_config with the alias `opswatch-test`, the sshd_config) and
runs `sshd -D` on a free port. It works as root and, where the platform allows, as any user: an
unprivileged sshd can only log in the user running it, which is all a test needs.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SSHD_CANDIDATES = (Path("/usr/sbin/sshd"), Path("/usr/local/sbin/sshd"))
_SFTP_SERVER_CANDIDATES = (
    Path("/usr/lib/openssh/sftp-server"),  # Debian, Ubuntu
    Path("/usr/libexec/openssh/sftp-server"),  # Fedora, RHEL
    Path("/usr/lib/ssh/sftp-server"),  # Arch
    Path("/usr/libexec/sftp-server"),  # macOS, the BSDs
    Path("/usr/local/libexec/sftp-server"),
)
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0
_POLL_S = 0.01
_PRIVSEP_MISSING = re.compile(r"Missing privilege separation directory: (\S+)")


class LocalSshdError(RuntimeError):
    """The throwaway sshd could not be configured, started or stopped."""


def find_sshd() -> Path | None:
    """The absolute path of the sshd binary (sshd re-executes itself and insists on one)."""
    found = shutil.which("sshd")
    candidates = [Path(found)] if found else []
    for path in [*candidates, *_SSHD_CANDIDATES]:
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
    return None


def find_sftp_server() -> Path | None:
    """OpenSSH's sftp-server binary: what a `sftp_command` wraps (internal-sftp cannot be)."""
    for path in _SFTP_SERVER_CANDIDATES:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@functools.cache
def openssh_version(sshd: Path) -> tuple[int, int]:
    """(major, minor) of an sshd; old ones print it only in the usage text of an unknown flag."""
    done = subprocess.run([str(sshd), "-V"], capture_output=True, text=True, check=False)
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", done.stdout + done.stderr)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def _keygen(private: Path, comment: str) -> None:
    private.unlink(missing_ok=True)
    private.with_name(private.name + ".pub").unlink(missing_ok=True)
    command = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LocalSshdError(f"ssh-keygen failed for {private}: {done.stderr.strip()}")


def _public_key(private: Path) -> str:
    """`ssh-ed25519 AAAA…` without the comment."""
    fields = private.with_name(private.name + ".pub").read_text().split()
    return f"{fields[0]} {fields[1]}"


def _fingerprint(public_key: str) -> str:
    blob = base64.b64decode(public_key.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _quoted(value: str | Path) -> str:
    """A config argument that survives spaces; OpenSSH has no escape for a double quote."""
    text = str(value)
    if '"' in text or "\n" in text:
        raise LocalSshdError(f"cannot put {text!r} in an OpenSSH config file")
    return f'"{text}"'


def _path_arg(path: Path) -> str:
    """A path for an option that expands %-tokens (AuthorizedKeysFile, IdentityFile …)."""
    return _quoted(str(path).replace("%", "%%"))


class LocalSshd:
    """A real OpenSSH server on 127.0.0.1 that lives in one folder; a context manager."""

    host = "127.0.0.1"
    alias = "opswatch-test"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        path_prepend: Sequence[Path] = (),
        extra_config: Sequence[str] = (),
        sftp_command: str | None = None,
        sftp_subsystem: bool = True,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port(self.host)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.host_key = self.workdir / "host_key"
        self.client_key = self.workdir / "client_key"
        self.authorized_keys = self.workdir / "authorized_keys"
        self.known_hosts = self.workdir / "known_hosts"
        self.ssh_config = self.workdir / "ssh_config"
        self.sshd_config = self.workdir / "sshd_config"
        self.pid_file = self.workdir / "sshd.pid"
        self.log_path = self.workdir / "sshd.log"
        self._path_prepend = [Path(p).resolve() for p in path_prepend]
        self._extra_config = list(extra_config)
        # The sftp subsystem: None is sshd's own internal-sftp; else a command line that sshd
        # runs through the user's shell, e.g. a script around `find_sftp_server()` that injects
        # server-side failures. Read at every start(), so a change takes effect on restart().
        self.sftp_command = sftp_command
        self.sftp_subsystem = sftp_subsystem  # False: no Subsystem line, as some servers ship
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._write_files()

    # -- files -----------------------------------------------------------------------------

    def _write_files(self) -> None:
        _keygen(self.host_key, "opswatch-test-host")
        _keygen(self.client_key, "opswatch-test-client")
        self.authorized_keys.write_text(_public_key(self.client_key) + "\n")
        self.trust_current_host_key()
        self.ssh_config.write_text("\n".join(self._ssh_config_lines()) + "\n")

    def _known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def trust_current_host_key(self) -> None:
        """Make known_hosts hold exactly the server's current host key."""
        line = f"{self._known_hosts_name()} {_public_key(self.host_key)}\n"
        self.known_hosts.write_text(line)

    def regenerate_host_key(self) -> None:
        """Give the server a new host key, leaving known_hosts stale; takes effect on restart()."""
        _keygen(self.host_key, "opswatch-test-host")

    @property
    def host_key_fingerprint(self) -> str:
        """The host key's fingerprint as `ssh-keygen -lf` prints it: `SHA256:…`."""
        return _fingerprint(_public_key(self.host_key))

    def _ssh_config_lines(self) -> list[str]:
        return [
            f"Host {self.alias}",
            f"    HostName {self.host}",
            f"    Port {self.port}",
            f"    User {self.user}",
            f"    IdentityFile {_path_arg(self.client_key)}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {_path_arg(self.known_hosts)}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    UpdateHostKeys no",
            "    BatchMode yes",
            "    LogLevel ERROR",
        ]

    def _sshd_config_lines(self, sshd: Path) -> list[str]:
        lines = [
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {_quoted(self.host_key)}",
            f"AuthorizedKeysFile {_path_arg(self.authorized_keys)}",
            f"PidFile {_quoted(self.pid_file)}",
            f"AllowUsers {self.user}",
            # No PAM: an unprivileged sshd cannot use it, and in containers pam_loginuid fails.
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "MaxStartups 256",
            "MaxSessions 256",
            "PrintMotd no",
            "PrintLastLog no",
            "LogLevel VERBOSE",
        ]
        if self.sftp_subsystem:
            lines.append(f"Subsystem sftp {self.sftp_command or 'internal-sftp'}")
        if openssh_version(sshd) >= (9, 8):
            # Tests provoke failed logins and dropped connections on purpose; since 9.8 sshd
            # would answer them by refusing 127.0.0.1 for a while.
            lines.append("PerSourcePenalties no")
        if self._path_prepend:
            search_path = ":".join([*map(str, self._path_prepend), STANDARD_PATH])
            lines.append(f"SetEnv {_quoted('PATH=' + search_path)}")
        return [*lines, *self._extra_config]

    # -- process ---------------------------------------------------------------------------

    @staticmethod
    def available() -> bool:
        """Whether this machine has what LocalSshd runs: sshd and ssh-keygen."""
        return find_sshd() is not None and shutil.which("ssh-keygen") is not None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Check the config with `sshd -t`, run sshd, return once the port answers as SSH."""
        if self.running:
            raise LocalSshdError(f"sshd on port {self.port} is already running")
        sshd = find_sshd()
        if sshd is None:
            raise LocalSshdError("sshd not found: install OpenSSH's server (openssh-server)")
        self.sshd_config.write_text("\n".join(self._sshd_config_lines(sshd)) + "\n")
        self._check_config(sshd)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        command = [str(sshd), "-D", "-e", "-f", str(self.sshd_config)]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready(log_offset)
        except BaseException:
            self.stop()
            raise

    def _check_config(self, sshd: Path) -> None:
        command = [str(sshd), "-t", "-f", str(self.sshd_config)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        missing = _PRIVSEP_MISSING.search(done.stderr)
        if done.returncode != 0 and missing and os.geteuid() == 0:
            # A root sshd chroots its pre-auth child there; a fresh container lacks the folder.
            Path(missing[1]).mkdir(mode=0o755, parents=True, exist_ok=True)
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LocalSshdError(f"sshd rejects {self.sshd_config}: {done.stderr.strip()}")

    def _wait_ready(self, log_offset: int) -> None:
        """Wait for our sshd's "Server listening" line, then for the SSH banner on the port.

        The log line proves the port is ours and not another server's that took it meanwhile.
        """
        deadline = time.monotonic() + _START_TIMEOUT_S
        listening = f"Server listening on {self.host} port {self.port}."
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise LocalSshdError(f"sshd exited at start:\n{self._log_since(log_offset)}")
            if listening in self._log_since(log_offset) and self._answers_ssh():
                return
            time.sleep(_POLL_S)
        raise LocalSshdError(
            f"sshd did not answer on {self.host}:{self.port} within {_START_TIMEOUT_S:.0f} s:\n"
            f"{self._log_since(log_offset)}"
        )

    def _answers_ssh(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as conn:
                return conn.recv(8).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        """Stop sshd and every connection it serves, as a server going down would.

        sshd leaves running sessions alone when its listener is terminated; the listener is
        frozen first so no new session forks while the current ones are collected and killed.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            _freeze(process.pid)
            _kill_all(_descendants(process.pid))
            process.terminate()
            os.kill(process.pid, signal.SIGCONT)
            _wait_or_kill(process)
        if self._log is not None:
            self._log.close()
            self._log = None

    def drop_sessions(self) -> None:
        """Cut every open connection as a network failure would; the server keeps listening."""
        if self._process is None or not self.running:
            raise LocalSshdError("sshd is not running")
        pid = self._process.pid
        _freeze(pid)
        try:
            _kill_all(_descendants(pid))
        finally:
            os.kill(pid, signal.SIGCONT)

    def restart(self) -> None:
        """Stop, then start again on the same port (with the current host key)."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LocalSshd {self.user}@{self.host}:{self.port} {state} in {self.workdir}>"


# -- process tree --------------------------------------------------------------------------


def _linux_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()


def _parent_pids() -> dict[int, int]:
    """pid → parent pid of every process."""
    if sys.platform.startswith("linux"):
        parents = {}
        for entry in Path("/proc").iterdir():
            fields = _linux_stat(int(entry.name)) if entry.name.isdigit() else None
            if fields:
                parents[int(entry.name)] = int(fields[1])
        return parents
    listing = subprocess.run(
        ["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True, check=True
    )
    pairs = (line.split() for line in listing.stdout.splitlines() if line.strip())
    return {int(pid): int(ppid) for pid, ppid in pairs}


def _descendants(root: int) -> list[int]:
    parents = _parent_pids()
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie is not: its sockets are closed and it may never be reaped)."""
    if sys.platform.startswith("linux"):
        fields = _linux_stat(pid)
        return fields is not None and fields[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _freeze(pid: int) -> None:
    """SIGSTOP a process and wait (briefly) until it has really stopped."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 1.0
    while sys.platform.startswith("linux") and time.monotonic() < deadline:
        fields = _linux_stat(pid)
        if fields is None or fields[0] in ("T", "t", "Z"):
            return
        time.sleep(_POLL_S / 10)


def _kill_all(pids: Iterable[int]) -> None:
    pids = list(pids)
    for pid in pids:
        # Gone already, or its pid reused by a process that is not ours to kill.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise LocalSshdError(f"sshd sessions {pids} outlived SIGKILL")
        time.sleep(_POLL_S)


def _wait_or_kill(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=_STOP_TIMEOUT_S)
