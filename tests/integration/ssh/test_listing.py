"""Folder listings pipelined across folders, against a real sshd."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_upload import connect

from opswatch.demo.sshd import LocalSshd
from opswatch.errors import RemoteFileError
from opswatch.ssh import listing
from opswatch.ssh.remote import SshRemote


@pytest.fixture
def remote(sshd_server: LocalSshd) -> Iterator[SshRemote]:
    connected = connect(sshd_server)
    yield connected
    connected.close()


def test_many_folders_at_once_each_complete(
    remote: SshRemote, remote_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fewer folders in flight than folders, so that later ones start as earlier ones end.
    monkeypatch.setattr(listing, "FOLDERS_IN_FLIGHT", 7)
    expected: dict[str, dict[str, int]] = {}
    for index in range(30):
        folder = remote_root / f"area{index:02d}"
        folder.mkdir()
        (folder / "sub").mkdir()  # folders are not listed as files
        os.symlink("/etc/hostname", folder / "link")  # nor are links
        count = 350 if index == 3 else index  # several READDIR pages; an empty folder
        for name in range(count):
            (folder / f"f{name}.yml").write_bytes(b"x" * name)
        expected[str(folder)] = {f"f{name}.yml": name for name in range(count)}
    missing = str(remote_root / "not-there")
    order = [*sorted(expected), missing]
    seen = dict(remote.list_folders(order))
    assert set(seen) == set(order)
    assert seen[missing] == {}
    for folder, files in expected.items():
        assert {name: f.size for name, f in seen[folder].items()} == files
    # Listed folders are known to exist: an upload into them makes no MKDIR.
    assert set(expected) <= remote._folders
    assert missing not in remote._folders


def test_a_folder_that_cannot_be_listed_raises_after_the_others(
    remote: SshRemote, remote_root: Path
) -> None:
    (remote_root / "fine").mkdir()
    (remote_root / "fine" / "a").write_text("a\n")
    # A name no filesystem takes (ENAMETOOLONG): an error that binds root too, unlike modes.
    folders = [str(remote_root / ("n" * 300)), str(remote_root / "fine")]
    with pytest.raises(RemoteFileError) as raised:
        list(remote.list_folders(folders))
    assert raised.value.path == folders[0]
    # Every request was answered: the connection is usable as it was.
    assert dict(remote.list_folders(folders[1:]))[folders[1]].keys() == {"a"}
    assert remote.connected
