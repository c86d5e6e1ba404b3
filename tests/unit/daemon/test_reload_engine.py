"""Reload and `sync --force` in the engine over a `FakeRemote`: the state machine, turn by turn.
The real thing, through `opswatch run` and the real sshd, is in tests/integration/daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_setup import QUIET_S, RUNBOOK, Engine, make_engine, remote_of

from conftest import toml_document
from fakes import FakeRemote
from opswatch.config import Config
from opswatch.daemon.engine import Daemon
from opswatch.daemon.reload import Reloader, hand_over
from opswatch.errors import ConfigError
from opswatch.sync.syncer import PassReport

RULE = {"from": "docs/ops", "match": ["Dockerfile.*", "runbooks/"], "to": "docs/ops"}


def write(engine: Engine, **sync: int) -> None:
    doc = {
        "remote": {"host": "droplet", "root": "/srv/app"},
        "sync": {"debounce_ms": int(QUIET_S * 1000), "max_delay_ms": 2000, **sync},
        "rule": [RULE],
    }
    engine.daemon.config.source.write_text(toml_document(doc))


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(tmp_path)
    write(engine)  # the config the engine was made from, now on disk
    engine.turn()  # connected, reconciled
    return engine


def reloader(engine: Engine, built: list[Daemon]) -> Reloader:
    def build(config: Config) -> Daemon:
        daemon = Daemon(config, engine.paths, FakeRemote(), watch=False)
        built.append(daemon)
        return daemon

    return Reloader(engine.daemon, build)


def test_an_invalid_file_is_refused_with_every_problem(engine: Engine) -> None:
    built: list[Daemon] = []
    reloader(engine, built)
    engine.daemon.config.source.write_text('[sync]\ndebounce_ms = "x"\n')
    future = engine.request("reload")
    with pytest.raises(ConfigError) as caught:
        future.result(timeout=0)
    assert any("sync.debounce_ms" in problem for problem in caught.value.problems)
    assert engine.daemon.successor is None and not built


def test_an_unchanged_file_builds_nothing(engine: Engine) -> None:
    built: list[Daemon] = []
    reloader(engine, built)
    assert engine.request("reload").result(timeout=0) == {"changed": False}
    assert engine.daemon.successor is None and not built


def test_a_changed_file_is_noticed_and_two_reloads_keep_the_last(engine: Engine) -> None:
    built: list[Daemon] = []
    reloader(engine, built)
    write(engine, delete=1)  # a TOML integer where a bool belongs: refused, nothing built
    engine.turn()
    assert engine.daemon.successor is None and not built
    write(engine, hold_over=7)
    engine.turn()  # the file watch
    first = engine.daemon.successor
    assert first is not None and first.config.sync.hold_over == 7
    write(engine, hold_over=8)
    engine.request("reload").result(timeout=0)
    assert engine.daemon.successor is built[1] and built[1].config.sync.hold_over == 8
    assert first.stopping.is_set()  # discarded: its threads end


def test_pending_edits_go_to_the_new_daemon(engine: Engine) -> None:
    built: list[Daemon] = []
    reloader(engine, built)
    engine.edit(RUNBOOK, "# pending\n")
    write(engine, hold_over=7)
    engine.request("reload")
    new = engine.daemon.successor
    assert new is not None
    hand_over(engine.daemon, new)
    assert new.sender.pending_paths() == (RUNBOOK,)
    assert engine.daemon.stopping.is_set()


def test_forced_clears_the_conflict_and_follows_as_a_batch(engine: Engine) -> None:
    reports: list[PassReport] = []
    engine.daemon.after_batch.append(reports.append)
    engine.remote.edit(remote_of(RUNBOOK), b"# hotfix on the server\n")
    engine.edit(RUNBOOK, "# local edit\n")
    assert engine.advance(QUIET_S)["conflicts"] == [remote_of(RUNBOOK)]
    reports.clear()
    answer = engine.request("forced", paths=[RUNBOOK], batch=None).result(timeout=0)
    assert answer == {"conflicts_cleared": 1}
    assert engine.status()["conflicts"] == []
    assert [report.landed for report in reports] == [[RUNBOOK]]
