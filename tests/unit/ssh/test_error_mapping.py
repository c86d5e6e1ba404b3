"""ssh/ turns paramiko, socket and SFTP errors into ours at one boundary, from one table."""

from __future__ import annotations

import ast
import errno
import importlib
import inspect
import pkgutil
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives.asymmetric import x448
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from paramiko.sftp import SFTPError

import opswatch.ssh
from opswatch.errors import (
    ConnectError,
    OpswatchError,
    RemoteFileError,
    RemoteFileMissing,
)
from opswatch.ssh import failures
from opswatch.ssh.connect import _Connector
from opswatch.ssh.endpoint import Endpoint
from opswatch.ssh.failures import FAILURES, error_type, translated

# paramiko's exceptions outside the table, and why none of them reaches opswatch as such.
UNMAPPED = {
    "NeedRekeyException": "the packetizer's signal to its own transport thread",
    "BERException": "key parsing wraps it in SSHException",
    "UnknownKeyType": "only key loading raises it: an identity file skipped with a warning",
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


def from_the_link(kind: type[BaseException]) -> bool:
    """An exception of paramiko, or of the socket under it; a ValueError from parsing a key or
    a known_hosts line is not about the server."""
    return kind.__module__.startswith("paramiko") or issubclass(kind, OSError | EOFError)


SSH_MODULES = sorted(f"opswatch.ssh.{m.name}" for m in pkgutil.iter_modules(opswatch.ssh.__path__))


@pytest.mark.parametrize("module_name", SSH_MODULES)
def test_every_type_ssh_catches_is_in_the_table(module_name: str) -> None:
    for caught in caught_types(module_name):
        if issubclass(caught, OpswatchError) or not from_the_link(caught):
            continue
        if caught.__name__ in UNMAPPED:
            continue
        assert issubclass(caught, tuple(FAILURES)), f"{module_name} catches {caught.__name__}"


def paramiko_exceptions() -> list[type[BaseException]]:
    """Every exception class any module of paramiko defines (Windows-only modules aside)."""
    found: set[type[BaseException]] = set()
    for info in pkgutil.iter_modules(paramiko.__path__):
        try:
            module = importlib.import_module(f"paramiko.{info.name}")
        except (ImportError, AttributeError):
            continue  # _winapi, win_pageant: Windows only
        found.update(
            value
            for value in vars(module).values()
            if inspect.isclass(value)
            and issubclass(value, BaseException)
            and value.__module__.startswith("paramiko")
        )
    return sorted(found, key=lambda kind: kind.__name__)


def test_the_walk_finds_paramikos_exceptions() -> None:
    names = {kind.__name__ for kind in paramiko_exceptions()}
    assert {"SSHException", "SFTPError", "InvalidHostKey", *UNMAPPED} <= names


@pytest.mark.parametrize(
    "kind",
    [k for k in paramiko_exceptions() if k.__name__ not in UNMAPPED] + [TimeoutError, EOFError],
    ids=lambda kind: kind.__name__,
)
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


def test_a_broken_known_hosts_line_is_a_connect_error_naming_the_file(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("[127.0.0.1]:2222 ssh-ed25519 !!!!not-base64\n")
    connector = _Connector(endpoint(tmp_path, known_hosts=known_hosts), timeout=1)
    with pytest.raises(ConnectError, match="known_hosts: cannot read known_hosts: a line that"):
        connector._known_keys()


def test_an_identity_file_of_an_unknown_key_type_is_skipped(tmp_path: Path) -> None:
    key = tmp_path / "id_x448"
    private = x448.X448PrivateKey.generate()
    key.write_bytes(private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    connector = _Connector(endpoint(tmp_path, identity=key), timeout=1)
    assert list(connector._candidate_keys()) == []


def endpoint(
    folder: Path, *, known_hosts: Path | None = None, identity: Path | None = None
) -> Endpoint:
    return Endpoint(
        alias="test",
        hostname="127.0.0.1",
        port=2222,
        user="deploy",
        identity_files=(identity,) if identity else (),
        known_hosts=known_hosts or folder / "known_hosts",
        identities_only=True,
    )
