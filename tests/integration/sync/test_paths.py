"""`opswatch sync PATH…` and `opswatch verify PATH…` against the real sshd: only the files named,
paths taken relative to the folder the command runs in, as git takes them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon_process import opswatch_command
from opswatch.demo.sshd import LocalSshd

pytestmark = pytest.mark.sshd

WriteConfig = Callable[..., Path]


def run(config: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*opswatch_command(), "--config", str(config), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def config(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> Path:
    return write_config(repo, sshd_server, remote_root)


def test_sync_of_one_file_sends_only_that_file(config: Path, repo: Path, remote_root: Path) -> None:
    done = run(config, repo / "docs/ops", "sync", "--json", "Dockerfile.demo")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["uploaded"] == [str(remote_root / "docs/ops/Dockerfile.demo")]
    landed = sorted(p.relative_to(remote_root).as_posix() for p in remote_root.rglob("*"))
    assert landed == ["docs", "docs/ops", "docs/ops/Dockerfile.demo"]


def test_sync_of_a_folder_sends_what_is_under_it(
    config: Path, repo: Path, remote_root: Path
) -> None:
    done = run(config, repo / "docs/ops/runbooks", "sync", ".")
    assert done.returncode == 0, done.stderr
    assert (remote_root / "docs/ops/runbooks/deploy.md").read_bytes() == (
        repo / "docs/ops/runbooks/deploy.md"
    ).read_bytes()
    assert not (remote_root / "ops").exists()
    assert not (remote_root / "docs/ops/Dockerfile.demo").exists()


def test_dry_run_of_a_path_plans_only_it(config: Path, repo: Path) -> None:
    compose = "docs/ops/docker-compose.production.yml"
    done = run(config, repo, "sync", "--dry-run", "--json", compose)
    assert done.returncode == 0, done.stderr
    assert [u["path"] for u in json.loads(done.stdout)["upload"]] == [compose]


def test_a_path_no_rule_selects_says_so_and_exits_1(
    config: Path, repo: Path, remote_root: Path
) -> None:
    (repo / "README.md").write_text("not an ops file\n")
    done = run(config, repo, "sync", "README.md", "docs/ops/runbooks")
    assert done.returncode == 1
    assert "error: README.md: no rule selects it" in done.stderr
    assert (remote_root / "docs/ops/runbooks/deploy.md").is_file()  # the rest still went


def test_a_refused_path_is_shown_as_refused_not_as_unselected(config: Path, repo: Path) -> None:
    done = run(config, repo / "docs/ops", "sync", "--dry-run", ".env")
    assert "no rule selects" not in done.stderr
    assert ".env" in done.stdout and "never" in done.stdout


def test_a_path_outside_the_repository_is_bad_usage(config: Path, repo: Path) -> None:
    done = run(config, repo, "sync", "../elsewhere")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ../elsewhere: outside the repository")


def test_verify_of_a_path_checks_only_it(config: Path, repo: Path, remote_root: Path) -> None:
    assert run(config, repo, "sync").returncode == 0
    (remote_root / "ops/docker-compose.production.yml").write_text("changed on the server\n")
    whole = run(config, repo, "verify")
    assert whole.returncode == 1
    one = run(config, repo / "docs/ops", "verify", "--json", "runbooks")
    assert one.returncode == 0, one.stdout + one.stderr
    report = json.loads(one.stdout)
    assert (report["checked"], report["ok"]) == (1, True)
    missing = run(config, repo, "verify", "docs/nothing-here")
    assert missing.returncode == 1
    assert "error: docs/nothing-here: no rule selects it" in missing.stderr
