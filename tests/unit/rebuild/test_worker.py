"""The rebuild state machine with a fake command runner: order, merging, pause, deferral, quoting.

That the commands really run on the server is proven in tests/integration/test_rebuild.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_until
from opswatch.config import Config, parse_config
from opswatch.core.rules import Router
from opswatch.errors import ConnectError, UsageError
from opswatch.model import RebuildResult
from opswatch.rebuild.deploy import ComposeView, Deployer, Work
from opswatch.rebuild.worker import MAX_RETRIES, RebuildHook, RebuildWorker
from opswatch.ssh.commands import CommandResult
from opswatch.sync.syncer import PassReport

COMPOSE = "docs/ops/docker-compose.production.yml"
COMPOSE_TEXT = """\
services:
  gateway:
    build: {context: .., dockerfile: docs/ops/Dockerfile.gateway}
  demo:
    build: {context: .., dockerfile: docs/ops/Dockerfile.demo}
"""


def make_config(root: Path, **rebuild: Any) -> Config:
    (root / "docs/ops").mkdir(parents=True, exist_ok=True)
    (root / COMPOSE).write_text(COMPOSE_TEXT)
    doc = {
        "remote": {"host": "droplet", "root": "/srv/app"},
        "rule": [
            {"from": "docs/ops", "match": ["docker-compose.production.yml"], "to": "ops"},
            {"from": "docs/ops", "match": ["Dockerfile.*", "runbooks/"], "to": "docs/ops"},
        ],
        "rebuild": {"mode": "auto", "compose_file": COMPOSE, **rebuild},
    }
    return parse_config(doc, root / "opswatch.toml")


class FakeRunner:
    """Records commands; fails those containing `fail`; blocks while `gate` is clear."""

    def __init__(self, fail: str | None = None) -> None:
        self.commands: list[str] = []
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.raise_connect = 0

    def __call__(
        self, command: str, *, timeout: float, on_line: Callable[[str], None] | None = None
    ) -> CommandResult:
        self.started.set()
        if self.raise_connect:
            self.raise_connect -= 1
            raise ConnectError("connection lost")
        self.gate.wait(10)
        self.commands.append(command.rpartition(" && ")[2])
        if self.fail and self.fail in command:
            if on_line:
                on_line("boom")
            return CommandResult(1, ["boom"])
        return CommandResult(0, [])


@pytest.fixture
def view(tmp_path: Path) -> ComposeView:
    config = make_config(tmp_path)
    return ComposeView(config, Router.from_config(config).targets)


@pytest.fixture
def worker_parts(view: ComposeView) -> Iterator[tuple[RebuildWorker, FakeRunner, Any]]:
    runner = FakeRunner()
    state: dict[str, Any] = {"held": False, "held_calls": 0, "results": []}

    def held() -> bool:
        state["held_calls"] += 1
        return bool(state["held"])

    stopping = threading.Event()
    worker = RebuildWorker(
        Deployer(view, runner), held=held, record=state["results"].append, stopping=stopping
    )
    worker.start()
    yield worker, runner, state
    stopping.set()


def test_commands_run_in_the_compose_folder_with_compose_file_set(view: ComposeView) -> None:
    assert view.command("docker compose build {service}", "gateway") == (
        "cd /srv/app/ops && COMPOSE_FILE=docker-compose.production.yml && export COMPOSE_FILE"
        " && docker compose build gateway"
    )


def test_service_names_are_validated_before_any_shell(view: ComposeView) -> None:
    with pytest.raises(UsageError):
        view.command("docker compose build {service}", "x$(touch y)")
    with pytest.raises(UsageError):
        view.command("docker compose build {service}", "-rm")


def test_a_quoted_compose_dir(tmp_path: Path) -> None:
    config = make_config(tmp_path, compose_dir="my ops")
    view = ComposeView(config, Router.from_config(config).targets)
    assert view.command("true").startswith("cd '/srv/app/my ops' && COMPOSE_FILE=")


def test_order_check_build_up_apply(view: ComposeView) -> None:
    runner = FakeRunner()
    results = Deployer(view, runner).deploy(Work(("gateway",), apply=True))
    assert runner.commands == [
        "docker compose config -q",
        "docker compose build gateway",
        "docker compose up -d gateway",
        "docker compose up -d",
    ]
    assert [(r.service, r.ok) for r in results] == [("gateway", True), ("*", True)]


def test_a_failed_check_deploys_nothing(view: ComposeView) -> None:
    runner = FakeRunner(fail="config -q")
    results = Deployer(view, runner).deploy(Work(("gateway",), apply=True))
    assert runner.commands == ["docker compose config -q"]
    assert [(r.service, r.ok) for r in results] == [("*", False), ("gateway", False)]
    assert results[0].detail == "check failed (exit 1)\nboom"


def test_a_failed_build_skips_its_up_only(view: ComposeView) -> None:
    runner = FakeRunner(fail="build gateway")
    results = Deployer(view, runner).deploy(Work(("gateway", "demo")))
    assert runner.commands == [
        "docker compose build gateway",
        "docker compose build demo",
        "docker compose up -d demo",
    ]
    assert [(r.service, r.ok) for r in results] == [("gateway", False), ("demo", True)]


def test_changes_during_a_rebuild_queue_one_follow_up(worker_parts: Any) -> None:
    worker, runner, state = worker_parts
    runner.gate.clear()
    worker.request(Work(("gateway",)))
    wait_until(runner.started.is_set)
    for _ in range(5):
        worker.request(Work(("gateway",)))
    worker.request(Work(("demo",)))
    runner.gate.set()
    wait_until(lambda: worker.idle and len(state["results"]) == 3)
    builds = [c for c in runner.commands if " build " in c]
    assert builds == [
        "docker compose build gateway",
        "docker compose build gateway",
        "docker compose build demo",
    ]


def test_pause_holds_rebuilds(worker_parts: Any) -> None:
    worker, runner, state = worker_parts
    state["held"] = True
    worker.request(Work(("gateway",)))
    calls = state["held_calls"]
    wait_until(lambda: state["held_calls"] >= calls + 2)  # looked twice with work waiting
    assert runner.commands == [] and not worker.idle
    state["held"] = False
    wait_until(lambda: worker.idle and state["results"])
    assert runner.commands == ["docker compose build gateway", "docker compose up -d gateway"]


def test_a_dropped_connection_is_retried_a_few_times(worker_parts: Any) -> None:
    worker, runner, state = worker_parts
    runner.raise_connect = 1
    worker.request(Work(("gateway",)))
    wait_until(lambda: worker.idle and len(state["results"]) == 2)
    first, second = state["results"]
    assert not first.ok and "will retry" in first.detail
    assert second.ok
    runner.raise_connect = MAX_RETRIES + 5
    worker.request(Work(("demo",)))
    wait_until(lambda: worker.idle and len(state["results"]) == 2 + MAX_RETRIES + 1)
    assert all(not r.ok for r in state["results"][2:])


class RecordingWorker:
    def __init__(self) -> None:
        self.requests: list[Work] = []

    def request(self, work: Work) -> None:
        self.requests.append(work)


def hook_for(view: ComposeView) -> tuple[RebuildHook, RecordingWorker]:
    worker = RecordingWorker()
    return RebuildHook(view, worker), worker  # type: ignore[arg-type]


def test_the_hook_waits_until_the_batch_fully_landed(view: ComposeView) -> None:
    hook, worker = hook_for(view)
    hook(PassReport(landed=["docs/ops/Dockerfile.gateway"], failed={COMPOSE: "disk full"}))
    assert worker.requests == []
    hook(PassReport(landed=[COMPOSE]))
    assert worker.requests == [Work(("gateway",), apply=True)]


def test_a_file_changed_while_sent_waits_for_its_next_copy(view: ComposeView) -> None:
    hook, worker = hook_for(view)
    dockerfile = "docs/ops/Dockerfile.gateway"
    hook(PassReport(landed=[dockerfile], changed_meanwhile=[dockerfile]))
    assert worker.requests == []
    hook(PassReport(landed=[dockerfile]))
    assert worker.requests == [Work(("gateway",))]


def test_an_unrelated_failure_does_not_hold_rebuilds(view: ComposeView) -> None:
    hook, worker = hook_for(view)
    report = PassReport(
        landed=["docs/ops/Dockerfile.demo"], failed={"docs/ops/runbooks/a.md": "denied"}
    )
    hook(report)
    assert worker.requests == [Work(("demo",))]


def test_nothing_landed_nothing_requested(view: ComposeView) -> None:
    hook, worker = hook_for(view)
    hook(PassReport())
    hook(PassReport(landed=["docs/ops/runbooks/a.md"]))
    assert worker.requests == []


def test_an_unreadable_compose_file_still_applies_its_change(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    (tmp_path / COMPOSE).write_text("services: [")
    view = ComposeView(config, Router.from_config(config).targets)
    found = view.affected([COMPOSE, "docs/ops/Dockerfile.gateway"])
    assert (found.services, found.apply) == ((), True)
    assert "not valid YAML" in found.problems[0]


def test_results_carry_an_iso_time(view: ComposeView) -> None:
    (result,) = Deployer(view, FakeRunner(), wall=lambda: 0.0).deploy(Work(("demo",)))
    assert result == RebuildResult("demo", True, "1970-01-01T00:00:00+00:00", "build, up: ok")


def test_the_first_copy_to_a_server_rebuilds_nothing(view: ComposeView) -> None:
    worker = RecordingWorker()
    hook = RebuildHook(view, worker, first_copy=True)  # type: ignore[arg-type]
    hook(PassReport(landed=["docs/ops/Dockerfile.demo", COMPOSE]))
    assert worker.requests == []
    hook(PassReport(landed=["docs/ops/Dockerfile.demo"]))
    assert worker.requests == [Work(("demo",))]
