"""The deployer's rollback with a fake runner and a fake health check: what runs, in which
order, what the result says. The real thing is tests/integration/rebuild/test_rollback.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_worker import FakeRunner, make_config

from opswatch.core.rules import Router
from opswatch.errors import OpswatchError
from opswatch.rebuild.deploy import ComposeView, Deployer, Work
from opswatch.rebuild.health import HealthAnswer

UP = HealthAnswer(True, "HTTP 200", "url answered HTTP 200 (try 1)")
DOWN = HealthAnswer(False, "HTTP 502", "url: HTTP 502 after 3 tries in 1 s")


def view_for(root: Path, on_failure: str) -> ComposeView:
    config = make_config(
        root, on_failure=on_failure, service=[{"name": "gateway", "health": "http://h/"}]
    )
    return ComposeView(config, Router.from_config(config).targets)


def answers(*said: HealthAnswer) -> Iterator[HealthAnswer]:
    yield from said


@pytest.mark.parametrize(
    ("on_failure", "health", "rollback_fails", "detail", "rolled", "runs"),
    [
        ("keep", [DOWN], False, "build, up: ok; health: url: HTTP 502", False, 2),
        ("rollback", [UP], False, "build, up: ok; health: url answered", False, 2),
        (
            "rollback",
            [DOWN, UP],
            False,
            "health failed (HTTP 502), rolled back to batch 6 (healthy)",
            True,
            4,
        ),
        (
            "rollback",
            [DOWN, DOWN],
            False,
            "health failed (HTTP 502), rolled back to batch 6 (still failing: HTTP 502)",
            True,
            4,
        ),
        ("rollback", [DOWN], True, "health failed (HTTP 502); not rolled back: refused", False, 2),
    ],
)
def test_rollback_after_a_failed_health_check(
    tmp_path: Path,
    on_failure: str,
    health: list[HealthAnswer],
    rollback_fails: bool,
    detail: str,
    rolled: bool,
    runs: int,
) -> None:
    said = answers(*health)
    asked: list[tuple[int, str]] = []

    def rollback(batch: int, service: str) -> str:
        asked.append((batch, service))
        if rollback_fails:
            raise OpswatchError("refused")
        return "batch 6"

    runner = FakeRunner()
    deployer = Deployer(
        view_for(tmp_path, on_failure), runner, health=lambda *_: next(said), rollback=rollback
    )
    (result,) = deployer.deploy(Work(("gateway",), batch=7))
    assert result.detail.startswith(detail), result.detail
    assert (result.ok, result.rolled_back) == (health == [UP], rolled)
    assert len(runner.commands) == runs
    assert asked == ([(7, "gateway")] if on_failure == "rollback" and not health[0].ok else [])


def test_a_failed_build_rolls_nothing_back(tmp_path: Path) -> None:
    def rollback(batch: int, service: str) -> str:
        raise AssertionError("a failed build must not roll back")

    deployer = Deployer(view_for(tmp_path, "rollback"), FakeRunner(fail="build"), rollback=rollback)
    (result,) = deployer.deploy(Work(("gateway",), batch=7))
    assert result.detail.startswith("build failed") and not result.rolled_back
