"""The sync loop end to end: real watchdog on a temp repository, real OpenSSH sshd on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import StartDaemon, WriteConfig
from helpers import wait_until
from opswatch.demo.sshd import LocalSshd
from opswatch.model import State


@dataclass(frozen=True)
class Setup:
    repo: Path
    remote_root: Path
    config: Path


@pytest.fixture
def seeded(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> Setup:
    """The seed repository with a config pointing at the shared sshd."""
    return Setup(repo, remote_root, write_config(repo, sshd_server, remote_root))


def remote_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def lands(remote: Path, content: bytes) -> Callable[[], bool]:
    return lambda: remote.is_file() and remote.read_bytes() == content


SEED_TARGETS = {
    "docs/ops/docker-compose.production.yml": "ops/docker-compose.production.yml",
    "docs/ops/Dockerfile.coda-mcp-gateway": "docs/ops/Dockerfile.coda-mcp-gateway",
    "docs/ops/Dockerfile.demo": "docs/ops/Dockerfile.demo",
    "docs/ops/runbooks/deploy.md": "docs/ops/runbooks/deploy.md",
    "docs/ops/quality_gates/check.sh": "docs/ops/quality_gates/check.sh",
}


def test_start_reconciles_the_seed_layout_and_never_sends_secrets(
    seeded: Setup, start_daemon: StartDaemon
) -> None:
    start_daemon(seeded.config)
    repo, remote_root = seeded.repo, seeded.remote_root
    tree = remote_tree(remote_root)
    assert set(tree) == set(SEED_TARGETS.values())
    for local, remote in SEED_TARGETS.items():
        assert tree[remote] == (repo / local).read_bytes()
        assert int((remote_root / remote).stat().st_mtime) == int((repo / local).stat().st_mtime)
    assert (
        remote_root / SEED_TARGETS["docs/ops/quality_gates/check.sh"]
    ).stat().st_mode & 0o777 == 0o755
    assert not any(b"hunter2" in content for content in tree.values())


def test_an_edit_lands_with_content_mode_and_mtime(
    seeded: Setup, start_daemon: StartDaemon
) -> None:
    daemon = start_daemon(seeded.config)
    repo, remote_root = seeded.repo, seeded.remote_root
    local = repo / "docs/ops/Dockerfile.demo"
    remote = remote_root / "docs/ops/Dockerfile.demo"
    started = time.monotonic()
    local.write_bytes(b"FROM nginx:1.27\n")
    wait_until(lands(remote, b"FROM nginx:1.27\n"))
    print(f"single edit landed in {(time.monotonic() - started) * 1000:.0f} ms (debounce 100 ms)")
    assert int(remote.stat().st_mtime) == int(local.stat().st_mtime)
    local.chmod(0o700)
    wait_until(lambda: remote.stat().st_mode & 0o777 == 0o700)
    assert daemon.status().uploaded >= 2


def test_secrets_written_while_watching_never_leave(
    seeded: Setup, start_daemon: StartDaemon
) -> None:
    start_daemon(seeded.config)
    repo, remote_root = seeded.repo, seeded.remote_root
    (repo / "docs/ops/runbooks/.env").write_text("TOKEN=hunter2\n")
    (repo / "docs/ops/runbooks/data").mkdir()
    (repo / "docs/ops/runbooks/data/dump.sql").write_text("hunter2\n")
    (repo / "docs/ops/runbooks/site.key").write_text("hunter2\n")
    (repo / "docs/ops/runbooks/after.md").write_text("sent after the secrets\n")
    wait_until(lands(remote_root / "docs/ops/runbooks/after.md", b"sent after the secrets\n"))
    assert not any(b"hunter2" in c for c in remote_tree(remote_root).values())


def test_names_with_spaces_and_unicode(seeded: Setup, start_daemon: StartDaemon) -> None:
    start_daemon(seeded.config)
    repo, remote_root = seeded.repo, seeded.remote_root
    name = "docs/ops/runbooks/Ünïcødé runbook — 2026 (draft) 🚀.md"
    (repo / name).write_text("déploiement\n")
    wait_until(lands(remote_root / name, "déploiement\n".encode()))


def test_a_20_mib_file_arrives_whole(seeded: Setup, start_daemon: StartDaemon) -> None:
    start_daemon(seeded.config)
    repo, remote_root = seeded.repo, seeded.remote_root
    content = os.urandom(20 * 1024 * 1024)
    (repo / "docs/ops/runbooks/big.bin").write_bytes(content)
    wait_until(lands(remote_root / "docs/ops/runbooks/big.bin", content), timeout=60)
    assert not [n for n in os.listdir(remote_root / "docs/ops/runbooks") if "opswatch" in n]


def no_temp_names(root: Path) -> bool:
    markers = (".opswatch-", "___jb_", "4913", ".swp", "~")
    return not [p for p in remote_tree(root) if any(m in p for m in markers)]


def test_vim_style_save_ends_with_the_final_content_and_no_temp_names(
    seeded: Setup, start_daemon: StartDaemon
) -> None:
    start_daemon(seeded.config)
    repo, remote_root = seeded.repo, seeded.remote_root
    folder = repo / "docs/ops/runbooks"
    target = folder / "deploy.md"
    # vim with backupcopy=no: probe file, swap file, rename to backup, write anew, drop backup
    (folder / "4913").write_text("")
    (folder / "4913").unlink()
    (folder / ".deploy.md.swp").write_bytes(b"swap")
    target.rename(folder / "deploy.md~")
    target.write_text("# Deploy, edited in vim\n")
    (folder / "deploy.md~").unlink()
    (folder / ".deploy.md.swp").unlink()
    wait_until(lands(remote_root / "docs/ops/runbooks/deploy.md", b"# Deploy, edited in vim\n"))
    assert no_temp_names(remote_root)


def test_jetbrains_safe_write_ends_with_the_final_content(
    seeded: Setup, start_daemon: StartDaemon
) -> None:
    start_daemon(seeded.config)
    repo, remote_root = seeded.repo, seeded.remote_root
    folder = repo / "docs/ops"
    target = folder / "Dockerfile.demo"
    (folder / "Dockerfile.demo___jb_tmp___").write_text("FROM jetbrains\n")
    target.rename(folder / "Dockerfile.demo___jb_old___")
    (folder / "Dockerfile.demo___jb_tmp___").rename(target)
    (folder / "Dockerfile.demo___jb_old___").unlink()
    wait_until(lands(remote_root / "docs/ops/Dockerfile.demo", b"FROM jetbrains\n"))
    assert no_temp_names(remote_root)


@pytest.mark.parametrize("delete", [False, True])
def test_rename_and_delete_follow_sync_delete(
    repo: Path,
    sshd_server: LocalSshd,
    remote_root: Path,
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    delete: bool,
) -> None:
    daemon = start_daemon(write_config(repo, sshd_server, remote_root, sync={"delete": delete}))
    runbooks = remote_root / "docs/ops/runbooks"
    (repo / "docs/ops/runbooks/deploy.md").rename(repo / "docs/ops/runbooks/release.md")
    wait_until(lambda: (runbooks / "release.md").is_file())
    (repo / "docs/ops/Dockerfile.demo").unlink()
    # a file that only lives on the server, in a rule's folder: never opswatch's to delete
    (runbooks / "server-only.md").write_text("mine\n")
    (repo / "docs/ops/runbooks/marker.md").write_text("after the deletes\n")
    wait_until(lambda: (runbooks / "marker.md").is_file())
    wait_until(lambda: daemon.status().pending == 0)
    assert (runbooks / "deploy.md").exists() is not delete
    assert (remote_root / "docs/ops/Dockerfile.demo").exists() is not delete
    assert (runbooks / "server-only.md").read_text() == "mine\n"


def test_a_new_folder_with_files_is_picked_up(seeded: Setup, start_daemon: StartDaemon) -> None:
    start_daemon(seeded.config)
    repo, remote_root = seeded.repo, seeded.remote_root
    staging = repo / "staging"
    (staging / "incidents").mkdir(parents=True)
    (staging / "incidents/2026-11.md").write_text("postmortem\n")
    shutil.move(str(staging / "incidents"), repo / "docs/ops/runbooks/incidents")
    wait_until(lands(remote_root / "docs/ops/runbooks/incidents/2026-11.md", b"postmortem\n"))


def test_an_unknown_host_key_is_refused_and_nothing_is_sent(
    repo: Path,
    sshd_server: LocalSshd,
    remote_root: Path,
    write_config: Callable[..., Path],
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    empty = tmp_path / "known_hosts.empty"
    empty.write_text("")
    config = write_config(repo, sshd_server, remote_root, remote={"known_hosts": str(empty)})
    daemon = start_daemon(config, settle=False)
    status = wait_until(lambda: (s := daemon.status()).state is State.ERROR and s)
    assert (
        status.last_error and "not in" in status.last_error and "known_hosts" in status.last_error
    )
    assert "SHA256:" in status.last_error
    assert remote_tree(remote_root) == {}

    result = subprocess.run(
        ["opswatch", "-c", str(config), "sync"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: host key of")
    assert remote_tree(remote_root) == {}


def test_sync_dry_run_shows_the_plan_and_changes_nothing(
    repo: Path,
    sshd_server: LocalSshd,
    remote_root: Path,
    write_config: Callable[..., Path],
) -> None:
    config = write_config(repo, sshd_server, remote_root)
    dry = subprocess.run(
        ["opswatch", "-c", str(config), "sync", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert "upload    docs/ops/docker-compose.production.yml → " in dry.stdout
    assert f"{remote_root}/ops/docker-compose.production.yml" in dry.stdout
    assert 'refused   docs/ops/.env (never: matches ".env")' in dry.stdout
    assert "refused   docs/ops/data/" in dry.stdout
    assert remote_tree(remote_root) == {}

    done = subprocess.run(
        ["opswatch", "-c", str(config), "sync"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert set(remote_tree(remote_root)) == set(SEED_TARGETS.values())
    again = subprocess.run(
        ["opswatch", "-c", str(config), "sync", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "0 to upload, 0 to remove" in again.stdout


def test_a_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "opswatch.toml"
    config.write_text(
        '[remote]\nhost = "d"\nroot = "/x"\n'
        '[sync]\ndebounce_ms = "fast"\n'
        '[[rule]]\nfrom = "a"\nto = "b"\n'
    )
    result = subprocess.run(
        ["opswatch", "-c", str(config), "sync"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    # The config's path as given, not only its name: several configs may be called so.
    assert result.stderr == f'error: {config}: sync.debounce_ms: expected an integer, got "fast"\n'


def test_no_usable_key_says_why_in_one_line(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-key"
    config = write_config(repo, sshd_server, remote_root, remote={"identity_file": str(missing)})
    result = subprocess.run(
        ["opswatch", "-c", str(config), "sync"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("error: ")
    assert "refused every key offered (0 tried)" in result.stderr
    assert "SSH_AUTH_SOCK is not set" in result.stderr
    assert remote_tree(remote_root) == {}
