"""Rebuilding and redeploying the compose services a landed batch affects, then their health.

The engine thread only decides (``RebuildHook``, after a batch has fully landed) and hands work
to a ``RebuildWorker`` thread, which runs the commands on exec channels of the same SSH
transport, so uploads keep flowing while a build takes minutes. The SFTP client stays with the
engine thread; results come back to it as a ``rebuilt`` control request.

Per piece of work: ``check`` first when the compose file changed (a failure deploys nothing),
then ``build`` and ``up`` per service (a failed build skips its ``up``), then ``apply``; after
each ``up`` the service's ``health`` URL is requested from here.
"""

from __future__ import annotations

import posixpath
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import structlog

from opswatch.compose import (
    APPLY,
    Affected,
    ChangedFile,
    ComposeProject,
    affected,
    compose_file_env,
    compose_target,
    load_compose,
    read_project,
    valid_service_name,
)
from opswatch.config import Config
from opswatch.errors import ConnectError, LocalFileError, OpswatchError, UsageError
from opswatch.health import check_health
from opswatch.model import RebuildResult, State
from opswatch.remote_exec import CommandResult

if TYPE_CHECKING:
    from opswatch.daemon import Daemon
    from opswatch.remote import SshRemote
    from opswatch.syncer import PassReport

log = structlog.get_logger("opswatch.rebuild")

TAIL_LINES = 12  # lines of output kept in a failed result's detail
MAX_RETRIES = 3  # a piece of work cut by a dropped connection is tried again this often


class CommandRunner(Protocol):
    def __call__(
        self, command: str, *, timeout: float, on_line: Callable[[str], None] | None = None
    ) -> CommandResult: ...


HealthCheck = Callable[[str, float], tuple[bool, str]]


@dataclass(frozen=True)
class Work:
    services: tuple[str, ...] = ()
    apply: bool = False

    def __bool__(self) -> bool:
        return bool(self.services) or self.apply


def now_iso(wall: Callable[[], float] = time.time) -> str:
    return datetime.fromtimestamp(wall(), UTC).isoformat(timespec="seconds")


class ComposeView:
    """The config's compose file as it lands on the server, read afresh for every question."""

    def __init__(self, config: Config, targets: Callable[[str], tuple[str, ...]]) -> None:
        self.config = config
        self.targets = targets
        rebuild = config.rebuild
        self.compose_dir = posixpath.join(config.remote.root, rebuild.compose_dir)
        self.when = {s.name: s.when for s in rebuild.services if s.when}
        self.health = {s.name: s.health for s in rebuild.services if s.health}
        compose = rebuild.compose_file
        self.compose_remote = None
        if compose is not None:
            fallback = posixpath.join(self.compose_dir, posixpath.basename(compose))
            self.compose_remote = compose_target(targets(compose), self.compose_dir) or fallback

    @property
    def compose_file_env(self) -> str | None:
        if self.compose_remote is None:
            return None
        return compose_file_env(self.compose_remote, self.compose_dir)

    def project(self) -> ComposeProject:
        """The compose file's services; without one, the services the config names."""
        compose = self.config.rebuild.compose_file
        if compose is None or self.compose_remote is None:
            names = tuple(s.name for s in self.config.rebuild.services)
            return ComposeProject("", names)
        path = self.config.local_root / compose
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise LocalFileError(f"{compose}: cannot read: {exc.strerror or exc}") from exc
        return read_project(load_compose(text, compose), self.compose_remote)

    def affected(self, paths: Iterable[str]) -> Affected:
        changed = [ChangedFile(p, self.targets(p)) for p in paths]
        if not changed:
            return Affected()
        compose_local = self.config.rebuild.compose_file
        try:
            project = self.project()
        except LocalFileError as exc:
            # Unreadable compose file: nothing to map services from; its own change still applies
            # (the remote `check` then reports what is wrong with it).
            apply = any(c.local == compose_local for c in changed)
            return Affected(apply=apply, problems=(str(exc),))
        return affected(
            project,
            changed,
            compose_dir=self.compose_dir,
            compose_local=compose_local,
            when=self.when,
        )

    def command(self, template: str, service: str | None = None) -> str:
        """``template`` for the remote shell: in the compose folder, with ``COMPOSE_FILE`` set."""
        text = template
        if service is not None:
            if not valid_service_name(service):
                raise UsageError(f"{service!r} is not a compose service name")
            text = template.replace("{service}", shlex.quote(service))
        prefix = f"cd {shlex.quote(self.compose_dir)} && "
        env = self.compose_file_env
        if env is not None:
            prefix += f"COMPOSE_FILE={shlex.quote(env)} && export COMPOSE_FILE && "
        return prefix + text


class Deployer:
    """Carries out one piece of work and returns one result per service (``*`` for apply)."""

    def __init__(
        self,
        view: ComposeView,
        run: CommandRunner,
        *,
        health: HealthCheck = check_health,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.view = view
        self.run = run
        self.health = health
        self.wall = wall
        self.rebuild = view.config.rebuild

    def deploy(self, work: Work) -> list[RebuildResult]:
        results: list[RebuildResult] = []
        if work.apply:
            failure = self._step(APPLY, "check", self.view.command(self.rebuild.check))
            if failure is not None:
                results.append(self.result(APPLY, False, failure))
                skipped = "skipped: the compose file does not pass `check`"
                return results + [self.result(s, False, skipped) for s in work.services]
        for service in work.services:
            results.append(self._service(service))
        if work.apply:
            results.append(self._apply(checked={r.service for r in results}))
        return results

    def _service(self, service: str) -> RebuildResult:
        for step, template in (("build", self.rebuild.build), ("up", self.rebuild.up)):
            failure = self._step(service, step, self.view.command(template, service))
            if failure is not None:
                return self.result(service, False, failure)
        ok, detail = self._health(service)
        return self.result(service, ok, "build, up: ok" + detail)

    def _apply(self, checked: set[str]) -> RebuildResult:
        failure = self._step(APPLY, "apply", self.view.command(self.rebuild.apply))
        if failure is not None:
            return self.result(APPLY, False, failure)
        ok, details = True, "check, apply: ok"
        for service in self.view.health:
            if service not in checked:
                healthy, detail = self._health(service)
                ok, details = ok and healthy, details + detail
        return self.result(APPLY, ok, details)

    def _step(self, service: str, step: str, command: str) -> str | None:
        """Run one command; None when it succeeded, else what failed with its last lines."""
        log.info("rebuild_step", service=service, step=step, command=command)

        def on_line(line: str) -> None:
            log.info("rebuild_output", service=service, step=step, line=line)

        started = time.monotonic()
        result = self.run(command, timeout=self.rebuild.timeout_s, on_line=on_line)
        seconds = round(time.monotonic() - started, 1)
        if result.ok:
            log.info("rebuild_step_done", service=service, step=step, seconds=seconds)
            return None
        if result.timed_out:
            what = f"{step} timed out after {self.rebuild.timeout_s} s (stopped on the server)"
        else:
            what = f"{step} failed (exit {result.exit_status})"
        log.warning("rebuild_step_failed", service=service, step=step, detail=what)
        return "\n".join([what, *result.output[-TAIL_LINES:]])

    def _health(self, service: str) -> tuple[bool, str]:
        url = self.view.health.get(service)
        if url is None:
            return True, ""
        ok, detail = self.health(url, float(self.rebuild.health_timeout_s))
        log.info("health", service=service, ok=ok, detail=detail)
        return ok, f"; health: {detail}"

    def result(self, service: str, ok: bool, detail: str) -> RebuildResult:
        return RebuildResult(service, ok, now_iso(self.wall), detail)


class RebuildWorker:
    """The thread that runs rebuilds. Work for a service queued while it runs merges into one
    follow-up; nothing starts while ``held()`` (paused or offline)."""

    def __init__(
        self,
        deployer: Deployer,
        *,
        held: Callable[[], bool],
        record: Callable[[RebuildResult], None],
        stopping: threading.Event,
    ) -> None:
        self.deployer = deployer
        self.held = held
        self.record = record
        self.stopping = stopping
        self._cond = threading.Condition()
        self._pending: dict[str, None] = {}
        self._apply = False
        self._running = False
        self._retries = 0
        self._thread = threading.Thread(target=self._loop, name="opswatch-rebuild", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request(self, work: Work) -> None:
        """Queue ``work`` (thread-safe); what is already queued is not queued twice."""
        with self._cond:
            self._pending.update(dict.fromkeys(work.services))
            self._apply = self._apply or work.apply
            self._cond.notify_all()

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._running and not self._pending and not self._apply

    def _take(self) -> Work | None:
        with self._cond:
            while not self.stopping.is_set():
                if (self._pending or self._apply) and not self.held():
                    work = Work(tuple(self._pending), self._apply)
                    self._pending.clear()
                    self._apply = False
                    self._running = True
                    return work
                self._cond.wait(0.2)  # held() has no event to wait on: look again shortly
            return None

    def _loop(self) -> None:
        while (work := self._take()) is not None:
            try:
                self._deploy(work)
            finally:
                with self._cond:
                    self._running = False

    def _deploy(self, work: Work) -> None:
        log.info("rebuild", services=list(work.services), apply=work.apply)
        try:
            results = self.deployer.deploy(work)
        except ConnectError as exc:
            if self.stopping.is_set():
                return
            self._retries += 1
            retry = self._retries <= MAX_RETRIES
            detail = f"connection lost: {exc}" + (
                "; will retry after reconnecting" if retry else ""
            )
            results = [self.deployer.result(s, False, detail) for s in _keys(work)]
            if retry:
                self.request(work)
            else:
                self._retries = 0
        except OpswatchError as exc:
            results = [self.deployer.result(s, False, str(exc)) for s in _keys(work)]
        except Exception as exc:  # the thread must outlive a bug: later rebuilds still run
            log.exception("rebuild_crashed")
            detail = f"internal error: {type(exc).__name__}: {exc}"
            results = [self.deployer.result(s, False, detail) for s in _keys(work)]
        else:
            self._retries = 0
        for result in results:
            self.record(result)


def _keys(work: Work) -> list[str]:
    return [*work.services, *([APPLY] if work.apply else [])]


class RebuildHook:
    """``daemon.after_batch``: once a batch has fully landed, hand its rebuilds to the worker.

    Paths that landed while a file of the same batch failed, or changed while being sent, wait
    (``deferred``) if the missing file affects a service too: never build from a half-synced tree.
    """

    def __init__(
        self, view: ComposeView, worker: RebuildWorker, *, first_copy: bool = False
    ) -> None:
        self.view = view
        self.worker = worker
        self.deferred: dict[str, None] = {}
        # With an empty manifest the first pass copies every file: that is not an edit, and
        # rebuilding every service for it would surprise; `opswatch rebuild` deploys by hand.
        self.first_copy = first_copy

    def __call__(self, report: PassReport) -> None:
        if self.first_copy:
            self.first_copy = False
            if report.landed:
                log.info(
                    "rebuild_skipped", reason="first copy to this server", files=len(report.landed)
                )
                return
        self.deferred.update(dict.fromkeys(report.landed))
        if not self.deferred:
            return
        missing = [*report.failed, *report.changed_meanwhile]
        if missing and self.view.affected(missing):
            log.info("rebuild_deferred", waiting_for=missing[:5])
            return
        paths, self.deferred = list(self.deferred), {}
        found = self.view.affected(paths)
        for problem in found.problems:
            log.warning("rebuild_problem", detail=problem)
        if found:
            log.info("rebuild_queued", services=list(found.services), apply=found.apply)
            for service, reason in found.reasons:
                log.debug("rebuild_reason", service=service, reason=reason)
            self.worker.request(Work(found.services, found.apply))


def attach_rebuilds(daemon: Daemon, remote: SshRemote) -> RebuildWorker:
    """Wire rebuilds into ``daemon``: a hook after each batch, a worker on its transport."""
    view = ComposeView(daemon.config, daemon.router.targets)
    deployer = Deployer(view, remote.run)

    def held() -> bool:
        status = daemon.status()
        return status.state is State.PAUSED or not status.connected

    def record(result: RebuildResult) -> None:
        daemon.submit(
            "rebuilt", service=result.service, ok=result.ok, at=result.at, detail=result.detail
        )
        if not result.ok:
            notify_failure(daemon.config, result)

    worker = RebuildWorker(deployer, held=held, record=record, stopping=daemon.stopping)
    first_copy = not daemon.manifest.all()
    daemon.after_batch.append(RebuildHook(view, worker, first_copy=first_copy))
    worker.start()
    return worker


def notify_failure(config: Config, result: RebuildResult) -> None:
    """A desktop notice for a failed rebuild when ``notify = true`` (on the worker thread)."""
    if not config.notify:
        return
    from opswatch.notify import DesktopNotifier, notice_command

    first = result.detail.splitlines()[0] if result.detail else "failed"
    command = notice_command(f"opswatch: rebuild {result.service}", first)
    if command is not None:
        try:
            DesktopNotifier().run(command)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("notice_failed", error=str(exc))


def unknown_services(project: ComposeProject, services: Sequence[str]) -> list[str]:
    return [s for s in services if s not in project.services]
