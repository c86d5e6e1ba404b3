"""A state folder that can't be made or written is one `StateError` (exit 2), not a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opswatch.daemon.lock import DaemonLock
from opswatch.errors import AlreadyRunningError, StateError
from opswatch.paths import StatePaths


def test_a_state_folder_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder\n")
    paths = StatePaths(tmp_path / "file" / "state", tmp_path / "file" / "state")
    with pytest.raises(StateError, match=r"cannot use the state folder .*: Not a directory") as e:
        paths.ensure()
    assert e.value.exit_code == 2 and "OPSWATCH_STATE_DIR" in str(e.value)


def test_the_lock_file_holding_garbage_names_no_pid(tmp_path: Path) -> None:
    lock_file = tmp_path / "daemon.lock"
    with DaemonLock(lock_file, "/a/b.toml"):
        os.truncate(lock_file, 0)
        lock_file.write_bytes(b"\xff\x00 not a pid")
        with pytest.raises(AlreadyRunningError, match=r"\(pid unknown\)"):
            DaemonLock(lock_file, "/a/b.toml").acquire()


def test_a_lock_file_that_cannot_be_opened_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "daemon.lock").mkdir()
    with pytest.raises(StateError, match="cannot open the lock file"):
        DaemonLock(tmp_path / "daemon.lock", "/a/b.toml").acquire()
