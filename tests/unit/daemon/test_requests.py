"""Control requests are parsed into typed values at the socket, with bounds; everything else is
a `UsageError` (an `ok: false` reply), never an exception in the engine."""

from __future__ import annotations

from typing import Any

import pytest

from opswatch.daemon.control import ControlServer
from opswatch.daemon.pause import MAX_PAUSE_S
from opswatch.daemon.requests import (
    COMMANDS,
    Flush,
    Forced,
    Pause,
    Reconnect,
    Reload,
    Resume,
    StatusQuery,
    Stop,
    Undo,
    parse_request,
)
from opswatch.errors import UsageError


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ("status", {}, StatusQuery()),
        ("pause", {}, Pause()),
        ("pause", {"seconds": None}, Pause()),
        ("pause", {"seconds": 30}, Pause(30.0)),
        ("pause", {"seconds": 0.5}, Pause(0.5)),
        ("pause", {"seconds": MAX_PAUSE_S}, Pause(MAX_PAUSE_S)),
        ("resume", {}, Resume()),
        ("flush", {}, Flush()),
        ("reconnect", {}, Reconnect()),
        ("undo", {}, Undo()),
        ("undo", {"batch": None, "force": False}, Undo()),
        ("undo", {"batch": 41}, Undo(41)),
        ("undo", {"batch": 41, "force": True}, Undo(41, force=True)),
        ("undo", {"batch": 2**63 - 1}, Undo(2**63 - 1)),
        ("stop", {}, Stop()),
        ("reload", {}, Reload()),
        ("forced", {"paths": []}, Forced(())),
        ("forced", {"paths": ["a/b", "c"], "batch": 7}, Forced(("a/b", "c"), 7)),
    ],
)
def test_each_command_parses_into_its_dataclass(
    command: str, args: dict[str, Any], expected: object
) -> None:
    assert parse_request(command, args) == expected


@pytest.mark.parametrize(
    ("command", "args", "problem"),
    [
        ("flush", {"bogus": 1}, "bad arguments for flush: unknown argument(s) 'bogus'"),
        ("status", {"x": 1}, "unknown argument(s)"),
        ("pause", {"seconds": "10m"}, "must be a number"),
        ("pause", {"seconds": True}, "must be a number"),
        ("pause", {"seconds": [1]}, "must be a number"),
        ("pause", {"seconds": 0}, "more than 0"),
        ("pause", {"seconds": -5}, "more than 0"),
        ("pause", {"seconds": 100_000_000 * 86400}, "at most 31536000 (a year)"),
        ("pause", {"seconds": 10**400}, "at most"),
        ("pause", {"seconds": float("inf")}, "at most"),
        ("pause", {"seconds": float("nan")}, "at most"),
        ("pause", {"seconds": 1, "until": 2}, "unknown argument(s) 'until'"),
        ("pause", [], "expected an object"),
        ("pause", None, "expected an object"),
        ("rebuilt", {}, "unknown command 'rebuilt'"),
        ("rollback", {"batch": 1, "paths": []}, "unknown command 'rollback'"),
        ("undo", {"batch": "41"}, "`batch` must be a batch number"),
        ("undo", {"batch": True}, "`batch` must be a batch number"),
        ("undo", {"batch": 4.5}, "`batch` must be a batch number"),
        ("undo", {"batch": 0}, "more than 0"),
        ("undo", {"batch": -3}, "more than 0"),
        ("undo", {"batch": 2**63}, "at most"),
        ("undo", {"force": "yes"}, "`force` must be true or false"),
        ("undo", {"force": None}, "`force` must be true or false"),
        ("undo", {"batch": 1, "only": ["x"]}, "unknown argument(s) 'only'"),
        ("stop", {"now": True}, "unknown argument(s) 'now'"),
        ("reload", {"config": "/etc/x"}, "unknown argument(s) 'config'"),
        ("forced", {}, "`paths` must be a list"),
        ("forced", {"paths": "a"}, "`paths` must be a list"),
        ("forced", {"paths": [1]}, "non-empty local path"),
        ("forced", {"paths": [""]}, "non-empty local path"),
        ("forced", {"paths": ["x" * 5000]}, "non-empty local path"),
        ("forced", {"paths": [], "batch": "1"}, "`batch` must be a batch number"),
        ("forced", {"paths": [], "batch": 0}, "more than 0"),
        ("__init__", {}, "unknown command"),
        ("_request_flush", {}, "unknown command"),
        (["flush"], {}, "unknown command"),
        (None, {}, "unknown command None"),
    ],
)
def test_anything_else_is_a_usage_error(command: object, args: object, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_request(command, args)
    assert problem in str(caught.value)
    assert caught.value.exit_code == 2


def test_one_table_lists_the_commands() -> None:
    assert set(COMMANDS) == {
        "status",
        "pause",
        "resume",
        "flush",
        "reconnect",
        "undo",
        "stop",
        "reload",
        "forced",
    }


class Unused:
    stopping: Any = None

    def status(self) -> Any:
        raise AssertionError("not asked")

    def submit(self, request: Any) -> Any:
        raise AssertionError("never reaches the engine")


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ([], "expected a JSON object"),
        ("flush", "expected a JSON object"),
        ({"v": 1}, "unknown command None"),
        ({"v": 1, "cmd": "flush", "args": {"bogus": 1}}, "unknown argument(s) 'bogus'"),
        ({"v": 1, "cmd": "flush", "extra": 1}, "unknown field(s) 'extra'"),
        ({"v": True, "cmd": "flush"}, "protocol version True not understood"),
        ({"v": 1.0, "cmd": "flush"}, "protocol version 1.0"),
        ({"v": 2, "cmd": "flush"}, "protocol version 2"),
        ({"v": 1, "cmd": "pause", "args": {"seconds": 8.64e12}}, "at most"),
    ],
)
def test_the_server_answers_a_bad_envelope_without_the_engine(
    message: object, problem: str, tmp_path: Any
) -> None:
    from opswatch.paths import StatePaths

    server = ControlServer(Unused(), StatePaths(tmp_path, tmp_path))
    reply = server.answer(message)
    assert reply["ok"] is False and reply["exit"] == 2
    assert problem in reply["error"]
