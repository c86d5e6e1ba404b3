"""The pause flag on disk: whatever is found there, the daemon starts; a bad flag is discarded
with one warning; a flag that can't be written still pauses this run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from fakes import FakeClock
from opswatch.daemon.pause import FOREVER, MAX_PAUSE_S, PauseStore

NOW = 1_750_000_000.0


@pytest.fixture
def flag(tmp_path: Path) -> Path:
    return tmp_path / "paused.json"


def load(flag: Path) -> tuple[PauseStore, list[str]]:
    with capture_logs() as logs:
        store = PauseStore(flag, FakeClock(NOW))
    return store, [f"{e['event']}: {e.get('reason', '')}" for e in logs]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not JSON"),
        (b'{"until": 17500', "not JSON"),  # truncated
        (b"\xff\xfe garbage", "not JSON"),
        (b"[" * 3000, "not JSON"),  # nested past the parser's recursion limit
        (b"[]", 'not {"until": …}'),
        (b'{"until": null, "x": 1}', 'not {"until": …}'),
        (b'{"until": "tomorrow"}', "not a time"),
        (b'{"until": true}', "not a time"),
        (b'{"until": 8.64e15}', "more than a year ahead"),  # `pause --for 100000000d`
        (b'{"until": 1e999}', "more than a year ahead"),
        (b'{"until": NaN}', "more than a year ahead"),
        (b" " * 5000, "not a regular file of at most"),
    ],
)
def test_a_bad_flag_is_discarded_with_one_warning(flag: Path, content: bytes, reason: str) -> None:
    flag.write_bytes(content)
    store, logs = load(flag)
    assert store.until is None and not store.paused()
    assert len(logs) == 1 and logs[0].startswith("pause_flag_discarded") and reason in logs[0]
    assert not flag.exists()


def test_a_folder_or_a_fifo_in_its_place_is_not_waited_on(flag: Path) -> None:
    os.mkfifo(flag)
    store, logs = load(flag)  # would block forever if opened blocking
    assert store.until is None and "not a regular file" in logs[0]
    flag.mkdir()
    store, logs = load(flag)
    assert store.until is None and "not a regular file" in logs[0] and flag.is_dir()


def test_a_symlink_is_not_followed(flag: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text('{"until": null}')
    flag.symlink_to(tmp_path / "elsewhere")
    store, logs = load(flag)
    assert store.until is None and "can't be read" in logs[0]


@pytest.mark.parametrize(
    ("saved", "until"),
    [({"until": None}, FOREVER), ({"until": NOW + 600}, NOW + 600)],
)
def test_a_good_flag_pauses_after_a_restart(flag: Path, saved: object, until: float) -> None:
    flag.write_text(json.dumps(saved))
    store, logs = load(flag)
    assert store.until == until and store.paused() and logs == []


def test_a_pause_that_ran_out_while_stopped_is_over(flag: Path) -> None:
    flag.write_text(json.dumps({"until": NOW - 1}))
    store, logs = load(flag)
    assert store.until is None and logs == [] and not flag.exists()


def test_pause_resume_and_expiry_round_trip(flag: Path) -> None:
    wall = FakeClock(NOW)
    store = PauseStore(flag, wall)
    store.pause(MAX_PAUSE_S)
    assert PauseStore(flag, wall).ends_at == NOW + MAX_PAUSE_S
    wall.advance(MAX_PAUSE_S)
    assert not store.paused() and not flag.exists()
    store.pause(None)
    assert store.ends_at is None and PauseStore(flag, wall).until == FOREVER
    assert store.resume() is True and store.resume() is False and not flag.exists()


def test_a_flag_that_cannot_be_written_still_pauses_this_run(tmp_path: Path) -> None:
    flag = tmp_path / "not-a-folder" / "paused.json"
    (tmp_path / "not-a-folder").write_text("a file where the state folder should be\n")
    store = PauseStore(flag, FakeClock(NOW))
    with capture_logs() as logs:
        store.pause(None)
    assert store.paused()
    assert [e["event"] for e in logs] == ["pause_flag_not_saved"]
    assert "after a restart it is not paused" in logs[0]["detail"]
