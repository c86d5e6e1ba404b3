"""The ssh package's one error boundary: paramiko, socket and SFTP exceptions become ours here.

Every third-party exception a module of ``ssh/`` catches is a key of ``FAILURES`` (a test reads
the ``except`` clauses to prove it) and turns into an ``opswatch.errors`` type only through this
module, with ``raise … from exc``. Nothing above ``ssh/`` sees a paramiko type.

One exception can mean two things. paramiko reports an SFTP status as ``IOError`` (ENOENT and
EACCES with their errno, any other status with its text only), and a socket it finds closed as
an ``OSError`` too. So the failure of a request about one path is that file's error while the
transport is still up; anywhere else (connecting, a command, a batch on the wire) or once the
link is down, every one of them means the connection is gone: ``ConnectError``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

import paramiko
from paramiko.hostkeys import InvalidHostKey
from paramiko.sftp import SFTPError

from opswatch.errors import ConnectError, RemoteError, RemoteFileError, RemoteFileMissing

# What a failed request about one path means while the transport is still up. The first key
# the exception is an instance of decides, so the more specific types come first.
FAILURES: dict[type[BaseException], type[RemoteError]] = {
    FileNotFoundError: RemoteFileMissing,  # SSH2_FX_NO_SUCH_FILE, as paramiko raises it
    PermissionError: RemoteFileError,  # SSH2_FX_PERMISSION_DENIED
    TimeoutError: ConnectError,  # socket.timeout: the channel's deadline passed
    ConnectionError: ConnectError,  # reset, refused, broken pipe
    OSError: RemoteFileError,  # any other SFTP status; a closed socket too (see above)
    EOFError: ConnectError,  # the server closed the channel or the connection
    SFTPError: ConnectError,  # garbage on the SFTP channel
    paramiko.SSHException: ConnectError,  # the transport failed, or was closed under us
    InvalidHostKey: ConnectError,  # a known_hosts line paramiko can't decode: no key is trusted
}
CAUGHT: tuple[type[BaseException], ...] = tuple(FAILURES)


def error_type(exc: BaseException, *, file_request: bool) -> type[RemoteError]:
    """The opswatch error ``exc`` becomes; ``file_request``: a request about one path failed
    and the transport is still up."""
    for caught, mapped in FAILURES.items():
        if isinstance(exc, caught):
            return mapped if file_request else ConnectError
    raise TypeError(f"{type(exc).__name__} is not in ssh.failures.FAILURES") from exc


def describe(exc: BaseException) -> str:
    """The cause in words: what a person reads after ``path:`` or ``… failed:``."""
    if isinstance(exc, InvalidHostKey):
        return f"a line that is not a host key: {exc.line.strip()[:80]!r}"
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno == errno.ENOENT:
            return "no such file or folder"
        if exc.errno == errno.EACCES:
            return "permission denied"
        return exc.strerror or str(exc)
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and text.lower() == "failure":
        # SSH2_FX_FAILURE carries no errno; none of the requests made through here is a write.
        return "the server refused it without saying why"
    return text


def file_error(exc: BaseException, path: str) -> RemoteFileError:
    """A request about ``path`` failed while the transport is up: that file's error."""
    mapped = error_type(exc, file_request=True)
    assert issubclass(mapped, RemoteFileError), "only file errors are raised per file"
    return mapped(path, describe(exc))


@contextmanager
def translated(context: str) -> Iterator[None]:
    """Connecting, running a command, a batch on the wire: any caught failure becomes a
    ``ConnectError`` reading ``context: cause``; our own errors pass through."""
    try:
        yield
    except RemoteError:
        raise
    except CAUGHT as exc:
        raise error_type(exc, file_request=False)(f"{context}: {describe(exc)}") from exc
