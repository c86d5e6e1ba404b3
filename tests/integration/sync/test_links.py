"""Symlinks in daily use: a followed link goes again when its target changes; a link that is
not followed (a folder, or one leading outside) is named by `sync --dry-run` and `status`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import StartDaemon, WriteConfig
from daemon_process import opswatch
from helpers import wait_until
from opswatch.demo.sshd import LocalSshd

pytestmark = pytest.mark.sshd

RUNBOOKS = "docs/ops/runbooks"


def test_editing_a_links_target_sends_the_link_again(
    repo: Path,
    sshd_server: LocalSshd,
    remote_root: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
) -> None:
    (repo / RUNBOOKS / "latest.md").symlink_to("deploy.md")
    config = write_config(repo, sshd_server, remote_root)
    daemon = start_daemon(config)
    latest, deploy = remote_root / RUNBOOKS / "latest.md", remote_root / RUNBOOKS / "deploy.md"
    assert latest.read_bytes() == (repo / RUNBOOKS / "deploy.md").read_bytes()
    (repo / RUNBOOKS / "deploy.md").write_text("# deploy, second version\n")
    wait_until(lambda: latest.read_text() == "# deploy, second version\n")
    assert deploy.read_text() == "# deploy, second version\n"
    assert not latest.is_symlink(), "the server gets the content, as before"
    # An atomic save (write a temp, rename it over the target) is a change to the target too.
    temp = repo / RUNBOOKS / ".deploy.md.swp-like"
    temp.write_text("# deploy, third version\n")
    temp.replace(repo / RUNBOOKS / "deploy.md")
    wait_until(lambda: latest.read_text() == "# deploy, third version\n")
    wait_until(lambda: daemon.status().pending == 0)
    verified = opswatch(config, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_links_not_followed_are_named_by_dry_run_and_status(
    repo: Path,
    sshd_server: LocalSshd,
    remote_root: Path,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "notes.md").write_text("elsewhere\n")
    (repo / RUNBOOKS / "shared").symlink_to(outside)  # a folder link leading outside
    (repo / RUNBOOKS / "archive").mkdir()
    (repo / RUNBOOKS / "archive/2025.md").write_text("old\n")
    (repo / RUNBOOKS / "old").symlink_to("archive")  # a folder link inside: not walked
    config = write_config(repo, sshd_server, remote_root)

    dry = opswatch(config, "sync", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"refused   {RUNBOOKS}/shared (symlink leads outside docs/ops/)" in dry.stdout
    assert (
        f"refused   {RUNBOOKS}/old (symlink to the folder {RUNBOOKS}/archive/: "
        "a linked folder is not walked)"
    ) in dry.stdout
    plan = json.loads(opswatch(config, "sync", "--dry-run", "--json").stdout)
    skipped = {s["path"] for s in plan["skipped"]}
    assert {f"{RUNBOOKS}/shared", f"{RUNBOOKS}/old"} <= skipped

    daemon = start_daemon(config)
    refused = {r["path"]: r["reason"] for r in daemon.status().to_json()["refused"]}  # type: ignore[union-attr]
    assert refused[f"{RUNBOOKS}/shared"] == "symlink leads outside docs/ops/"
    assert refused[f"{RUNBOOKS}/old"].startswith("symlink to the folder")
    assert (remote_root / RUNBOOKS / "archive/2025.md").read_text() == "old\n"
    assert not (remote_root / RUNBOOKS / "old").exists()
    assert not (remote_root / RUNBOOKS / "shared").exists()
    # A folder link made while the daemon runs is named too.
    (repo / RUNBOOKS / "older").symlink_to("archive")
    wait_until(
        lambda: any(
            r["path"] == f"{RUNBOOKS}/older"
            for r in daemon.status().to_json()["refused"]  # type: ignore[union-attr]
        )
    )
