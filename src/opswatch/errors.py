"""The one exception tree of opswatch; every expected failure is one of these.

    OpswatchError                 exit 1 unless a subclass says otherwise
    ├── UsageError                exit 2: bad command line
    ├── ConfigError               exit 2: the config file is unreadable or invalid
    ├── NotRunningError           exit 3: no daemon answers on the control socket
    ├── AlreadyRunningError       another daemon holds this config's state folder
    ├── StateError                exit 2: the state folder, or a file in it, can't be written
    ├── LocalFileError            a local file could not be read (vanished, permissions)
    │   └── LocalRefusedError     what was opened is not what may be sent (a link, a FIFO…)
    ├── HistoryError              the deploy history could not be read or written
    └── RemoteError               anything between us and the server
        ├── ConnectError          the server can't be reached, or the connection dropped
        ├── AuthError             the server refused every key we offered
        ├── HostKeyError          the host key is unknown or changed: never retried blindly
        │   ├── UnknownHostKeyError
        │   └── ChangedHostKeyError
        ├── RemoteFileError       one remote file operation failed (permission, full disk)
        │   └── RemoteFileMissing the file or folder is not there (for a remove: done)
        └── RemoteCommandError    a remote command failed or timed out

Third-party exceptions are translated into these at one boundary per adapter, from one table,
with ``raise … from exc``: paramiko, socket and SFTP errors in ``ssh/failures.py``, sqlite's in
``local/manifest.py``. Nothing above the adapters sees a third-party type, and code branches on
these types, never on their message text.
"""

from __future__ import annotations

from opswatch.model import Refusal


class OpswatchError(Exception):
    """Base of every expected opswatch failure; the CLI prints it as one ``error:`` line."""

    exit_code = 1


class UsageError(OpswatchError):
    exit_code = 2


class ConfigError(OpswatchError):
    """Every problem found in a config file at once, each naming the file and the key."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class NotRunningError(OpswatchError):
    exit_code = 3


class AlreadyRunningError(OpswatchError):
    pass


class StateError(OpswatchError):
    """The state folder, or a file in it (manifest, lock), can't be created, opened or written."""

    exit_code = 2


class LocalFileError(OpswatchError):
    pass


class LocalRefusedError(LocalFileError):
    """The guarded open found something that must not be sent; not retried until it changes."""

    def __init__(self, message: str, refusal: Refusal) -> None:
        super().__init__(message)
        self.refusal = refusal


class HistoryError(OpswatchError):
    pass


class RemoteError(OpswatchError):
    """Something between us and the server; ``retryable`` says whether reconnecting may help."""

    retryable = True


class ConnectError(RemoteError):
    pass


class AuthError(RemoteError):
    retryable = False


class HostKeyError(RemoteError):
    retryable = False


class UnknownHostKeyError(HostKeyError):
    pass


class ChangedHostKeyError(HostKeyError):
    pass


class RemoteFileError(RemoteError):
    """One file failed on the server; the connection itself is still fine."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class RemoteFileMissing(RemoteFileError):
    """The remote file or folder does not exist: removing it is done, a stat of it is None."""

    def __init__(self, path: str, reason: str = "no such file or folder") -> None:
        super().__init__(path, reason)


class RemoteCommandError(RemoteError):
    pass
