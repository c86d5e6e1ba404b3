"""Nothing is lost on the server: a delete is checked like an upload, an unreadable folder is
"unknown" (never "empty"), and a lost manifest is rebuilt by comparing content, not trusted."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import WriteConfig
from daemon_process import opswatch, opswatch_command
from opswatch.demo.sshd import LocalSshd
from opswatch.paths import state_paths

pytestmark = pytest.mark.sshd

RUNBOOKS = "docs/ops/runbooks"
HOTFIX = "# Deploy\n\nhotfix made on the server at 3 a.m.\n"


def sync(config: Path, *args: str) -> tuple[int, str]:
    done = opswatch(config, "sync", *args)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def synced(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> Path:
    (repo / RUNBOOKS / "rollback.md").write_text("# Rollback\n")
    config = write_config(repo, sshd_server, remote_root, sync={"delete": True})
    code, output = sync(config)
    assert code == 0, output
    return config


def test_a_file_edited_on_the_server_is_not_deleted_by_a_local_delete(
    synced: Path, repo: Path, remote_root: Path
) -> None:
    there = remote_root / RUNBOOKS / "deploy.md"
    there.write_text(HOTFIX)
    (repo / RUNBOOKS / "deploy.md").unlink()
    (repo / RUNBOOKS / "rollback.md").unlink()  # unchanged on the server: removed
    code, output = sync(synced)
    assert code == 1, output
    assert there.read_text() == HOTFIX
    assert f"error: {there} changed on the server; not overwritten" in output
    assert not (remote_root / RUNBOOKS / "rollback.md").exists()
    code, output = sync(synced, "--force")  # the user's call: saved first, then removed
    assert code == 0, output
    assert not there.exists()
    [saved] = state_paths(synced).conflicts.rglob("deploy.md")
    assert saved.read_text() == HOTFIX


def test_an_unreadable_folder_is_unknown_not_empty(
    synced: Path, repo: Path, remote_root: Path
) -> None:
    runbooks = repo / RUNBOOKS
    runbooks.chmod(0)
    try:
        done = subprocess.run(
            [*_without_file_permission_override(), *opswatch_command(), "-c", str(synced), "sync"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        runbooks.chmod(0o755)
    assert "Traceback" not in done.stderr, done.stderr
    assert (remote_root / RUNBOOKS / "deploy.md").exists()
    assert (remote_root / RUNBOOKS / "rollback.md").exists()
    assert "0 removed" in done.stdout, done.stdout + done.stderr
    assert f"refused: {RUNBOOKS}/: cannot read the folder" in done.stderr


def _without_file_permission_override() -> list[str]:
    """Root reads any folder whatever its mode; drop the capabilities that let it."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to make a folder unreadable to root")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def test_a_lost_manifest_keeps_server_edits_as_conflicts(
    synced: Path, repo: Path, remote_root: Path
) -> None:
    there = remote_root / RUNBOOKS / "deploy.md"
    there.write_text(HOTFIX)
    manifest = state_paths(synced).manifest
    for leftover in manifest.parent.glob(manifest.name + "*"):
        if not leftover.name.endswith(".synced"):  # the record that a sync once happened stays
            leftover.unlink()
    code, output = sync(synced)
    assert code == 1, output
    assert there.read_text() == HOTFIX  # not overwritten
    assert output.count("changed on the server") == 1  # the equal copies were adopted
    code, output = sync(synced)
    assert (code, output.count("changed on the server")) == (1, 1), output  # still, until --force
    code, output = sync(synced, "--force")
    assert code == 0, output
    assert there.read_text() == (repo / RUNBOOKS / "deploy.md").read_text()
    [saved] = state_paths(synced).conflicts.rglob("deploy.md")
    assert saved.read_text() == HOTFIX


def test_the_first_sync_of_a_config_still_overwrites(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> None:
    there = remote_root / RUNBOOKS / "deploy.md"
    there.parent.mkdir(parents=True)
    there.write_text("what the manual procedure left\n")
    config = write_config(repo, sshd_server, remote_root)
    code, output = sync(config)
    assert code == 0, output
    assert there.read_text() == (repo / RUNBOOKS / "deploy.md").read_text()
