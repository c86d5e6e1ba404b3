"""Per-file failures on the server fail that file alone, say which file and why, and stay bounded.

The server is OpenSSH's own sftp-server behind a private sshd, started through a wrapper script
that injects failures the kernel itself produces, under root as under any other user:

* a full disk: the sftp-server runs with a soft file-size limit and SIGXFSZ ignored, so a write
  past the limit fails with EFBIG, which OpenSSH answers exactly as it answers ENOSPC (a bare
  SSH2_FX_FAILURE). `FailingServer.give_room` raises the limit of the running servers, as
  freeing disk space would: the connection stays as it is.
* permission denied: a remote folder of mode 0555. Root would write there anyway
  (CAP_DAC_OVERRIDE), so under root the wrapper drops the capabilities that bypass file
  permissions from the server's bounding set: it is still uid 0, now bound by the mode bits.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs
from test_faults import RUNBOOKS, count_lost, landed, temp_files, write_files

from conftest import MakeSshd, WriteConfig
from daemon_process import opswatch
from engine_thread import EngineThread
from helpers import wait_until
from opswatch.demo.sshd import LocalSshd, find_sftp_server

# The daemon's retry interval for failed files here (30 s by default); longer than the engine's
# idle tick of 1 s, so that retrying at every tick would show.
RETRY_S = 1.5
# 64 KiB in the 512-byte blocks POSIX sh counts in (bash, if it is sh, counts 1 KiB blocks)
LIMIT_BLOCKS = 128
BIG = 1024 * 1024  # does not fit under the limit either way
FULL_DISK = "the server refused the write (disk full or quota?)"

WRAPPER = """\
#!/bin/sh
# OpenSSH's sftp-server on a "disk" that is full past {limit} blocks per file.
trap '' XFSZ
ulimit -S -f {limit}
echo $$ >> '{pids}'
if [ "$(id -u)" = 0 ]; then
    exec setpriv --bounding-set=-dac_override,-dac_read_search,-fowner '{server}'
fi
exec '{server}'
"""


@dataclass
class FailingServer:
    sshd: LocalSshd
    pids: Path  # one line per sftp-server started (the wrapper's pid is the server's)

    def give_room(self) -> int:
        """Lift the file-size limit of the running sftp-servers; returns how many there were."""
        lifted = 0
        for pid in map(int, self.pids.read_text().split()):
            with contextlib.suppress(OSError):  # gone, or its pid already someone else's
                if Path(f"/proc/{pid}/comm").read_text().strip() != "sftp-server":
                    continue
                _soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
                lifted += 1
        return lifted


@pytest.fixture
def failing(make_sshd: MakeSshd, tmp_path: Path) -> FailingServer:
    server = find_sftp_server()
    if server is None:
        pytest.fail("OpenSSH's sftp-server was not found (package openssh-sftp-server)")
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to bind a root sftp-server by file modes")
    pids = tmp_path / "sftp-server.pids"
    pids.touch()
    wrapper = tmp_path / "sftp-server-full-disk"
    wrapper.write_text(WRAPPER.format(limit=LIMIT_BLOCKS, pids=pids, server=server))
    wrapper.chmod(0o755)
    return FailingServer(make_sshd(sftp_command=str(wrapper)), pids)


@contextlib.contextmanager
def logged_events() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event while active, each with `at`: the monotonic time it was logged."""

    def stamp(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
        event["at"] = time.monotonic()
        return event

    with capture_logs() as events:
        # capture_logs keeps the one processor list every logger holds: stamp, then capture.
        structlog.get_config()["processors"].insert(0, stamp)
        yield events


def attempts(events: list[MutableMapping[str, Any]], path: str) -> list[float]:
    """When each failed upload of `path` was logged."""
    return [e["at"] for e in events if e["event"] == "upload_failed" and e.get("path") == path]


def assert_fails_alone(
    engine: EngineThread,
    events: list[MutableMapping[str, Any]],
    path: str,
    cause: str,
    good: dict[str, bytes],
    remote_root: Path,
) -> None:
    """The others land; status names the file and cause; retries stay at the retry interval."""
    wait_until(lambda: landed(remote_root, good), message="the other files to land")
    failed = engine.wait_for(
        lambda s: s["last_error"] and path in s["last_error"], f"{path} to be reported"
    )
    assert cause in failed["last_error"]
    assert "\n" not in failed["last_error"] and "Traceback" not in failed["last_error"]
    assert path in failed["pending_paths"]
    assert failed["connected"] is True
    assert failed["state"] in ("watching", "syncing")  # the connection is fine
    # Retried while it keeps failing, and logged once per attempt: at the interval, no faster.
    wait_until(lambda: len(attempts(events, path)) >= 3, timeout=30, message="two retries")
    times = attempts(events, path)
    assert min(later - earlier for earlier, later in pairwise(times)) >= RETRY_S
    assert engine.status()["connected"] is True
    # The engine answers between passes: once paused, nothing is in flight.
    engine.request("pause")
    assert temp_files(remote_root) == []
    assert path in engine.status()["pending_paths"]
    engine.request("resume")


def recovers(engine: EngineThread, remote_root: Path, files: dict[str, bytes]) -> dict[str, Any]:
    """The next retry delivers what failed; then nothing is pending and no error is shown."""
    wait_until(lambda: landed(remote_root, files), message="the failed file to land")
    return engine.wait_for(
        lambda s: s["pending"] == 0 and s["last_error"] is None, "the error to clear"
    )


# -- the daemon ------------------------------------------------------------------------------


def test_a_full_disk_fails_only_the_file_that_does_not_fit(
    failing: FailingServer, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    config = write_config(repo, failing.sshd, remote_root)
    big = {f"{RUNBOOKS}/big.bin": os.urandom(BIG)}
    with logged_events() as events, EngineThread(config, failed_retry_s=RETRY_S) as engine:
        engine.wait_synced()
        good = write_files(repo, 4, 300, "fits")
        (repo / RUNBOOKS / "big.bin").write_bytes(big[f"{RUNBOOKS}/big.bin"])
        assert_fails_alone(engine, events, f"{RUNBOOKS}/big.bin", FULL_DISK, good, remote_root)
        assert not (remote_root / RUNBOOKS / "big.bin").exists()
        assert failing.give_room() >= 1  # space freed on the server; same connection
        done = recovers(engine, remote_root, big)
    assert done["uploaded"] >= len(good) + 1
    assert count_lost(remote_root, {**good, **big}) == 0
    assert temp_files(remote_root) == []


def test_permission_denied_fails_only_the_file_in_the_locked_folder(
    failing: FailingServer, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    locked = remote_root / RUNBOOKS / "locked"
    locked.mkdir(parents=True)
    locked.chmod(0o555)  # e.g. owned by another account on the server
    (repo / RUNBOOKS / "locked").mkdir()  # now, so that its file comes as one change later
    config = write_config(repo, failing.sshd, remote_root)
    notes = {f"{RUNBOOKS}/locked/notes.md": b"cannot land until the folder is writable\n"}
    with logged_events() as events, EngineThread(config, failed_retry_s=RETRY_S) as engine:
        engine.wait_synced()
        good = write_files(repo, 4, 300, "allowed")
        (repo / RUNBOOKS / "locked/notes.md").write_bytes(notes[f"{RUNBOOKS}/locked/notes.md"])
        assert_fails_alone(
            engine,
            events,
            f"{RUNBOOKS}/locked/notes.md",
            "permission denied",
            good,
            remote_root,
        )
        locked.chmod(0o755)
        recovers(engine, remote_root, notes)
    assert count_lost(remote_root, {**good, **notes}) == 0
    assert temp_files(remote_root) == []


# -- opswatch sync ---------------------------------------------------------------------------


def test_sync_reports_each_failing_file_on_one_line_and_sends_the_rest(
    failing: FailingServer, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    locked = remote_root / RUNBOOKS / "locked"
    locked.mkdir(parents=True)
    locked.chmod(0o555)
    good = write_files(repo, 5, 300, "fine")
    (repo / RUNBOOKS / "big.bin").write_bytes(os.urandom(BIG))
    (repo / RUNBOOKS / "locked").mkdir()
    (repo / RUNBOOKS / "locked/notes.md").write_text("not yet\n")
    config = write_config(repo, failing.sshd, remote_root)

    done = opswatch(config, "sync")
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    expected: dict[str, Callable[[str], bool]] = {
        "big.bin": lambda line: FULL_DISK in line,
        "locked/notes.md": lambda line: "permission denied" in line,
    }
    assert len(errors) == len(expected), done.stderr
    for name, says_why in expected.items():
        (line,) = [e for e in errors if f"{RUNBOOKS}/{name}:" in e]
        assert says_why(line), line
    assert "Traceback" not in done.stderr
    assert landed(remote_root, good)
    assert not (remote_root / RUNBOOKS / "big.bin").exists()
    assert temp_files(remote_root) == []

    # Once the causes are gone, the next sync sends exactly what failed.
    (repo / RUNBOOKS / "big.bin").write_bytes(b"small enough now\n")
    locked.chmod(0o755)
    again = opswatch(config, "sync")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("2 uploaded"), again.stdout
    assert (remote_root / RUNBOOKS / "locked/notes.md").read_text() == "not yet\n"


def test_a_small_file_whose_write_fails_leaves_the_server_copy_whole(
    failing: FailingServer, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    """One write holds the whole file and the server refuses it (disk full): the rename must
    not follow, or the target would be replaced by the part that fit (OpenSSH's sftp-server
    serves a channel's requests in order, so a rename sent with the close would run)."""
    config = write_config(repo, failing.sshd, remote_root)
    assert opswatch(config, "sync").returncode == 0
    deploy = remote_root / RUNBOOKS / "deploy.md"
    before = deploy.read_bytes()
    (repo / RUNBOOKS / "deploy.md").write_bytes(os.urandom(100 * 1024))  # over 64 KiB, one write
    done = opswatch(config, "sync")
    assert done.returncode == 1, done.stderr
    assert FULL_DISK in done.stderr
    assert deploy.read_bytes() == before
    assert temp_files(remote_root) == []


def test_a_folder_where_a_file_goes_is_named_as_the_likely_cause(
    sshd_server: LocalSshd, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    # Renaming onto a folder fails with a bare SSH2_FX_FAILURE, as a full disk does.
    in_the_way = remote_root / RUNBOOKS / "deploy.md"
    (in_the_way / "kept.md").parent.mkdir(parents=True)
    (in_the_way / "kept.md").write_text("someone's folder\n")
    good = write_files(repo, 3, 300, "fine")
    config = write_config(repo, sshd_server, remote_root)
    done = opswatch(config, "sync")
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"error: {RUNBOOKS}/deploy.md: ")
    assert "is there a folder of that name?" in errors[0]
    assert landed(remote_root, good)
    assert (in_the_way / "kept.md").read_text() == "someone's folder\n"
    assert temp_files(remote_root) == []
