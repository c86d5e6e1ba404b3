"""ProxyCommand and ProxyJump: the command's stdin and stdout joined to a real socket.

paramiko's ``ProxyCommand`` reads the command's output in a loop that never sees its end: when
``ssh -W`` fails (the jump host refuses us, or cannot reach the target) the connection waits
out the whole banner deadline and then reports a timeout, with ssh's own explanation lost.
Here the command gets one end of a socket pair, so its exit is an end of file at once, and its
stderr is kept to tell the user what the jump host said.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile

from opswatch.errors import ConnectError

EXIT_WAIT_S = 2.0  # how long a command whose output ended may take to exit with its reason
_STDERR_KEEP = 4096


class ProxySocket:
    """A proxy command running with ``sock``'s other end as its stdin and stdout."""

    def __init__(self, command: str, describe: str) -> None:
        self.describe = describe  # "ProxyJump jump" or "ProxyCommand …", for messages
        ours, theirs = socket.socketpair()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        try:
            # OpenSSH runs a ProxyCommand through the shell too (``exec`` saves a process).
            self.process = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {command}"],
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=self._stderr,
                start_new_session=True,  # a Ctrl-C in our terminal is ours to handle
            )
        except OSError as exc:
            ours.close()
            self._stderr.close()
            raise ConnectError(f"{describe}: cannot start: {exc.strerror or exc}") from exc
        finally:
            theirs.close()
        self.sock = ours

    def failure(self) -> str | None:
        """Why the command ended, if it did (waiting briefly for it): its last stderr lines."""
        try:
            code = self.process.wait(EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            return None
        self._stderr.seek(0, 2)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - _STDERR_KEEP))
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        said = "; ".join(line.strip() for line in lines[-3:] if line.strip())
        said = said or f"exited with status {code}"
        return f"{self.describe} failed: {said}"

    def close(self) -> None:
        self.sock.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(EXIT_WAIT_S)
        self._stderr.close()
