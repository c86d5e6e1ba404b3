"""Nothing leaves that shouldn't: links, hard links, case variants, key files, key blocks.

Each test plants a secret the way a laptop holds one, runs `opswatch sync` against the real
sshd, and then reads every byte on the server: the secret's marker must be nowhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import WriteConfig
from daemon_process import opswatch
from opswatch.config import load_config
from opswatch.demo.sshd import LocalSshd
from opswatch.errors import LocalFileError, LocalRefusedError
from opswatch.local.guarded import LocalTree
from opswatch.model import LocalFile, Refusal, Skip
from opswatch.paths import state_paths
from opswatch.sync.oneshot import connected_syncer

pytestmark = pytest.mark.sshd

RUNBOOKS = "docs/ops/runbooks"
SECRET = "SECRET=do-not-ship-7f3a"


def server_bytes(remote_root: Path) -> bytes:
    """Every byte of every file on the server, for a plain `in` check."""
    return b"".join(p.read_bytes() for p in sorted(remote_root.rglob("*")) if p.is_file())


def plant(repo: Path, relative: str, text: str = SECRET) -> Path:
    path = repo / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def sync(config: Path, *args: str) -> tuple[int, str]:
    done = opswatch(config, "sync", *args)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout + done.stderr


def test_a_symlink_to_a_never_listed_file_is_refused(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> None:
    plant(repo, "docs/ops/.env")
    plant(repo, "docs/ops/data/dump.sql")
    plant(repo, "docs/ops/certs/tls.crt")
    links = {"envlink.md": "../.env", "dump.md": "../data/dump.sql", "tls.md": "../certs/tls.crt"}
    for name, target in links.items():
        (repo / RUNBOOKS / name).symlink_to(target)
    # A link to an ordinary file of the same watched folder still goes.
    (repo / RUNBOOKS / "same.md").symlink_to("deploy.md")
    config = write_config(repo, sshd_server, remote_root)
    code, output = sync(config)
    assert code == 0, output
    assert SECRET.encode() not in server_bytes(remote_root)
    for name in links:
        assert not (remote_root / RUNBOOKS / name).exists()
        assert f"refused: {RUNBOOKS}/{name}: symlink to" in output
    assert (remote_root / RUNBOOKS / "same.md").read_bytes() == (
        repo / RUNBOOKS / "deploy.md"
    ).read_bytes()


def test_a_linked_folder_leading_to_secrets_is_refused(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    plant(outside, "notes.md")
    (repo / RUNBOOKS / "more").symlink_to(outside)
    config = write_config(repo, sshd_server, remote_root)
    loaded = load_config(config)
    with connected_syncer(loaded, state_paths(config)) as syncer:
        found = syncer.tree.inspect(f"{RUNBOOKS}/more/notes.md")
    assert isinstance(found, Skip) and found.refusal is Refusal.SYMLINK_OUTSIDE
    code, output = sync(config)
    assert code == 0, output
    assert SECRET.encode() not in server_bytes(remote_root)


@pytest.mark.parametrize("allowed", [False, True])
def test_a_hard_link_is_refused_unless_allowed(
    repo: Path,
    sshd_server: LocalSshd,
    remote_root: Path,
    write_config: WriteConfig,
    allowed: bool,
) -> None:
    os.link(plant(repo, "docs/ops/.env"), repo / RUNBOOKS / "x.md")
    config = write_config(repo, sshd_server, remote_root, sync={"allow_hard_links": allowed})
    code, output = sync(config)
    assert code == 0, output
    assert (SECRET.encode() in server_bytes(remote_root)) is allowed
    if not allowed:
        assert f"refused: {RUNBOOKS}/x.md: has 2 hard links" in output


SECRET_NAMES = [
    ".ENV",
    ".Env.production",
    "prod.env",
    ".envrc",
    "CERTS/site.crt",
    "Data/db.sqlite",
    "server.KEY",
    "ID_RSA",
    "id_ecdsa",
    "id_dsa.pub.bak",
    "store.p12",
    "store.pfx",
    "putty.ppk",
    "app.jks",
    "app.keystore",
    "vault.kdbx",
]


def test_case_variants_and_common_key_files_are_refused(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> None:
    for name in SECRET_NAMES:
        plant(repo, f"{RUNBOOKS}/{name}")
    config = write_config(repo, sshd_server, remote_root)
    code, output = sync(config)
    assert code == 0, output
    assert SECRET.encode() not in server_bytes(remote_root)
    assert (remote_root / RUNBOOKS / "deploy.md").exists()


KEY_BLOCKS = {
    "pgp.md": "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF0\n-----END PGP PRIVATE KEY…\n",
    "putty.md": "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPrivate-Lines: 1\nAAAA\n",
    "utf16.md": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n",
}


def test_private_key_blocks_in_any_format_are_refused(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> None:
    for name, block in KEY_BLOCKS.items():
        body = (block + SECRET).encode("utf-16" if name == "utf16.md" else "utf-8")
        (repo / RUNBOOKS / name).write_bytes(body)
    config = write_config(repo, sshd_server, remote_root)
    code, output = sync(config)
    assert code == 0, output  # refusals are warnings, not failures (everything else landed)
    on_server = server_bytes(remote_root)
    assert SECRET.encode() not in on_server
    assert SECRET.encode("utf-16-le") not in on_server
    for name in KEY_BLOCKS:
        assert f"warning: refused: {RUNBOOKS}/{name}: holds a private key block" in output


def test_a_file_swapped_for_a_link_after_the_check_is_not_read(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig, tmp_path: Path
) -> None:
    """The race of a sync: the plan checked a regular file; by the time it is opened, a link
    to an outside file (or another file) stands there. Neither is read or sent."""
    outside = plant(tmp_path / "outside", "stolen.md")
    swapped, replaced = f"{RUNBOOKS}/swapped.md", f"{RUNBOOKS}/replaced.md"
    plant(repo, swapped, "an ordinary runbook\n")
    plant(repo, replaced, "an ordinary runbook\n")
    config = write_config(repo, sshd_server, remote_root)
    loaded = load_config(config)
    with connected_syncer(loaded, state_paths(config)) as syncer:
        plan, _index = syncer.plan_reconcile()
        (repo / swapped).unlink()
        (repo / swapped).symlink_to(outside)
        (repo / replaced).unlink()
        plant(repo, replaced, SECRET)  # a new file: another inode than the one checked
        report = syncer.execute(plan)
    assert SECRET.encode() not in server_bytes(remote_root)
    assert "symlink" in report.refused[swapped]
    assert replaced in report.changed_meanwhile  # sent again, as what it is now
    assert not (remote_root / replaced).exists()
    assert (remote_root / RUNBOOKS / "deploy.md").exists()


def test_the_guarded_open_refuses_what_the_check_did_not_see(repo: Path, tmp_path: Path) -> None:
    from opswatch.core.rules import Router

    config_rules = load_config(_minimal_config(repo, tmp_path))
    tree = LocalTree(repo, config_rules.watched_folders, Router.from_config(config_rules))
    path = f"{RUNBOOKS}/deploy.md"
    checked = tree.inspect(path)
    assert isinstance(checked, LocalFile)
    (repo / path).unlink()
    os.mkfifo(repo / path)
    with pytest.raises(LocalRefusedError):  # O_NONBLOCK: the FIFO does not block the open
        tree.open(path, checked)
    (repo / path).unlink()
    (repo / path).write_text("another file\n")
    with pytest.raises(LocalFileError, match="changed since it was checked"):
        tree.open(path, checked)


def _minimal_config(repo: Path, tmp_path: Path) -> Path:
    path = tmp_path / "minimal.toml"
    path.write_text(
        f'[local]\nroot = "{repo}"\n[remote]\nhost = "h"\nroot = "/srv"\n'
        '[[rule]]\nfrom = "docs/ops"\nto = "docs/ops"\n'
    )
    return path
