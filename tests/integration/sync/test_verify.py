"""`opswatch verify`: the server's sha256 of every routed file against the local one, real sshd."""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon_process import opswatch
from opswatch.config import load_config
from opswatch.demo.sshd import LocalSshd
from opswatch.ssh.remote import connected_remote
from opswatch.sync import verify as verify_module

pytestmark = pytest.mark.sshd

WriteConfig = Callable[..., Path]
ODD_NAME = 'docs/ops/runbooks/über deploy – it\'s "late".md'


@pytest.fixture
def synced(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> Path:
    """The seed repository (plus a file with spaces, quotes and unicode), synced once."""
    (repo / ODD_NAME).write_text("# Über\n\nspaces, quotes and unicode in the name\n")
    config = write_config(repo, sshd_server, remote_root)
    done = opswatch(config, "sync")
    assert done.returncode == 0, done.stderr
    return config


def verify_json(config: Path) -> tuple[int, dict[str, object]]:
    done = opswatch(config, "verify", "--json")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_equal_copies_exit_0(synced: Path) -> None:
    done = opswatch(synced, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 checked: 6 match, 0 differ, 0 missing (6 hashed by the server)" in done.stdout
    code, report = verify_json(synced)
    assert (code, report["ok"], report["read_over_sftp"]) == (0, True, 0)


def test_a_tampered_file_is_named_and_exits_1(synced: Path, remote_root: Path) -> None:
    tampered = remote_root / "docs/ops/Dockerfile.demo"
    tampered.write_text(tampered.read_text() + "RUN echo changed on the server\n")
    done = opswatch(synced, "verify")
    assert done.returncode == 1
    assert f"DIFFERS  docs/ops/Dockerfile.demo  {tampered}" in done.stdout
    assert "1 differ" in done.stdout
    _, report = verify_json(synced)
    [differ] = report["differ"]  # type: ignore[misc]
    assert differ["path"] == "docs/ops/Dockerfile.demo"
    assert differ["remote_sha256"] == hashlib.sha256(tampered.read_bytes()).hexdigest()


def test_a_file_missing_on_the_server_exits_1(synced: Path, remote_root: Path) -> None:
    (remote_root / "ops/docker-compose.production.yml").unlink()
    done = opswatch(synced, "verify")
    assert done.returncode == 1
    assert "MISSING  docs/ops/docker-compose.production.yml" in done.stdout
    _, report = verify_json(synced)
    assert report["missing"] == [
        {
            "path": "docs/ops/docker-compose.production.yml",
            "remote": str(remote_root / "ops/docker-compose.production.yml"),
        }
    ]


def test_a_name_with_spaces_quotes_and_unicode(synced: Path, remote_root: Path) -> None:
    code, report = verify_json(synced)
    assert (code, report["hashed_remotely"]) == (0, 6)
    (remote_root / ODD_NAME).write_text("changed\n")
    done = opswatch(synced, "verify")
    assert done.returncode == 1
    assert f"DIFFERS  {ODD_NAME}" in done.stdout


def test_without_sha256sum_files_are_read_over_sftp(
    make_sshd: Callable[..., LocalSshd],
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    # A server whose sha256sum lacks -z (as old busybox): verify reads the files itself.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "sha256sum"
    stand_in.write_text("#!/bin/sh\necho \"sha256sum: unrecognized option '-z'\" >&2\nexit 1\n")
    stand_in.chmod(0o755)
    server = make_sshd(path_prepend=[bin_dir])
    config = write_config(repo, server, remote_root)
    assert opswatch(config, "sync").returncode == 0
    code, report = verify_json(config)
    assert (code, report["hashed_remotely"], report["read_over_sftp"]) == (0, 0, 5)
    (remote_root / "docs/ops/runbooks/deploy.md").write_text("tampered\n")
    code, report = verify_json(config)
    assert code == 1
    assert [d["path"] for d in report["differ"]] == ["docs/ops/runbooks/deploy.md"]  # type: ignore[attr-defined, index]


def test_many_files_go_in_several_batches(
    synced: Path, repo: Path, remote_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = repo / "docs/ops/runbooks/many"
    folder.mkdir()
    for number in range(60):
        (folder / f"page {number:03}.md").write_text(f"page {number}\n")
    assert opswatch(synced, "sync").returncode == 0
    (remote_root / "docs/ops/runbooks/many/page 042.md").write_text("tampered\n")
    monkeypatch.setattr(verify_module, "COMMAND_BUDGET", 300)  # a handful of paths per command
    config = load_config(synced)
    with connected_remote(config.remote) as remote:
        report = verify_module.verify(config, remote, show_progress=False)
    assert (report.checked, report.hashed_remotely, report.read_over_sftp) == (66, 66, 0)
    assert [t.local for t, _ in report.differ] == ["docs/ops/runbooks/many/page 042.md"]
    assert not report.missing


def test_batches_stay_under_the_budget_and_keep_order() -> None:
    paths = [f"docs/ops/runbooks/it's page {n}.md" for n in range(100)]
    cut = list(verify_module.batches(paths, budget=400))
    assert len(cut) > 5
    assert [p for batch in cut for p in batch] == paths
    for batch in cut:
        assert sum(len(shlex.quote(shlex.quote(p))) + 1 for p in batch) <= 400


def test_parse_skips_a_login_banner_and_keeps_odd_names() -> None:
    digest = "ab" * 32
    output = f"Welcome!\nlast login: never\n{digest}  a b\nc\0{digest} *ü.md\0"
    assert verify_module.parse_sha256sum_z(output) == {"a b\nc": digest, "ü.md": digest}
