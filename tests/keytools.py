"""Real OpenSSH key tooling for the key tests: ssh-keygen, a private ssh-agent, a terminal."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from helpers import wait_until

PASSPHRASE = "correct horse battery"


def keygen(path: Path, *, passphrase: str = "", kind: str = "ed25519", pem: bool = False) -> Path:
    """A new key at ``path`` (and ``path.pub``), as ``ssh-keygen`` writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    command = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", path.name, "-f", str(path)]
    if pem:
        command += ["-m", "PEM"]
    if kind == "rsa":
        command += ["-b", "2048"]
    subprocess.run(command, check=True, capture_output=True)
    return path


def public_line(private: Path) -> str:
    return private.with_name(private.name + ".pub").read_text().strip()


class SshAgent:
    """``ssh-agent -D`` on a private socket; ``add`` loads a key as ``ssh-add`` does."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="opswatch-agent-", dir="/tmp"))
        self.socket = self.folder / "agent.sock"
        self.process = subprocess.Popen(
            ["ssh-agent", "-D", "-a", str(self.socket)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.socket.exists, message="ssh-agent's socket")

    def add(self, key: Path, passphrase: str = PASSPHRASE) -> None:
        """``ssh-add KEY``, the passphrase given through SSH_ASKPASS (no terminal here)."""
        askpass = self.folder / "askpass"
        askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' '{passphrase}'\n")
        askpass.chmod(0o700)
        env = dict(
            os.environ,
            SSH_AUTH_SOCK=str(self.socket),
            SSH_ASKPASS=str(askpass),
            SSH_ASKPASS_REQUIRE="force",
            DISPLAY=":0",
        )
        subprocess.run(
            ["ssh-add", str(key)],
            env=env,
            stdin=subprocess.DEVNULL,
            check=True,
            capture_output=True,
        )

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


def on_terminal(argv: list[str], answer: str, *, timeout: float = 60) -> tuple[int, str]:
    """Run ``argv`` on a new pseudo-terminal; type ``answer`` at the passphrase prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin, stdout and stderr are the terminal
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    output = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"no end after {timeout} s; terminal:\n{output.decode()}")
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"Enter passphrase" in output:
                os.write(fd, answer.encode() + b"\n")
                answered = True
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")
