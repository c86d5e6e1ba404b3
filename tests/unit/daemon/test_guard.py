"""An exception nobody expected, injected into each kind of unit of the engine's work: the
engine goes on, says so in `status` (`error`, `last_error`) while it persists, logs the
traceback once, and drops nothing pending."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from engine_setup import QUIET_S, RETRY_S, RUNBOOK, Engine, make_engine
from structlog.testing import capture_logs

from helpers import wait_until
from opswatch.daemon.guard import Guard, Unit
from opswatch.errors import OpswatchError
from opswatch.local.watcher import FolderGone
from opswatch.model import RebuildResult

OTHER = "docs/ops/runbooks/rollback.md"


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(tmp_path)
    assert engine.turn()["reconciles"] == 1
    return engine


def internal_errors(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "internal_error"]


def assert_error(status: dict[str, Any], *parts: str) -> None:
    assert status["state"] == "error", status
    for part in parts:
        assert part in status["last_error"], status["last_error"]


def still_syncs(engine: Engine, text: str = "# still syncing\n") -> None:
    engine.edit(OTHER, text)
    engine.advance(QUIET_S)
    assert engine.on_server(OTHER) == text.encode()


def test_a_file_that_crashes_costs_only_itself_and_waits_to_be_retried(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncer = engine.daemon.sender.syncer
    plan_paths = syncer.plan_paths

    def crash_on_the_runbook(paths: Any, **kwargs: Any) -> Any:
        paths = list(paths)
        if RUNBOOK in paths:
            raise UnicodeEncodeError("utf-8", "bad\udcff", 3, 4, "surrogates not allowed")
        return plan_paths(paths, **kwargs)

    monkeypatch.setattr(syncer, "plan_paths", crash_on_the_runbook)
    with capture_logs() as logs:
        engine.edit(RUNBOOK, "# crashes\n")
        engine.edit(OTHER, "# lands\n")
        status = engine.advance(QUIET_S)
        assert engine.on_server(OTHER) == b"# lands\n"  # the batch went on file by file
        assert status["pending_paths"] == [RUNBOOK]  # kept, not dropped
        assert_error(status, "internal error in a file", RUNBOOK, "UnicodeEncodeError")
        engine.advance(RETRY_S)
        status = engine.advance(QUIET_S)  # retried, crashed again: logged once only
        assert_error(status, RUNBOOK)
    kinds = [e["unit"] for e in internal_errors(logs)]
    assert kinds == ["batch", "file"]
    assert all(e["exc_info"] for e in internal_errors(logs))
    monkeypatch.setattr(syncer, "plan_paths", plan_paths)  # fixed
    engine.advance(RETRY_S)
    status = engine.advance(QUIET_S)
    assert status["state"] == "watching" and status["pending"] == 0 and not status["last_error"]
    assert engine.on_server(RUNBOOK) == b"# crashes\n"


def test_a_crashing_hold_check_keeps_the_batch(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine.daemon.sender.hold.head, "moved", lambda: 1 / 0)
    engine.edit(RUNBOOK, "# v2\n")
    status = engine.advance(QUIET_S)
    assert_error(status, "a batch", "ZeroDivisionError")
    assert status["pending_paths"] == [RUNBOOK]
    monkeypatch.undo()
    engine.advance(RETRY_S)
    assert engine.advance(QUIET_S)["state"] == "watching"
    assert engine.on_server(RUNBOOK) == b"# v2\n"


def test_a_crashing_watcher_event_is_made_up_by_a_reconcile(engine: Engine) -> None:
    engine.request("pause")  # no reconcile while paused: the fault stays in view
    with capture_logs() as logs:
        status = engine.notice(FolderGone(None))  # type: ignore[arg-type]
    assert [e["unit"] for e in internal_errors(logs)] == ["event"]
    assert status["state"] == "paused" and "a watcher event" in status["last_error"]
    (engine.repo / OTHER).write_text("# missed by the watcher\n")
    status = engine.request("resume").result(0)
    status = engine.turn()  # the reconcile the crashed event asked for
    assert status["state"] == "watching" and status["reconciles"] == 2
    assert engine.on_server(OTHER) == b"# missed by the watcher\n"


def test_a_crashing_reconcile_is_retried_at_the_interval(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncer = engine.daemon.sender.syncer
    monkeypatch.setattr(syncer, "plan_reconcile", lambda **_: {}["missing"])
    engine.notice(FolderGone(None))  # type: ignore[arg-type]
    status = engine.turn()
    assert_error(status, "a reconcile", "KeyError")
    still_syncs(engine)  # watched batches still go meanwhile
    monkeypatch.undo()
    status = engine.advance(RETRY_S)
    assert status["state"] == "watching" and status["reconciles"] == 2


def test_a_crashing_request_is_an_error_reply_and_the_next_one_works(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine.daemon.pause, "pause", lambda seconds: [][0])
    with pytest.raises(OpswatchError, match=r"internal error in a control request \(pause\)"):
        engine.request("pause").result(0)
    assert_error(engine.status(), "IndexError")
    monkeypatch.undo()
    assert engine.request("pause", seconds=60).result(0)["paused_until"]
    assert engine.status()["state"] == "paused"
    assert engine.request("resume").result(0)["was_paused"] is True
    still_syncs(engine)


def test_a_crashing_rebuild_result_is_reported_and_the_next_one_recorded(engine: Engine) -> None:
    engine.daemon.record_rebuild(RebuildResult("demo", False, "now", 123))  # type: ignore[arg-type]
    assert_error(engine.turn(), "a rebuild result", "AttributeError")
    engine.daemon.record_rebuild(RebuildResult("demo", True, "later", "ok"))
    status = engine.turn()
    assert status["state"] == "watching" and status["rebuilds"][0]["at"] == "later"


def test_a_crashing_status_build_publishes_a_fallback_that_says_why(engine: Engine) -> None:
    engine.daemon.link.connected_since = float("nan")
    status = engine.turn()
    assert_error(status, "internal error in the status", "ValueError")
    assert status["pid"] and status["host"] == "droplet"
    engine.daemon.link.connected_since = engine.wall()
    assert engine.turn()["state"] == "watching"


def test_a_crashing_connect_backs_off_and_connects_later(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    engine.remote.connect_errors = [RuntimeError("a library surprise")]
    status = engine.turn()
    assert_error(status, "keeping the connection", "RuntimeError: a library surprise")
    assert engine.remote.connects == 1
    assert engine.turn()["state"] == "error"  # backing off, not retrying at every turn
    assert engine.remote.connects == 1
    status = engine.advance(120)
    assert status["state"] == "watching" and status["reconciles"] == 1


def test_a_crashing_after_batch_hook_costs_only_itself(engine: Engine) -> None:
    engine.daemon.after_batch.append(lambda report: 1 / 0)
    engine.edit(RUNBOOK, "# v2\n")
    status = engine.advance(QUIET_S)
    assert_error(status, "what follows a batch", "ZeroDivisionError")
    assert status["pending"] == 0 and engine.on_server(RUNBOOK) == b"# v2\n"


def test_a_fault_of_the_loop_itself_does_not_end_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = iter([RuntimeError("once")])

    def settle_head() -> None:
        error = next(failures, None)
        if error is not None:
            raise error

    monkeypatch.setattr(engine.daemon.sender, "settle_head", settle_head)
    thread = threading.Thread(target=engine.daemon.run)
    with capture_logs() as logs:
        thread.start()
        try:
            wait_until(lambda: internal_errors(logs), message="the fault to be logged")
            wait_until(lambda: engine.status()["state"] == "watching", message="a clean turn")
            assert engine.daemon.submit(parse("status")).result(timeout=10)["connected"]
        finally:
            engine.daemon.stop()
            thread.join(timeout=10)
    assert not thread.is_alive()
    assert [e["unit"] for e in internal_errors(logs)] == ["loop"]


def parse(name: str) -> Any:
    from opswatch.daemon.requests import parse_request

    return parse_request(name, {})


def test_the_guard_logs_a_fault_once_until_it_clears() -> None:
    guard = Guard()
    with capture_logs() as logs:
        for _ in range(3):
            assert guard.run(Unit.BATCH, lambda: 1 / 0) is None
        assert Unit.BATCH in guard
        assert guard.run(Unit.BATCH, lambda: 7) == 7
        guard.run(Unit.BATCH, lambda: 1 / 0)
    assert [e["event"] for e in logs] == [
        "internal_error",
        "internal_error_cleared",
        "internal_error",
    ]
    assert guard.faults()[0].message.startswith("internal error in a batch: ZeroDivisionError")
