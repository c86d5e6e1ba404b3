"""The remote's file errors against a real sshd: a missing file is a type, not a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import WriteConfig
from opswatch.config import load_config
from opswatch.demo.sshd import LocalSshd
from opswatch.errors import RemoteFileError, RemoteFileMissing
from opswatch.ssh.remote import connected_remote


def test_a_missing_file_is_remote_file_missing_everywhere(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> None:
    config = load_config(write_config(repo, sshd_server, remote_root))
    missing = str(remote_root / "not-there")
    with connected_remote(config.remote) as remote:
        with pytest.raises(RemoteFileMissing):
            remote.read(missing)
        remote.remove(missing)  # already gone is what a remove wants
        assert remote.list_folder(missing) == {}
        assert remote.stat_many([missing, str(remote_root)])[missing] is None


def test_other_file_errors_are_not_taken_for_missing(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> None:
    config = load_config(write_config(repo, sshd_server, remote_root))
    with connected_remote(config.remote) as remote:
        with pytest.raises(RemoteFileError) as caught:
            remote.read(str(remote_root))  # a folder: the server refuses the read
        assert not isinstance(caught.value, RemoteFileMissing)
        assert remote.connected  # one file failed; the link is fine


def test_connected_remote_closes_after_the_job_even_when_it_fails(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> None:
    config = load_config(write_config(repo, sshd_server, remote_root))
    with pytest.raises(RemoteFileMissing), connected_remote(config.remote) as remote:
        assert remote.connected
        remote.read(str(remote_root / "not-there"))
    assert not remote.connected
