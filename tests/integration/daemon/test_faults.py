"""Fault injection against a real sshd: nothing lost, nothing half-written, nothing leaked.

The daemon talks to sshd through `TcpProxy`, which can black-hole, reset or drop the connection
while sshd itself can be stopped, restarted or re-keyed. Every test ends by checking the remote
tree byte for byte against the local one and that no opswatch temp file is left behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import WriteConfig
from daemon_process import DaemonProcess, opswatch
from engine_thread import EngineThread, trust_through
from helpers import wait_until
from opswatch.demo.sshd import LocalSshd
from opswatch.local import watcher as watcher_module
from opswatch.paths import state_paths
from opswatch.ssh.transfer import is_temp_name
from proxy import TcpProxy

RUNBOOKS = "docs/ops/runbooks"
REMOTE_RUNBOOKS = "docs/ops/runbooks"  # the seed rules put runbooks/ at the same place remotely


# -- helpers ----------------------------------------------------------------------------------


def temp_files(remote_root: Path) -> list[Path]:
    return [p for p in remote_root.rglob("*") if is_temp_name(p.name)]


def write_files(repo: Path, count: int, size: int, tag: str) -> dict[str, bytes]:
    """`count` files of `size` bytes in runbooks/, each with distinct content; returns them."""
    written = {}
    for number in range(count):
        name = f"{RUNBOOKS}/{tag}-{number:03}.md"
        line = f"{tag} {number}\n".encode()
        body = (line * (size // len(line) + 1))[:size]
        (repo / name).write_bytes(body)
        written[name] = body
    return written


def landed(remote_root: Path, files: dict[str, bytes]) -> bool:
    """Whether every file is on the server with exactly the local content."""
    for name, body in files.items():
        target = remote_root / name  # runbooks map to the same relative path remotely
        try:
            if target.read_bytes() != body:
                return False
        except FileNotFoundError:
            return False
    return True


def count_lost(remote_root: Path, files: dict[str, bytes]) -> int:
    lost = 0
    for name, body in files.items():
        target = remote_root / name
        if not target.exists() or target.read_bytes() != body:
            lost += 1
    return lost


@pytest.fixture
def proxied(
    own_sshd: LocalSshd, tmp_path: Path, repo: Path, remote_root: Path, write_config: WriteConfig
) -> Iterator[tuple[TcpProxy, Path]]:
    """A proxy in front of a private sshd and a config that dials the proxy."""
    with TcpProxy(own_sshd.port) as proxy:
        known_hosts = tmp_path / "known_hosts.proxy"
        trust_through(own_sshd, proxy.port, known_hosts)
        config = write_config(
            repo,
            own_sshd,
            remote_root,
            remote={"port": proxy.port, "known_hosts": str(known_hosts)},
        )
        yield proxy, config


# -- connection faults --------------------------------------------------------------------


def test_sshd_stopped_mid_batch_and_restarted_delivers_every_file(
    proxied: tuple[TcpProxy, Path], own_sshd: LocalSshd, repo: Path, remote_root: Path
) -> None:
    proxy, config = proxied
    with EngineThread(config) as engine:
        engine.wait_synced()
        proxy.stall_after(512 * 1024)  # the batch below stops in its middle, deterministically
        files = write_files(repo, 12, 256 * 1024, "stop")
        wait_until(lambda: proxy.stalled, message="the upload to reach the stall point")
        assert not landed(remote_root, files)  # really mid-batch
        own_sshd.stop()
        proxy.resume()
        offline = engine.wait_for(
            lambda s: s["state"] == "offline" and s["pending"] >= len(files),
            "offline with the batch pending",
        )
        assert offline["connected"] is False
        assert offline["last_error"]
        own_sshd.start()  # same port, same host key
        engine.wait_for(lambda s: s["connected"] and s["pending"] == 0, "reconnect and resend")
        wait_until(lambda: landed(remote_root, files), message="every file to land")
    assert count_lost(remote_root, files) == 0
    assert temp_files(remote_root) == []


def test_black_hole_is_noticed_by_the_probe_and_the_stall_watchdog(
    proxied: tuple[TcpProxy, Path], repo: Path, remote_root: Path
) -> None:
    proxy, config = proxied
    with EngineThread(config) as engine:
        engine.wait_synced()
        # Idle connection: only the probe can find out.
        proxy.stall()
        down = engine.wait_for(lambda s: s["state"] == "offline", "the probe to notice")
        assert "lost" in down["last_error"] or "failed" in down["last_error"]
        idle_edit = write_files(repo, 2, 1000, "idle")
        engine.wait_for(lambda s: s["pending"] >= 2, "edits pending while black-holed")
        assert engine.request("status")["state"] == "offline"  # the engine still answers
        proxy.resume()
        wait_until(lambda: landed(remote_root, idle_edit), message="the idle edits to land")

        # Busy connection: an upload stops mid-file; the watchdog must cut it.
        engine.wait_for(lambda s: s["state"] == "watching", "watching again")
        proxy.stall_after(256 * 1024)
        busy_edit = write_files(repo, 3, 2 * 1024 * 1024, "busy")
        wait_until(lambda: proxy.stalled, message="the upload to stall")
        stalled = engine.wait_for(lambda s: s["state"] == "offline", "the stall watchdog to cut")
        assert "no answer" in stalled["last_error"] or "lost" in stalled["last_error"]
        assert engine.request("status")["pending"] >= 3
        proxy.resume()
        wait_until(lambda: landed(remote_root, busy_edit), message="the busy edits to land")
    assert count_lost(remote_root, {**idle_edit, **busy_edit}) == 0
    assert temp_files(remote_root) == []
    assert proxy.faults == ["stall", "stall"]


def test_reset_and_dropped_connections_lose_nothing(
    proxied: tuple[TcpProxy, Path], repo: Path, remote_root: Path
) -> None:
    proxy, config = proxied
    delivered: dict[str, bytes] = {}
    with EngineThread(config) as engine:
        engine.wait_synced()
        for round_number, fault in enumerate((proxy.reset, proxy.drop, proxy.reset)):
            proxy.stall_after(128 * 1024)
            files = write_files(repo, 4, 512 * 1024, f"cut{round_number}")
            wait_until(lambda: proxy.stalled, message="the upload to stall")
            fault()
            proxy.resume()
            wait_until(lambda f=files: landed(remote_root, f), message=f"round {round_number}")
            delivered.update(files)
    assert count_lost(remote_root, delivered) == 0
    assert temp_files(remote_root) == []


def test_wake_from_sleep_reconnects_at_once(
    own_sshd: LocalSshd, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    config = write_config(repo, own_sshd, remote_root)
    slept = [0.0]
    with EngineThread(config, wall=lambda: time.time() + slept[0]) as engine:
        synced = engine.wait_synced()
        slept[0] = 3600.0  # wall time jumps, monotonic does not: the machine slept for an hour
        woke = engine.wait_for(
            lambda s: (
                s["connected"]
                and s["connected_since"] != synced["connected_since"]
                and s["reconciles"] > synced["reconciles"]
            ),
            "a fresh connection and a reconcile after waking",
        )
    # Files unchanged since the manifest are left alone (not read, not hashed, not sent).
    assert woke["uploaded"] == synced["uploaded"]


def test_daemon_killed_right_after_edits_delivers_them_at_next_start(
    own_sshd: LocalSshd, repo: Path, remote_root: Path, write_config: WriteConfig, tmp_path: Path
) -> None:
    # A quiet period of a minute: the edits are certainly still pending when SIGKILL comes.
    config = write_config(
        repo, own_sshd, remote_root, sync={"debounce_ms": 60000, "max_delay_ms": 60000}
    )
    first = DaemonProcess(config, tmp_path / "first.log").start()
    try:
        files = write_files(repo, 5, 4000, "killed")
        first.wait_for(lambda s: s["pending"] >= len(files), "the edits to be pending")
        first.signal(signal.SIGKILL)
        first.wait()
    finally:
        first.close()
    assert not landed(remote_root, files)
    write_config(repo, own_sshd, remote_root)
    second = DaemonProcess(config, tmp_path / "second.log").start()
    try:
        wait_until(lambda: landed(remote_root, files), message="the edits to land after restart")
    finally:
        second.stop()
    assert count_lost(remote_root, files) == 0


# -- atomicity ----------------------------------------------------------------------------


def test_64_mib_upload_is_never_seen_half_written(
    sshd_server: LocalSshd, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    block_old, block_new = os.urandom(1 << 20), os.urandom(1 << 20)
    old, new = block_old * 64, block_new * 64
    digests = {hashlib.sha256(old).hexdigest(): "old", hashlib.sha256(new).hexdigest(): "new"}
    local = repo / RUNBOOKS / "big.bin"
    remote = remote_root / REMOTE_RUNBOOKS / "big.bin"
    local.write_bytes(old)
    remote.parent.mkdir(parents=True)
    remote.write_bytes(old)
    # Already there, from an hour ago: the first reconcile leaves it alone.
    stamp = time.time_ns() - 3600 * 10**9
    os.utime(local, ns=(stamp, stamp))
    os.utime(remote, ns=(stamp, stamp))
    config = write_config(repo, sshd_server, remote_root)
    seen: dict[str, int] = {"old": 0, "new": 0, "partial": 0}
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            with open(remote, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            seen[digests.get(digest, "partial")] += 1

    with EngineThread(config) as engine:
        engine.wait_synced()
        watcher = threading.Thread(target=reader)
        watcher.start()
        try:
            local.write_bytes(new)
            wait_until(lambda: seen["new"] > 0, timeout=60, message="the new file to be read")
        finally:
            stop.set()
            watcher.join()
    assert seen["partial"] == 0
    assert seen["old"] > 0
    assert remote.read_bytes() == new
    assert temp_files(remote_root) == []


def test_a_file_changed_during_its_own_upload_lands_in_its_final_form(
    proxied: tuple[TcpProxy, Path], repo: Path, remote_root: Path
) -> None:
    proxy, config = proxied
    path = repo / RUNBOOKS / "moving.bin"
    final = os.urandom(1 << 20) * 24
    with EngineThread(config) as engine:
        engine.wait_synced()
        proxy.stall_after(1 << 20)
        path.write_bytes(os.urandom(1 << 20) * 24)
        wait_until(lambda: proxy.stalled, message="the upload to stop in its middle")
        path.write_bytes(final)  # rewritten while the upload has read only part of it
        proxy.resume()
        wait_until(
            lambda: landed(remote_root, {f"{RUNBOOKS}/moving.bin": final}),
            timeout=60,
            message="the final version to land",
        )
        engine.wait_for(lambda s: s["pending"] == 0, "nothing pending")
    assert temp_files(remote_root) == []


# -- visible, bounded failures ------------------------------------------------------------


def test_one_blocked_file_fails_alone_and_names_file_and_cause(
    sshd_server: LocalSshd, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    config = write_config(repo, sshd_server, remote_root)
    with EngineThread(config) as engine:
        engine.wait_synced()
        blocker = remote_root / REMOTE_RUNBOOKS / "blocked"
        blocker.write_text("a file where the rules want a folder\n")
        good = write_files(repo, 3, 100, "fine")
        (repo / RUNBOOKS / "blocked").mkdir()
        (repo / RUNBOOKS / "blocked/inside.md").write_text("cannot land yet\n")
        wait_until(lambda: landed(remote_root, good), message="the other files to land")
        failing = engine.wait_for(
            lambda s: s["last_error"] and "inside.md" in str(s.get("pending_paths")),
            "the blocked file to be reported",
        )
        assert "blocked" in failing["last_error"]
        assert "not a folder" in failing["last_error"]
        blocker.unlink()
        engine.request("flush")
        assert (remote_root / REMOTE_RUNBOOKS / "blocked/inside.md").read_text() == (
            "cannot land yet\n"
        )
        assert engine.status()["pending"] == 0


def test_inotify_overflow_makes_the_daemon_reconcile(
    sshd_server: LocalSshd,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config(repo, sshd_server, remote_root)
    with EngineThread(config) as engine:
        before = engine.wait_synced()["reconciles"]
        with monkeypatch.context() as lost:
            # The kernel drops these events, as when its inotify queue overflows.
            dropped: list[str] = []
            lost.setattr(
                watcher_module._Handler,
                "on_any_event",
                lambda _self, event: dropped.append(os.fsdecode(event.src_path)),
            )
            unseen = write_files(repo, 2, 100, "unseen")
            wait_until(
                lambda: any(p.endswith("unseen-001.md") for p in dropped),
                message="the events to be dropped",
            )
        # What watchdog logs when the kernel's inotify queue overflowed.
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        engine.wait_for(lambda s: s["reconciles"] > before, "a reconcile")
        wait_until(lambda: landed(remote_root, unseen), message="the unseen files to land")


def test_stale_temp_files_are_swept_at_start(
    sshd_server: LocalSshd, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    folder = remote_root / REMOTE_RUNBOOKS
    folder.mkdir(parents=True)
    stale = folder / ".deploy.md.opswatch-0badc0de.tmp"
    stale.write_text("half of an upload a killed daemon left\n")
    bystander = folder / "notes.opswatch.txt"
    bystander.write_text("not ours\n")
    config = write_config(repo, sshd_server, remote_root)
    with EngineThread(config) as engine:
        engine.wait_synced()
    assert not stale.exists()
    assert bystander.exists()


# -- conflicts ------------------------------------------------------------------------------


def test_server_side_change_is_a_conflict_until_sync_force(
    sshd_server: LocalSshd, repo: Path, remote_root: Path, write_config: WriteConfig
) -> None:
    config = write_config(repo, sshd_server, remote_root)
    local = repo / RUNBOOKS / "deploy.md"
    remote = remote_root / REMOTE_RUNBOOKS / "deploy.md"
    hotfix = "# Deploy\n\nhot-fixed on the server\n"
    with EngineThread(config) as engine:
        engine.wait_synced()
        remote.write_text(hotfix)
        os.utime(remote, (time.time() - 3600, time.time() - 3600))
        local.write_text("# Deploy\n\nedited locally\n")
        status = engine.wait_for(
            lambda s: str(remote) in s["conflicts"], "the conflict to show in status"
        )
        assert status["pending"] == 0
        assert remote.read_text() == hotfix  # not overwritten
    refused = opswatch(config, "sync")
    assert refused.returncode == 1
    assert "changed on the server" in refused.stderr
    assert remote.read_text() == hotfix
    forced = opswatch(config, "sync", "--force")
    assert forced.returncode == 0, forced.stderr
    assert remote.read_text() == local.read_text()
    saved = list(state_paths(config).conflicts.rglob("deploy.md"))
    assert [p.read_text() for p in saved] == [hotfix]
    assert str(saved[0]) in forced.stderr
    assert opswatch(config, "sync").returncode == 0  # resolved: no conflict left


# -- nothing leaves -------------------------------------------------------------------------


def test_escaping_symlinks_private_keys_and_dotdot_never_leave(
    sshd_server: LocalSshd,
    repo: Path,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    (outside / ".ssh").mkdir(parents=True)
    secret = "SECRET-OUTSIDE-THE-REPO\n"
    (outside / "passwd").write_text(secret)
    (outside / ".ssh/id_ed25519").write_text(secret)
    runbooks = repo / RUNBOOKS
    (runbooks / "passwd").symlink_to(outside / "passwd")
    (runbooks / "ssh").symlink_to(outside / ".ssh", target_is_directory=True)
    (runbooks / "inside-link.md").symlink_to(runbooks / "deploy.md")  # stays inside: allowed
    key_block = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n"
    (runbooks / "notes.md").write_text(f"pasted by mistake:\n{key_block}")
    config = write_config(repo, sshd_server, remote_root)
    done = opswatch(config, "sync")
    assert done.returncode == 0, done.stderr  # refusals are warnings: the design working
    assert "passwd" in done.stderr or "passwd" in done.stdout
    assert "warning: refused: docs/ops/runbooks/notes.md: holds a private key block" in done.stderr
    remote_runbooks = remote_root / REMOTE_RUNBOOKS
    assert (remote_runbooks / "inside-link.md").exists()
    leaked = [
        p
        for p in remote_root.rglob("*")
        if p.is_file()
        and (
            secret in p.read_text(errors="ignore") or "PRIVATE KEY" in p.read_text(errors="ignore")
        )
    ]
    assert leaked == []
    assert not (remote_runbooks / "passwd").exists()
    assert not (remote_runbooks / "ssh").exists()
    assert not (remote_runbooks / "notes.md").exists()

    escaping = write_config(
        repo, sshd_server, remote_root, rule=[{"from": "docs/ops", "to": "../escaped"}]
    )
    refused = opswatch(escaping, "sync")
    assert refused.returncode == 2
    assert "rule" in refused.stderr and ".." in refused.stderr
    assert not (remote_root.parent / "escaped").exists()
