"""The engine's state machine over a fake server and hand-turned clocks: the quiet period, pause,
hold, retry, reconcile, conflicts, reconnect, wake-up, requests. What it decides, not the wire."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from engine_setup import QUIET_S, RETRY_S, RUNBOOK, Engine, make_engine, remote_of, sent

from opswatch.errors import ConnectError, OpswatchError, RemoteFileError, UnknownHostKeyError
from opswatch.local.watcher import EventsLost, FolderAppeared, FolderGone
from opswatch.model import ChangeKind, RebuildResult


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return make_engine(tmp_path)


def started(engine: Engine) -> Engine:
    status = engine.turn()
    assert status["connected"] and status["reconciles"] == 1 and status["state"] == "watching"
    return engine


def test_the_first_turn_connects_and_reconciles_without_secrets(engine: Engine) -> None:
    status = started(engine).status()
    assert status["uploaded"] == 3 and status["last_sync"] and status["last_reconcile"]
    assert engine.on_server(RUNBOOK) == b"# Deploy\n"
    assert engine.on_server("docs/ops/.env") is None


def test_an_edit_waits_for_the_quiet_period_then_goes(engine: Engine) -> None:
    started(engine)
    engine.edit(RUNBOOK, "# v2\n")
    assert engine.turn()["pending_paths"] == [RUNBOOK]
    assert engine.on_server(RUNBOOK) == b"# Deploy\n"
    status = engine.advance(QUIET_S)
    assert status["pending"] == 0 and status["uploaded"] == 4
    assert engine.on_server(RUNBOOK) == b"# v2\n"


def test_an_unrouted_or_refused_change_is_not_pending(engine: Engine) -> None:
    started(engine)
    engine.edit("docs/ops/.env", "SECRET=2\n")
    engine.edit("README.md", "elsewhere\n")
    assert engine.turn()["pending"] == 0


def test_pause_keeps_changes_pending_and_resume_sends_them(engine: Engine) -> None:
    started(engine)
    assert engine.request("pause").result(0) == {"paused_until": None}
    engine.edit(RUNBOOK, "# paused\n")
    status = engine.advance(60)
    assert status["state"] == "paused" and status["pending_paths"] == [RUNBOOK]
    assert engine.paths.pause_file.exists()
    result = engine.request("resume").result(0)
    assert result == {**sent(1), "was_paused": True}
    assert engine.on_server(RUNBOOK) == b"# paused\n" and not engine.paths.pause_file.exists()


def test_a_timed_pause_ends_by_itself(engine: Engine) -> None:
    started(engine)
    result = engine.request("pause", seconds=120).result(0)
    assert result["paused_until"] == engine.status()["paused_until"] is not None
    engine.edit(RUNBOOK, "# later\n")
    assert engine.advance(60)["state"] == "paused"
    status = engine.advance(61)
    status = engine.advance(QUIET_S)
    assert status["state"] == "watching" and status["paused_until"] is None
    assert engine.on_server(RUNBOOK) == b"# later\n"


def test_a_big_batch_is_held_until_flush_and_no_reconcile_sends_it(tmp_path: Path) -> None:
    engine = started(make_engine(tmp_path, hold_over=1))
    engine.edit(RUNBOOK, "# one\n")
    engine.edit("docs/ops/Dockerfile.demo", "FROM two\n")
    status = engine.advance(QUIET_S)
    assert status["state"] == "held" and status["held"] == 2
    assert "2 files at once (sync.hold_over = 1)" in status["held_reason"]
    assert engine.notice(EventsLost("overflow"))["reconciles"] == 2
    assert engine.on_server(RUNBOOK) == b"# Deploy\n"
    assert engine.request("flush").result(0) == sent(2)
    status = engine.status()
    assert status["state"] == "watching" and status["held_reason"] is None
    assert engine.on_server(RUNBOOK) == b"# one\n"


def test_a_branch_switch_holds_its_batch(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    head = engine.repo / ".git/HEAD"
    head.parent.mkdir()
    head.write_text("ref: refs/heads/main\n")
    engine = make_engine(tmp_path)  # HEAD read at start
    started(engine)
    head.write_text("ref: refs/heads/other\n")
    engine.edit(RUNBOOK, "# from other\n")
    status = engine.advance(QUIET_S)
    assert status["state"] == "held" and "git HEAD changed (now other)" in status["held_reason"]


def test_a_file_the_server_refuses_is_retried_after_the_interval(engine: Engine) -> None:
    started(engine)
    engine.remote.failing[remote_of(RUNBOOK)] = RemoteFileError(remote_of(RUNBOOK), "disk full")
    engine.edit(RUNBOOK, "# v2\n")
    status = engine.advance(QUIET_S)
    assert status["pending_paths"] == [RUNBOOK] and "disk full" in status["last_error"]
    assert status["state"] == "watching"  # an expected failure: not the error state
    assert engine.advance(RETRY_S / 2)["pending"] == 1
    del engine.remote.failing[remote_of(RUNBOOK)]
    engine.advance(RETRY_S / 2)
    status = engine.advance(QUIET_S)
    assert status["pending"] == 0 and status["last_error"] is None
    assert engine.on_server(RUNBOOK) == b"# v2\n"


def test_flush_reports_a_file_that_failed(engine: Engine) -> None:
    started(engine)
    engine.remote.failing[remote_of(RUNBOOK)] = RemoteFileError(remote_of(RUNBOOK), "disk full")
    engine.edit(RUNBOOK, "# v2\n")
    with pytest.raises(OpswatchError, match=r"1 file\(s\) failed: .*disk full"):
        engine.request("flush").result(0)
    assert engine.status()["pending_paths"] == [RUNBOOK]


def test_a_server_side_edit_is_a_conflict_left_alone(engine: Engine) -> None:
    started(engine)
    engine.remote.edit(remote_of(RUNBOOK), b"# hotfix on the server\n")
    engine.edit(RUNBOOK, "# local edit\n")
    status = engine.advance(QUIET_S)
    assert status["conflicts"] == [remote_of(RUNBOOK)]
    assert engine.on_server(RUNBOOK) == b"# hotfix on the server\n"


def test_a_lost_link_backs_off_reconnects_and_reconciles(engine: Engine) -> None:
    started(engine)
    engine.remote.drop()
    engine.remote.connect_errors = [ConnectError("connection refused")] * 2
    engine.edit(RUNBOOK, "# while offline\n")
    status = engine.turn()
    assert status["state"] == "offline" and "connection refused" in status["last_error"]
    assert engine.daemon._next_wakeup() > engine.clock()  # pending and offline: no busy loop
    for _ in range(3):
        status = engine.advance(10)
    assert status["connected"] and status["reconciles"] == 2
    assert engine.on_server(RUNBOOK) == b"# while offline\n"
    assert engine.remote.connects == 4


def test_an_unknown_host_key_is_the_error_state(engine: Engine) -> None:
    engine.remote.connect_errors = [UnknownHostKeyError("droplet's key is not in known_hosts")]
    status = engine.turn()
    assert status["state"] == "error" and "known_hosts" in status["last_error"]
    assert engine.request("reconnect").result(0) == {}
    assert engine.turn()["state"] == "watching"


def test_a_failed_probe_reconnects(engine: Engine) -> None:
    started(engine)
    engine.remote.probe_errors = [ConnectError("no answer in time")]
    engine.advance(25)  # past the probe interval
    status = engine.advance(5)
    assert status["connected"] and status["reconciles"] == 2


def test_waking_from_sleep_reconnects_and_reconciles(engine: Engine) -> None:
    started(engine)
    engine.wall.advance(3600)  # the wall clock jumped, the monotonic one did not: we slept
    status = engine.turn()
    assert status["connected"] and status["reconciles"] == 2 and engine.remote.connects == 2


def test_flush_and_resume_while_the_server_is_unreachable(engine: Engine) -> None:
    engine.remote.connect_errors = [ConnectError("connection refused")] * 3
    with pytest.raises(ConnectError, match="refused"):
        engine.request("flush").result(0)
    result = engine.request("resume").result(0)
    assert result["sent"] == 0 and "refused" in result["error"]


def test_nothing_pending_flushes_nothing(engine: Engine) -> None:
    started(engine)
    assert engine.request("flush").result(0) == sent(0)
    assert engine.request("status").result(0)["state"] == "watching"


def test_a_folder_gone_removes_what_opswatch_put_there(tmp_path: Path) -> None:
    engine = started(make_engine(tmp_path, delete=True))
    for name in ("deploy.md", "rollback.md"):
        (engine.repo / "docs/ops/runbooks" / name).unlink()
    engine.notice(FolderGone("docs/ops/runbooks"))
    status = engine.advance(QUIET_S)
    assert status["removed"] == 2 and engine.on_server(RUNBOOK) is None


def test_a_folder_moved_in_is_scanned(engine: Engine) -> None:
    started(engine)
    (engine.repo / "docs/ops/runbooks/new").mkdir()
    (engine.repo / "docs/ops/runbooks/new/a.md").write_text("a\n")
    engine.notice(FolderAppeared("docs/ops/runbooks/new"))
    engine.advance(QUIET_S)
    assert engine.on_server("docs/ops/runbooks/new/a.md") == b"a\n"


def test_an_ignore_file_change_takes_effect_with_a_reconcile(engine: Engine) -> None:
    started(engine)
    engine.edit("docs/ops/runbooks/.opswatchignore", "scratch.md\n")
    (engine.repo / "docs/ops/runbooks/scratch.md").write_text("x\n")
    engine.edit("docs/ops/runbooks/scratch.md", "x\n", ChangeKind.CREATED)
    status = engine.turn()
    assert status["reconciles"] == 2 and status["pending"] == 0
    assert engine.on_server("docs/ops/runbooks/scratch.md") is None


def test_rebuild_results_show_in_status(engine: Engine) -> None:
    started(engine)
    engine.daemon.record_rebuild(RebuildResult("demo", False, "2025-01-01T00:00Z", "exit 1"))
    status = engine.turn()
    assert status["rebuilds"][0]["service"] == "demo" and not status["rebuilds"][0]["ok"]
    assert status["last_error"] == "rebuild demo: exit 1"


def test_run_serves_until_stop_and_closes_the_connection(engine: Engine) -> None:
    thread = threading.Thread(target=engine.daemon.run)
    thread.start()
    assert engine.daemon.submit(parse_status()).result(timeout=10)["connected"]
    engine.daemon.stop()
    thread.join(timeout=10)
    assert not thread.is_alive() and not engine.remote.connected


def parse_status() -> object:
    from opswatch.daemon.requests import StatusQuery

    return StatusQuery()
