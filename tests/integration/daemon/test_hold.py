"""The big-batch guard: a burst over `sync.hold_over`, or a branch switch, waits for `flush`.

The daemon is the real `opswatch run` against the session's sshd; `status`, `sync --dry-run` and
`flush` are the real CLI. The git state helpers are checked on their own first.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon_process import DaemonProcess, opswatch
from helpers import wait_until
from opswatch.demo.sshd import LocalSshd
from opswatch.local.gitstate import HeadWatch, find_git_dir

WriteConfig = Callable[..., Path]
StartDaemon = Callable[..., DaemonProcess]
DOCKERFILE = "docs/ops/Dockerfile.demo"


@pytest.fixture
def start_daemon(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig, tmp_path: Path
) -> Iterator[StartDaemon]:
    started: list[DaemonProcess] = []

    def start(**sync: object) -> DaemonProcess:
        # A long max delay: the burst must arrive as one batch even on a loaded machine.
        settings = {"debounce_ms": 200, "max_delay_ms": 5000, **sync}
        config = write_config(repo, sshd_server, remote_root, sync=settings)
        daemon = DaemonProcess(config, tmp_path / f"daemon-{len(started)}.log")
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.close()


def is_held(count: int) -> Callable[[dict[str, object]], bool]:
    return lambda status: status["state"] == "held" and status["held"] == count


def git(repo: Path, *args: str) -> None:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
        GIT_CONFIG_GLOBAL=os.devnull,
    )
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


# -- the burst -------------------------------------------------------------------------------


@pytest.mark.sshd
def test_a_150_file_burst_is_held_until_flush(
    repo: Path, remote_root: Path, start_daemon: StartDaemon
) -> None:
    daemon = start_daemon()
    burst = repo / "docs/ops/runbooks/burst"
    burst.mkdir()
    for number in range(150):
        (burst / f"page-{number:03}.md").write_text(f"page {number}\n")

    status = daemon.wait_for(is_held(150), "the burst to be held")
    assert "150 files at once" in str(status["held_reason"])
    assert len(status["held_paths"]) == 150
    assert not (remote_root / "docs/ops/runbooks/burst").exists()
    assert daemon.events("held"), "a held batch is logged"

    dry = opswatch(daemon.config, "sync", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    pending = [u["path"] for u in json.loads(dry.stdout)["upload"]]
    assert sorted(pending) == sorted(f"docs/ops/runbooks/burst/page-{n:03}.md" for n in range(150))

    done = opswatch(daemon.config, "flush")
    assert done.returncode == 0, done.stderr
    landed = sorted(p.name for p in (remote_root / "docs/ops/runbooks/burst").iterdir())
    assert landed == [f"page-{n:03}.md" for n in range(150)]
    status = daemon.wait_for(lambda s: s["state"] == "watching", "the hold to be released")
    assert status["held"] == 0 and status["held_reason"] is None


@pytest.mark.sshd
def test_hold_over_0_never_holds(repo: Path, remote_root: Path, start_daemon: StartDaemon) -> None:
    start_daemon(hold_over=0)
    burst = repo / "docs/ops/runbooks/burst"
    burst.mkdir()
    for number in range(150):
        (burst / f"page-{number:03}.md").write_text(f"page {number}\n")
    target = remote_root / "docs/ops/runbooks/burst"
    wait_until(lambda: target.is_dir() and len(list(target.iterdir())) == 150, timeout=30)


@pytest.mark.sshd
def test_the_start_up_reconcile_is_not_held_and_logs_progress(
    repo: Path, remote_root: Path, start_daemon: StartDaemon
) -> None:
    # What the daemon finds at start is the state it was asked to keep: no hold, but progress.
    burst = repo / "docs/ops/runbooks/burst"
    burst.mkdir()
    for number in range(150):
        (burst / f"page-{number:03}.md").write_text(f"page {number}\n")
    daemon = start_daemon()
    assert len(list((remote_root / "docs/ops/runbooks/burst").iterdir())) == 150
    # Not held: once that batch is done the daemon is back to watching (the file can land a
    # moment before the engine publishes the end of its batch).
    wait_until(lambda: daemon.status()["state"] == "watching")  # type: ignore[index]
    progress = [json.loads(line) for line in daemon.events("progress")]
    assert progress and progress[-1]["task"] == "reconcile"
    assert (progress[-1]["done"], progress[-1]["total"]) == (155, 155)


# -- the branch switch -----------------------------------------------------------------------


@pytest.fixture
def two_branches(repo: Path) -> Path:
    """`main` checked out; `other` changes a Dockerfile and adds a runbook."""
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "seed")
    git(repo, "checkout", "-q", "-b", "other")
    (repo / DOCKERFILE).write_text("FROM nginx:alpine\nRUN echo other branch\n")
    (repo / "docs/ops/runbooks/other.md").write_text("# only on the other branch\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "other")
    git(repo, "checkout", "-q", "main")
    return repo


@pytest.mark.sshd
def test_a_branch_switch_is_held_until_flush(
    two_branches: Path, remote_root: Path, start_daemon: StartDaemon
) -> None:
    repo = two_branches
    daemon = start_daemon()
    on_main = (repo / DOCKERFILE).read_bytes()
    assert (remote_root / DOCKERFILE).read_bytes() == on_main

    git(repo, "checkout", "-q", "other")
    status = daemon.wait_for(is_held(2), "the switch's batch to be held")
    assert "git HEAD changed (now other)" in str(status["held_reason"])
    assert set(status["held_paths"]) == {DOCKERFILE, "docs/ops/runbooks/other.md"}
    assert (remote_root / DOCKERFILE).read_bytes() == on_main
    assert not (remote_root / "docs/ops/runbooks/other.md").exists()

    done = opswatch(daemon.config, "flush")
    assert done.returncode == 0, done.stderr
    assert (remote_root / DOCKERFILE).read_bytes() == (repo / DOCKERFILE).read_bytes()
    assert (remote_root / "docs/ops/runbooks/other.md").is_file()

    # One switch holds one batch: the next edit on the new branch goes as usual.
    runbook = repo / "docs/ops/runbooks/deploy.md"
    runbook.write_text("# Deploy, edited after the switch\n")
    wait_until(
        lambda: (remote_root / "docs/ops/runbooks/deploy.md").read_bytes() == runbook.read_bytes()
    )
    # Not held: once that batch is done the daemon is back to watching (the file can land a
    # moment before the engine publishes the end of its batch).
    wait_until(lambda: daemon.status()["state"] == "watching")  # type: ignore[index]


# -- the git state helpers -------------------------------------------------------------------


def test_find_git_dir_looks_upward_and_follows_a_gitdir_file(tmp_path: Path) -> None:
    assert find_git_dir(tmp_path) is None
    (tmp_path / "repo/.git").mkdir(parents=True)
    (tmp_path / "repo/docs/ops").mkdir(parents=True)
    assert find_git_dir(tmp_path / "repo/docs/ops") == tmp_path / "repo/.git"
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    (worktree / ".git").write_text("gitdir: ../repo/.git/worktrees/wt\n")
    assert find_git_dir(worktree) == worktree / "../repo/.git/worktrees/wt"


def test_head_watch_reports_each_switch_once(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    head = tmp_path / ".git/HEAD"
    head.write_text("ref: refs/heads/main\n")
    watch = HeadWatch(tmp_path)
    assert not watch.moved()
    head.write_text("ref: refs/heads/feature/x\n")
    assert watch.moved()
    assert watch.describe() == "feature/x"
    assert not watch.moved()
    head.write_text("0123456789abcdef0123456789abcdef01234567\n")
    assert watch.moved() and watch.describe() == "0123456789ab"


def test_a_switch_that_settled_with_nothing_pending_holds_nothing(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    head = tmp_path / ".git/HEAD"
    head.write_text("ref: refs/heads/main\n")
    watch = HeadWatch(tmp_path)
    head.write_text("ref: refs/heads/other\n")
    changed_at = head.stat().st_mtime
    watch.settle(changed_at + 0.5)  # too recent: the switch's files may still be on their way
    assert watch.last == "ref: refs/heads/main"
    watch.settle(changed_at + 5)
    assert not watch.moved()


def test_outside_git_nothing_ever_moves(tmp_path: Path) -> None:
    watch = HeadWatch(tmp_path / "no-repo-here")
    watch.settle(time.time())
    assert watch.head_file is None
    assert not watch.moved()
