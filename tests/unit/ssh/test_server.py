"""What the server offers, parsed; the shell pieces run by a real local `sh`; paramiko internals."""

from __future__ import annotations

import shlex
import socket
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from opswatch.ssh import _compat
from opswatch.ssh.commands import NO_GROUP_MARK, PID_MARK, wrap
from opswatch.ssh.endpoint import jump_command
from opswatch.ssh.server import (
    POSIX_RENAME,
    SftpSupport,
    move_command,
    negotiation_mismatch,
    parse_moved,
    parse_version_packet,
)


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _version_packet(version: int, *extensions: tuple[bytes, bytes]) -> bytes:
    body = bytes([2]) + struct.pack(">I", version)
    body += b"".join(_string(name) + _string(data) for name, data in extensions)
    return struct.pack(">I", len(body)) + body


def test_version_packet_lists_extensions() -> None:
    info = parse_version_packet(_version_packet(3, (POSIX_RENAME.encode(), b"1"), (b"x", b"")))
    assert (info.version, info.names) == (3, (POSIX_RENAME, "x"))
    assert SftpSupport.from_info(info).posix_rename is True


def test_version_packet_without_extensions_leaves_posix_rename_to_be_tried() -> None:
    info = parse_version_packet(_version_packet(3))
    assert info.names == ()
    assert SftpSupport.from_info(info).posix_rename is None


@pytest.mark.parametrize(
    "packet", [b"", b"\x00\x00", _version_packet(3, (b"name", b"data"))[:-2] + b"\x00\x00\x00\x09"]
)
def test_a_malformed_version_packet_is_not_an_error(packet: bytes) -> None:
    parse_version_packet(packet)


@pytest.mark.parametrize(
    ("jump", "host", "config", "expected"),
    [
        ("jump", "10.0.0.5", None, "ssh -o ConnectTimeout=10 -W 10.0.0.5:22 jump"),
        ("jump", "::1", None, "ssh -o ConnectTimeout=10 -W '[::1]:22' jump"),
        (
            "me@jump:2222",
            "db",
            Path("/cfg/ssh config"),
            "ssh -o ConnectTimeout=10 -F '/cfg/ssh config' -W db:22 ssh://me@jump:2222",
        ),
        (
            "a,[fe80::1]:2200",
            "db",
            None,
            "ssh -o ConnectTimeout=10 -J a -W db:22 'ssh://[fe80::1]:2200'",
        ),
    ],
)
def test_jump_command(jump: str, host: str, config: Path | None, expected: str) -> None:
    assert jump_command(jump, host, 22, config) == expected


def test_move_command_replaces_files_and_refuses_folders(tmp_path: Path) -> None:
    (tmp_path / "a.tmp").write_text("new a")
    (tmp_path / "a").write_text("old a")
    (tmp_path / "b.tmp").write_text("new b")
    (tmp_path / "b").mkdir()
    (tmp_path / "it's c.tmp").write_text("new c")
    moves = [
        (str(tmp_path / n), str(tmp_path / n.removesuffix(".tmp")))
        for n in ("a.tmp", "b.tmp", "it's c.tmp", "missing.tmp")
    ]
    done = subprocess.run(["sh", "-c", move_command(moves)], capture_output=True, text=True)
    assert done.returncode == 0
    assert parse_moved(done.stdout.splitlines(), 4) == [True, False, True, False]
    assert (tmp_path / "a").read_text() == "new a"
    assert (tmp_path / "b").is_dir() and list((tmp_path / "b").iterdir()) == []
    assert (tmp_path / "it's c").read_text() == "new c"


@dataclass(frozen=True)
class Wrapped:
    pid: int
    lines: list[str]
    returncode: int


def _run_wrapped(command: str, path: Path, *, need_group: bool, leader: bool = False) -> Wrapped:
    """The wrapper as the login shell would run it: leading its own session and group, as
    sshd makes it (``leader``), or not."""
    line = wrap(command, need_group=need_group)
    with subprocess.Popen(
        ["sh", "-c", line],
        stdout=subprocess.PIPE,
        text=True,
        env={"PATH": f"{path}:/usr/bin:/bin"},
        start_new_session=leader,
    ) as process:
        out, _ = process.communicate(timeout=30)
    return Wrapped(process.pid, out.splitlines(), process.returncode)


@pytest.fixture
def no_setsid_w(tmp_path: Path) -> Path:
    stub = tmp_path / "setsid"
    stub.write_text("#!/bin/sh\necho 'setsid: unrecognized option: w' >&2\nexit 1\n")
    stub.chmod(0o755)
    return tmp_path


def test_wrapper_without_setsid_w_or_own_group_refuses_a_deadline(no_setsid_w: Path) -> None:
    done = _run_wrapped("echo ran", no_setsid_w, need_group=True)
    assert (done.lines, done.returncode) == ([NO_GROUP_MARK], 125)
    done = _run_wrapped("echo ran", no_setsid_w, need_group=False)
    assert done.lines == [NO_GROUP_MARK, "ran"]


@pytest.mark.parametrize("pgid_from", ["/proc", "ps -o pgid="])
def test_wrapper_without_setsid_w_uses_the_group_its_shell_leads(
    no_setsid_w: Path, pgid_from: str
) -> None:
    if pgid_from == "ps -o pgid=":  # as on macOS: /proc is not read (here: sed finds nothing)
        stub = no_setsid_w / "sed"
        stub.write_text("#!/bin/sh\nexit 1\n")
        stub.chmod(0o755)
    done = _run_wrapped("echo ran; exit 5", no_setsid_w, need_group=True, leader=True)
    assert done.lines == [f"{PID_MARK}{done.pid}", "ran"]
    assert done.returncode == 5


def test_wrapper_with_setsid_w_reports_the_group(tmp_path: Path) -> None:
    done = _run_wrapped("echo ran; exit 4", tmp_path, need_group=True)
    first, *rest = done.lines
    assert first.startswith(PID_MARK)
    assert rest == ["ran"] and done.returncode == 4


# -- paramiko internals used by ssh/_compat.py: an upgrade that changes them fails here --------


def test_paramiko_still_has_the_kex_internals_compat_uses() -> None:
    assert _compat.LIBSSH_CURVE25519 in paramiko.Transport._kex_info  # type: ignore[attr-defined]
    assert callable(paramiko.Transport._parse_kex_init)  # type: ignore[attr-defined]
    assert callable(paramiko.Transport._really_parse_kex_init)  # type: ignore[attr-defined]


@pytest.fixture
def transport() -> Iterator[paramiko.Transport]:
    """A client transport on a socket pair: never started, so nothing is sent."""
    ours, theirs = socket.socketpair()
    transport = paramiko.Transport(ours)
    yield transport
    transport.close()
    ours.close()
    theirs.close()


def test_rfc_curve25519_is_offered_just_ahead_of_the_old_name(
    transport: paramiko.Transport,
) -> None:
    _compat.accept_rfc_curve25519(transport)
    kex = list(transport.get_security_options().kex)
    at = kex.index(_compat.RFC_CURVE25519)
    assert kex[at + 1] == _compat.LIBSSH_CURVE25519
    assert _compat.RFC_CURVE25519 not in paramiko.Transport._kex_info  # type: ignore[attr-defined]


def test_the_offered_lists_are_recorded_before_paramiko_judges_them(
    transport: paramiko.Transport,
) -> None:
    offered = _compat.record_offered_algorithms(transport)
    kexinit = paramiko.Message()
    kexinit.add_bytes(bytes(16))
    for names in (
        ["no-such-kex"],
        ["ssh-ed25519"],
        *[["aes128-ctr"]] * 2,
        *[["hmac-sha2-256"]] * 2,
        *[["none"]] * 2,
        [],
        [],
    ):
        kexinit.add_list(names)
    kexinit.add_boolean(False)
    kexinit.add_int(0)
    with pytest.raises(paramiko.SSHException):
        transport._parse_kex_init(paramiko.Message(kexinit.asbytes()))  # type: ignore[attr-defined]
    assert offered["kex_algo_list"] == ["no-such-kex"]


def test_a_cipher_mismatch_names_both_sides(transport: paramiko.Transport) -> None:
    options = transport.get_security_options()
    offered = {
        "kex_algo_list": [*options.kex, "ext-info-s", "kex-strict-s-v00@openssh.com"],
        "server_key_algo_list": list(options.key_types),
        "server_encrypt_algo_list": ["rijndael-cbc@lysator.liu.se"],
    }
    found = negotiation_mismatch(offered, options)
    assert found is not None
    assert found.startswith("no cipher in common: the server offers rijndael-cbc@lysator.liu.se;")
    assert found.endswith(", ".join(options.ciphers))
    offered["server_encrypt_algo_list"] = list(options.ciphers)
    assert negotiation_mismatch(offered, options) is None


def test_shlex_quote_is_how_the_wrapper_quotes() -> None:
    assert shlex.quote("it's") in wrap("it's")
