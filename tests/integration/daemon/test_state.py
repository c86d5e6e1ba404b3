"""State that can't crash-loop: `opswatch run` over a corrupt pause flag, a truncated manifest
or a state folder it can't write says so in one line, and never crashes at the next start."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import test_control
from test_control import RUNBOOK, StartDaemon, edit, remote_of

from daemon_process import opswatch, opswatch_command
from helpers import wait_until
from opswatch.paths import state_paths

pytestmark = pytest.mark.sshd

start_daemon = test_control.start_daemon  # the fixture, shared


@pytest.mark.parametrize(
    "flag",
    [b'{"until": 8640000001750000000}', b'{"until": 17500', b"\x00\x01garbage", b"[]"],
    ids=["100000000d", "truncated", "garbage", "wrong-shape"],
)
def test_a_bad_pause_flag_is_discarded_with_a_warning(
    start_daemon: StartDaemon, repo: Path, remote_root: Path, flag: bytes
) -> None:
    daemon = start_daemon()
    assert daemon.stop() == 0
    daemon.paths.pause_file.write_bytes(flag)
    for _ in range(2):  # and the start after that one is a normal start
        daemon = start_daemon()
        status = daemon.wait_for(lambda s: s["state"] == "watching", "watching, not paused")
        assert status["paused_until"] is None
        assert daemon.stop() == 0
    first_log = daemon.log.with_name("daemon-1.log").read_text()
    assert '"event": "pause_flag_discarded"' in first_log
    assert "Traceback" not in first_log
    assert '"event": "pause_flag_discarded"' not in daemon.text


def test_a_truncated_manifest_is_moved_aside_and_syncing_goes_on(
    start_daemon: StartDaemon, repo: Path, remote_root: Path
) -> None:
    daemon = start_daemon()
    assert daemon.stop() == 0
    manifest = daemon.paths.manifest
    data = manifest.read_bytes()
    manifest.write_bytes(data[: len(data) // 2])
    daemon = start_daemon()
    assert daemon.events("manifest_corrupt") and "Traceback" not in daemon.text
    assert [p.name for p in manifest.parent.glob("manifest.sqlite.corrupt-*")]
    edit(repo, RUNBOOK, "# after the manifest was lost\n")
    wait_until(
        lambda: remote_of(remote_root, RUNBOOK).read_text() == "# after the manifest was lost\n",
        message="the edit to land",
    )
    assert daemon.stop() == 0
    daemon = start_daemon()
    assert not daemon.events("manifest_corrupt")


def run_with_state(config: Path, state: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OPSWATCH_STATE_DIR=str(state))
    return subprocess.run(
        [*prefix, *opswatch_command(), "--config", str(config), "run"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_a_state_folder_that_cannot_be_created_is_one_error_line(
    repo: Path, sshd_server, remote_root: Path, write_config, tmp_path: Path
) -> None:
    config = write_config(repo, sshd_server, remote_root)
    (tmp_path / "a-file").write_text("not a folder\n")
    done = run_with_state(config, tmp_path / "a-file")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: cannot use the state folder ")
    assert "Not a directory" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_state_folder_that_cannot_be_written_is_one_error_line(
    repo: Path, sshd_server, remote_root: Path, write_config, tmp_path: Path
) -> None:
    config = write_config(repo, sshd_server, remote_root)
    base = tmp_path / "read-only"
    base.mkdir()
    base.chmod(0o555)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root writes anywhere unless it drops the capabilities that allow it
        if shutil.which("setpriv") is None:
            pytest.fail("setpriv (util-linux) is needed to run opswatch as a root bound by modes")
        prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--")
    done = run_with_state(config, base, *prefix)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: cannot use the state folder ")
    assert "Permission denied" in done.stderr and "Traceback" not in done.stderr
    base.chmod(0o755)
    assert not state_paths(config).socket.exists()
    assert opswatch(config, "status").returncode == 3
