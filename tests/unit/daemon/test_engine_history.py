"""The deploy history in the engine, over a fake server and hand-turned clocks: undo as a control
request, the rebuild worker's rollback, flush releasing rolled-back files, status's
`last_batch` and `rolled_back`, rebuild results filed under their batch."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_setup import QUIET_S, RUNBOOK, Engine, make_engine, remote_of, sent

from opswatch.daemon.requests import RollBack
from opswatch.errors import ConnectError, HistoryError
from opswatch.model import RebuildResult
from opswatch.sync.syncer import PassReport
from opswatch.sync.undo import UndoRefused


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return make_engine(tmp_path)


def edited(engine: Engine) -> int:
    """The first reconcile, then one edit of the runbook sent as a batch; that batch's id."""
    assert engine.turn()["reconciles"] == 1
    engine.edit(RUNBOOK, "# v2\n")
    status = engine.advance(QUIET_S)
    assert engine.on_server(RUNBOOK) == b"# v2\n"
    batch: int = status["last_batch"]["id"]
    return batch


def test_status_names_the_newest_batch_and_no_rolled_back_files(engine: Engine) -> None:
    batch = edited(engine)
    status = engine.status()
    assert batch == 2  # the first reconcile's copy is batch 1
    assert status["last_batch"]["at"] and status["rolled_back"] == []


def test_undo_puts_the_file_back_and_holds_it_until_flush(engine: Engine) -> None:
    batch = edited(engine)
    followed: list[PassReport] = []
    engine.daemon.after_batch.append(followed.append)
    result = engine.request("undo").result(0)
    assert (result["undone"], result["batch"]) == (batch, batch + 1)
    assert result["restored"] == [remote_of(RUNBOOK)] and result["locals"] == [RUNBOOK]
    assert result["rebuilds"] is True  # a hook follows this daemon's batches
    assert [(r.landed, r.batch) for r in followed] == [([RUNBOOK], batch + 1)]
    assert engine.on_server(RUNBOOK) == b"# Deploy\n"
    status = engine.status()
    assert status["rolled_back"] == [RUNBOOK] and status["pending"] == 0
    assert status["last_batch"]["id"] == batch + 1
    engine.request("reconnect")
    assert engine.turn()["reconciles"] == 2
    assert engine.on_server(RUNBOOK) == b"# Deploy\n"  # a reconcile does not send it again
    assert engine.request("flush").result(0) == sent(1)
    assert engine.on_server(RUNBOOK) == b"# v2\n"
    assert engine.status()["rolled_back"] == []


def test_undo_refusals_are_error_replies(engine: Engine) -> None:
    batch = edited(engine)
    engine.remote.edit(remote_of(RUNBOOK), b"# hotfix\n")
    with pytest.raises(UndoRefused, match="changed on the server since"):
        engine.request("undo", batch=batch).result(0)
    with pytest.raises(UndoRefused, match="no batch 99"):
        engine.request("undo", batch=99).result(0)
    assert engine.on_server(RUNBOOK) == b"# hotfix\n"
    assert engine.request("undo", batch=batch, force=True).result(0)["batch"] == batch + 1
    assert engine.on_server(RUNBOOK) == b"# Deploy\n"
    assert engine.status()["state"] == "watching"  # expected failures are not faults


def test_undo_while_the_server_is_unreachable(engine: Engine) -> None:
    edited(engine)
    engine.remote.drop()
    engine.remote.connect_errors = [ConnectError("connection refused")] * 3
    with pytest.raises(ConnectError):
        engine.request("undo").result(0)
    assert engine.on_server(RUNBOOK) == b"# v2\n"


def test_a_rollback_puts_back_only_its_paths_and_follows_with_nothing(engine: Engine) -> None:
    batch = edited(engine)
    followed: list[PassReport] = []
    engine.daemon.after_batch.append(followed.append)
    future = engine.daemon.submit(RollBack(batch, (RUNBOOK,)))
    engine.turn()
    assert future.result(0) == {"to": "batch 1"}
    assert followed == []  # the rebuild worker that asked rebuilds itself
    assert engine.on_server(RUNBOOK) == b"# Deploy\n"
    assert engine.status()["rolled_back"] == [RUNBOOK]


def test_a_rebuild_result_is_filed_under_its_batch(engine: Engine) -> None:
    batch = edited(engine)
    result = RebuildResult("demo", True, "2026-01-01T00:00:00+00:00", "ok", batch=batch)
    engine.daemon.record_rebuild(result)
    status = engine.turn()
    assert status["rebuilds"][0]["batch"] == batch
    recorder = engine.daemon.history.recorder
    assert recorder is not None
    record = recorder.history.get(batch)
    assert record is not None and [r.service for r in record.rebuilds] == ["demo"]


def test_without_a_history_undo_says_why_and_syncing_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("opswatch.daemon.engine.open_recorder", lambda *_: None)
    engine = make_engine(tmp_path)
    engine.edit(RUNBOOK, "# v2\n")
    assert engine.advance(QUIET_S)["pending"] == 0
    with pytest.raises(HistoryError, match="not available"):
        engine.request("undo").result(0)
    status = engine.status()
    assert status["last_batch"] is None and status["rolled_back"] == []
    assert engine.on_server(RUNBOOK) == b"# v2\n" and status["state"] == "watching"
