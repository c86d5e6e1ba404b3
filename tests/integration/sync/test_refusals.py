"""A refused file is the design working, not a failure: `sync --dry-run` shows it as refused,
`sync` sends the rest and exits 0 with a warning, `verify` lists it as refused and not as drift.
Against the real sshd; the refusal here is by content (a pasted private key block)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon_process import DaemonProcess, opswatch
from helpers import wait_until
from opswatch.demo.sshd import LocalSshd

pytestmark = pytest.mark.sshd

WriteConfig = Callable[..., Path]
KEYS = "docs/ops/runbooks/keys.md"
KEY_BLOCK = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)


@pytest.fixture
def config(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> Path:
    (repo / KEYS).write_text("# notes pasted in a hurry\n" + KEY_BLOCK)
    return write_config(repo, sshd_server, remote_root)


def test_dry_run_shows_a_key_holding_file_as_refused_not_as_an_upload(config: Path) -> None:
    done = opswatch(config, "sync", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"upload    {KEYS}" not in done.stdout
    assert f"refused   {KEYS} (holds a private key block)" in done.stdout
    plan = json.loads(opswatch(config, "sync", "--dry-run", "--json").stdout)
    assert KEYS not in [u["path"] for u in plan["upload"]]
    assert {"path": KEYS, "reason": "holds a private key block", "refusal": "private-key"} in plan[
        "refused"
    ]


def test_sync_sends_the_rest_and_exits_0_with_a_warning(config: Path, remote_root: Path) -> None:
    done = opswatch(config, "sync")
    assert done.returncode == 0, done.stderr
    assert f"warning: refused: {KEYS}: holds a private key block" in done.stderr
    assert "1 refused" in done.stdout
    assert not (remote_root / KEYS).exists()
    assert (remote_root / "docs/ops/runbooks/deploy.md").is_file()


def test_verify_lists_it_as_refused_and_not_as_drift(config: Path) -> None:
    assert opswatch(config, "sync").returncode == 0
    done = opswatch(config, "verify", "--json")
    report = json.loads(done.stdout)
    assert report["refused"] == [{"path": KEYS, "reason": "holds a private key block"}]
    assert KEYS not in [m["path"] for m in report["missing"]]
    text = opswatch(config, "verify")
    assert f"REFUSED  {KEYS}  (holds a private key block)" in text.stdout
    assert f"MISSING  {KEYS}" not in text.stdout
    # The seed's gateway build copies sources no rule sends (a build gap, exit 1); the runbooks
    # alone have no gap: there the refusal leaves verify at exit 0.
    runbooks = opswatch(config, "verify", str(config.parent / "docs/ops/runbooks"))
    assert runbooks.returncode == 0, runbooks.stdout + runbooks.stderr


def test_the_daemon_lists_it_in_status_refused_until_the_file_changes(
    config: Path, repo: Path, remote_root: Path, tmp_path: Path
) -> None:
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        status = daemon.wait_for(
            lambda s: any(r["path"] == KEYS for r in s["refused"]), "the refusal in status"
        )
        assert {"path": KEYS, "reason": "holds a private key block"} in status["refused"]
        assert status["last_error"] is None  # a refusal is not an error
        (repo / KEYS).write_text("# notes, the key taken out\n")
        daemon.wait_for(lambda s: all(r["path"] != KEYS for r in s["refused"]), "the refusal gone")
        wait_until(lambda: (remote_root / KEYS).is_file(), 20, message="the cleaned file lands")
    finally:
        daemon.close()
