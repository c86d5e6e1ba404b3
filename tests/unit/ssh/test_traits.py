"""What the uploader assumes of a server: only OpenSSH that answered ``limits@openssh.com``."""

from __future__ import annotations

import pytest
from paramiko.message import Message
from paramiko.sftp import CMD_EXTENDED_REPLY, CMD_STATUS

from opswatch.ssh.traits import MAX_FILES, SAFE_FILES, UNKNOWN, ServerTraits, from_limits

OPENSSH = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"


def limits(handles: int) -> Message:
    msg = Message()
    for value in (256 * 1024, 255 * 1024, 255 * 1024, handles):
        msg.add_int64(value)
    msg.rewind()
    return msg


def unsupported() -> Message:
    msg = Message()
    msg.add_int(8)  # SSH_FX_OP_UNSUPPORTED
    msg.add_string("unsupported")
    msg.add_string("")
    msg.rewind()
    return msg


@pytest.mark.parametrize(
    ("banner", "kind", "msg", "expected"),
    [
        (OPENSSH, CMD_EXTENDED_REPLY, limits(1019), ServerTraits(1019 - 16)),
        (OPENSSH, CMD_EXTENDED_REPLY, limits(0), ServerTraits(SAFE_FILES)),
        (OPENSSH, CMD_EXTENDED_REPLY, limits(1 << 20), ServerTraits(MAX_FILES)),
        (OPENSSH, CMD_EXTENDED_REPLY, limits(3), ServerTraits(1)),
        # An OpenSSH that does not know the request (before 8.6): the handle limit is unknown.
        (OPENSSH, CMD_STATUS, unsupported(), UNKNOWN),
        # Another server that answers it: its reply is not known to mean what OpenSSH's does.
        ("SSH-2.0-Go", CMD_EXTENDED_REPLY, limits(1019), UNKNOWN),
        ("SSH-2.0-dropbear_2022.83", CMD_STATUS, unsupported(), UNKNOWN),
    ],
)
def test_only_openssh_that_answers_limits_sets_the_files_in_flight(
    banner: str, kind: int, msg: Message, expected: ServerTraits
) -> None:
    assert from_limits(banner, kind, msg) == expected


def test_unknown_servers_get_a_modest_number_of_files_in_flight() -> None:
    assert UNKNOWN.max_files == SAFE_FILES
