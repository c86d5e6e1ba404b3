"""What ssh/_compat.py borrows from paramiko still works as borrowed: these fail on an upgrade
that changes it, before a burst of uploads does."""

from __future__ import annotations

import inspect
import socket
import threading
from collections.abc import Iterator

import paramiko
import paramiko.sftp
import pytest
from paramiko.message import Message

from opswatch.ssh import _compat
from opswatch.ssh.wire import packed_attrs


@pytest.fixture
def transport() -> Iterator[paramiko.Transport]:
    ours, theirs = socket.socketpair()
    made = paramiko.Transport(ours)  # not started: no thread, nothing sent
    yield made
    ours.close()
    theirs.close()


def source(function: object) -> str:
    return inspect.getsource(function)  # type: ignore[arg-type]


def test_the_client_numbers_requests_under_the_lock_the_wire_takes() -> None:
    assert "self._lock" in source(paramiko.SFTPClient._async_request)
    assert "self.request_number" in source(paramiko.SFTPClient._async_request)
    client = paramiko.SFTPClient.__new__(paramiko.SFTPClient)
    client._lock = threading.Lock()  # what SFTPClient.__init__ sets
    client.request_number = 7
    assert _compat.next_request_number(client) == 7
    assert client.request_number == 8
    assert "self.request_number = 1" in source(paramiko.SFTPClient.__init__)
    assert "self._lock = threading.Lock()" in source(paramiko.SFTPClient.__init__)


def test_attributes_round_trip_through_paramikos_own_encoding() -> None:
    attrs = paramiko.SFTPAttributes()
    attrs.st_size = 1 << 33
    attrs.st_mode = 0o100644
    attrs.st_atime = attrs.st_mtime = 1_700_000_000
    msg = Message()
    _compat.pack_attrs(attrs, msg)
    assert packed_attrs(attrs) == msg.asbytes()  # the wire's fast path encodes as paramiko does
    msg.rewind()
    back = _compat.attrs_from_msg(msg, "name", "longname")
    assert (back.st_size, back.st_mode, back.st_mtime) == (1 << 33, 0o100644, 1_700_000_000)
    assert back.filename == "name"


def test_packet_payload_is_what_paramiko_puts_in_one_packet() -> None:
    assert "out_max_packet_size - 64" in source(paramiko.Channel._wait_for_send_window)
    channel = paramiko.Channel(1)
    assert _compat.packet_payload(channel) == 0  # not open yet: the wire picks its own size
    channel.out_max_packet_size = 32768
    assert _compat.packet_payload(channel) == 32768 - 64
    assert _compat.packet_payload(None) == 0


def test_the_exit_status_event_is_what_paramiko_sets(transport: paramiko.Transport) -> None:
    channel = paramiko.Channel(1)
    channel._set_transport(transport)
    assert not _compat.wait_exit_status(channel, 0)
    request = Message()
    request.add_string("exit-status")
    request.add_boolean(False)
    request.add_int(3)
    request.rewind()
    channel._handle_request(request)  # what the transport thread calls for the server's reply
    assert _compat.wait_exit_status(channel, 0)
    assert channel.exit_status == 3


def test_the_transport_polls_with_its_sockets_timeout(transport: paramiko.Transport) -> None:
    assert "self.sock.settimeout" in source(paramiko.Transport.__init__)
    _compat.set_transport_poll(transport, 1.0)
    assert transport.sock.gettimeout() == 1.0
    assert _compat.remote_cipher(transport) == "?"  # nothing negotiated yet


def test_sftp_talks_to_its_channel_only_by_send_and_recv() -> None:
    """connect.SftpChannel stands in for the channel and times requests by these two calls."""
    assert "self.sock.send(" in source(paramiko.sftp.BaseSFTP._write_all)
    assert "self.sock.recv(" in source(paramiko.sftp.BaseSFTP._read_all)


def test_the_protocol_constants_the_wire_imports_are_there() -> None:
    expected = {
        "CMD_OPEN": 3,
        "CMD_CLOSE": 4,
        "CMD_WRITE": 6,
        "CMD_FSETSTAT": 10,
        "CMD_REMOVE": 13,
        "CMD_MKDIR": 14,
        "CMD_STAT": 17,
        "CMD_STATUS": 101,
        "CMD_HANDLE": 102,
        "CMD_ATTRS": 105,
        "CMD_EXTENDED": 200,
        "SFTP_OK": 0,
        "SFTP_NO_SUCH_FILE": 2,
        "SFTP_PERMISSION_DENIED": 3,
        "SFTP_FLAG_WRITE": 0x02,
        "SFTP_FLAG_CREATE": 0x08,
        "SFTP_FLAG_TRUNC": 0x10,
    }
    assert {name: getattr(paramiko.sftp, name) for name in expected} == expected
    assert issubclass(paramiko.sftp.int64, int)
