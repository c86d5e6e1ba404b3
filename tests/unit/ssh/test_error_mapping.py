"""ssh/ turns paramiko, socket and SFTP errors into ours at one boundary, from one table."""

from __future__ import annotations

import ast
import errno
import importlib
import inspect
import pkgutil
import socket

import paramiko
import paramiko.ssh_exception
import pytest
from paramiko.sftp import SFTPError

import opswatch.ssh
from opswatch.errors import (
    ConnectError,
    OpswatchError,
    RemoteFileError,
    RemoteFileMissing,
)
from opswatch.ssh import failures
from opswatch.ssh.failures import FAILURES, error_type, translated

# Caught in ssh/ on purpose without becoming an opswatch error, each for a reason given here.
NOT_TRANSLATED = {
    # An identity file paramiko can't parse is skipped with a warning; the next key is tried.
    ("opswatch.ssh.connect", ValueError),
    # A hashed known_hosts name that is not base64 does not name our host; nothing failed.
    ("opswatch.ssh.known_hosts", ValueError),
}


def caught_types(module_name: str) -> set[type[BaseException]]:
    """Every exception type an ``except`` clause of the module catches and does not re-raise
    unchanged (a clean-up that ends in a bare ``raise`` translates nothing)."""
    module = importlib.import_module(module_name)
    tree = ast.parse(inspect.getsource(module))
    found: set[type[BaseException]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            last = node.body[-1]
            if isinstance(last, ast.Raise) and last.exc is None:
                continue
            value = eval(ast.unparse(node.type), vars(module))
            found.update(value if isinstance(value, tuple) else (value,))
    return found


def third_party(types: set[type[BaseException]]) -> set[type[BaseException]]:
    return {t for t in types if not issubclass(t, OpswatchError)}


SSH_MODULES = sorted(f"opswatch.ssh.{m.name}" for m in pkgutil.iter_modules(opswatch.ssh.__path__))


@pytest.mark.parametrize("module_name", SSH_MODULES)
def test_every_type_ssh_catches_is_in_the_table(module_name: str) -> None:
    for caught in third_party(caught_types(module_name)):
        if (module_name, caught) in NOT_TRANSLATED:
            continue
        assert issubclass(caught, tuple(FAILURES)), f"{module_name} catches {caught.__name__}"


def paramiko_exceptions() -> list[type[BaseException]]:
    found = [
        value
        for value in vars(paramiko.ssh_exception).values()
        if inspect.isclass(value) and issubclass(value, BaseException)
    ]
    return [*found, SFTPError, socket.timeout, EOFError]  # socket.timeout: TimeoutError


@pytest.mark.parametrize("kind", paramiko_exceptions(), ids=lambda kind: kind.__name__)
def test_every_paramiko_exception_is_mapped(kind: type[BaseException]) -> None:
    assert issubclass(kind, failures.CAUGHT)
    instance = kind.__new__(kind)
    assert error_type(instance, file_request=False) is ConnectError


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        # What paramiko's SFTPClient raises for each status (its _convert_status).
        (OSError(errno.ENOENT, "No such file"), RemoteFileMissing),
        (OSError(errno.EACCES, "Permission denied"), RemoteFileError),
        (OSError("Failure"), RemoteFileError),
        (EOFError(), ConnectError),
        # What the link raises when it breaks.
        (TimeoutError("timed out"), ConnectError),  # socket.timeout
        (ConnectionResetError(errno.ECONNRESET, "reset"), ConnectError),
        (paramiko.SSHException("Server connection dropped"), ConnectError),
        (SFTPError("Garbage packet received"), ConnectError),
    ],
)
def test_a_file_request_failure_maps_by_type(exc: BaseException, expected: type) -> None:
    assert error_type(exc, file_request=True) is expected
    assert error_type(exc, file_request=False) is ConnectError


def test_missing_is_a_file_error_so_old_handlers_still_catch_it() -> None:
    error = failures.file_error(FileNotFoundError(errno.ENOENT, "x"), "/srv/a")
    assert isinstance(error, RemoteFileMissing)
    assert isinstance(error, RemoteFileError)
    assert str(error) == "/srv/a: no such file or folder"


def test_translated_keeps_the_cause_and_says_the_context() -> None:
    cause = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    with pytest.raises(ConnectError) as caught, translated("cannot reach h:22"):
        raise cause
    assert str(caught.value) == "cannot reach h:22: Connection refused"
    assert caught.value.__cause__ is cause


def test_translated_leaves_other_errors_alone() -> None:
    with pytest.raises(KeyError), translated("anything"):
        raise KeyError("a bug stays a bug")
