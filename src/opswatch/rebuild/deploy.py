"""Carrying out a rebuild: the commands for the remote shell, their order, one result each.

``ComposeView`` answers which services a set of local paths affects (reading the compose file
afresh) and writes each command for the remote shell: in ``remote.root/compose_dir``, with
``COMPOSE_FILE`` set, the service name validated and quoted. ``Deployer`` runs, per piece of
work: ``check`` first when the compose file changed (a failure deploys nothing), then ``build``
and ``up`` per service (a failed build skips its ``up``), then ``apply``; after each ``up`` the
service's ``health`` URL is requested from here. It owns no thread: the rebuild worker and
``opswatch rebuild`` call it.
"""

from __future__ import annotations

import posixpath
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from opswatch.config import Config
from opswatch.core.builds import BuildNeeds
from opswatch.core.compose import (
    APPLY,
    Affected,
    ChangedFile,
    ComposeProject,
    affected,
    compose_file_env,
)
from opswatch.errors import LocalFileError, OpswatchError, UsageError
from opswatch.local.builds import compose_remote, read_compose_project, read_needs
from opswatch.model import RebuildResult, iso_time, valid_service_name
from opswatch.rebuild.health import HealthAnswer, ask_health
from opswatch.ssh.commands import CommandResult

log = structlog.get_logger("opswatch.rebuild")

TAIL_LINES = 12  # lines of output kept in a failed result's detail


class CommandRunner(Protocol):
    def __call__(
        self, command: str, *, timeout: float, on_line: Callable[[str], None] | None = None
    ) -> CommandResult: ...


HealthCheck = Callable[[str, float], HealthAnswer]
Preflight = Callable[[str], str | None]  # service → what its build would miss, or None
# Puts back the files of a batch (by id) that a service (by name) depends on; says where to
# ("batch 41"); raises OpswatchError when it could not.
Rollback = Callable[[int, str], str]


@dataclass(frozen=True)
class Work:
    services: tuple[str, ...] = ()
    apply: bool = False
    batch: int | None = None  # the latest batch (deploy history) it rebuilds for

    def __bool__(self) -> bool:
        return bool(self.services) or self.apply


class ComposeView:
    """The config's compose file as it lands on the server, read afresh for every question."""

    def __init__(self, config: Config, targets: Callable[[str], tuple[str, ...]]) -> None:
        self.config = config
        self.targets = targets
        rebuild = config.rebuild
        self.compose_dir = posixpath.join(config.remote.root, rebuild.compose_dir)
        self.when = {s.name: s.when for s in rebuild.services if s.when}
        self.health = {s.name: s.health for s in rebuild.services if s.health}
        self.compose_remote = compose_remote(config, targets)

    @property
    def compose_file_env(self) -> str | None:
        if self.compose_remote is None:
            return None
        return compose_file_env(self.compose_remote, self.compose_dir)

    def project(self) -> ComposeProject:
        """The compose file's services; without one, the services the config names."""
        return read_compose_project(self.config, self.targets)

    def needs(self, project: ComposeProject) -> list[BuildNeeds]:
        """What each build copies from its context (its Dockerfile read afresh)."""
        return read_needs(self.config, self.targets, project)

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
            needs=self.needs(project),
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
        health: HealthCheck = ask_health,
        wall: Callable[[], float] = time.time,
        preflight: Preflight | None = None,
        rollback: Rollback | None = None,
    ) -> None:
        self.view = view
        self.run = run
        self.health = health
        self.preflight = preflight
        self.rollback = rollback
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
            results.append(self._service(service, work.batch))
        if work.apply:
            results.append(self._apply({r.service for r in results}, work.batch))
        return results

    def _service(self, service: str, batch: int | None = None) -> RebuildResult:
        missing = self.preflight(service) if self.preflight is not None else None
        if missing is not None:
            # Fail here, naming the files, rather than minutes later inside `docker compose build`.
            log.warning("rebuild_sources_missing", service=service, detail=missing)
            return self.result(service, False, missing)
        failure = self._build_and_up(service)
        if failure is not None:
            return self.result(service, False, failure)  # the old containers keep running
        answer = self._health(service)
        if answer is None or answer.ok:
            return self.result(service, True, "build, up: ok" + _said(answer))
        if self.rebuild.on_failure != "rollback" or batch is None or self.rollback is None:
            return self.result(service, False, "build, up: ok" + _said(answer))
        return self._roll_back(service, batch, answer, self.rollback)

    def _build_and_up(self, service: str) -> str | None:
        for step, template in (("build", self.rebuild.build), ("up", self.rebuild.up)):
            failure = self._step(service, step, self.view.command(template, service))
            if failure is not None:
                return failure
        return None

    def _roll_back(
        self, service: str, batch: int, answer: HealthAnswer, rollback: Rollback
    ) -> RebuildResult:
        """Health failed after ``up``: the batch's files for ``service`` go back, then one
        more build, up and health check. Whatever that gives is reported; never a loop."""
        failed = f"health failed ({answer.said})"
        log.warning("rollback", service=service, batch=batch, reason=answer.detail)
        try:
            where = rollback(batch, service)
        except OpswatchError as exc:
            return self.result(service, False, f"{failed}; not rolled back: {exc}")
        rolled = f"{failed}, rolled back to {where}"
        failure = self._build_and_up(service)
        if failure is not None:
            return replace(self.result(service, False, f"{rolled}; {failure}"), rolled_back=True)
        again = self._health(service)
        state = "healthy" if again is None or again.ok else f"still failing: {again.said}"
        detail = f"{rolled} ({state}){_said(again)}"
        return replace(self.result(service, False, detail), rolled_back=True)

    def _apply(self, checked: set[str], batch: int | None = None) -> RebuildResult:
        failure = self._step(APPLY, "apply", self.view.command(self.rebuild.apply))
        if failure is not None:
            return self.result(APPLY, False, failure)
        failed, details = self._check_others(checked)
        if failed is None:
            return self.result(APPLY, True, "check, apply: ok" + details)
        if self.rebuild.on_failure != "rollback" or batch is None or self.rollback is None:
            return self.result(APPLY, False, "check, apply: ok" + details)
        # The compose file of the batch goes back; `check` passed for it when it landed.
        said = f"health failed ({failed.said})"
        try:
            where = self.rollback(batch, APPLY)
        except OpswatchError as exc:
            return self.result(APPLY, False, f"{said}; not rolled back: {exc}")
        rolled = f"{said}, rolled back to {where}"
        failure = self._step(APPLY, "apply", self.view.command(self.rebuild.apply))
        if failure is not None:
            return replace(self.result(APPLY, False, f"{rolled}; {failure}"), rolled_back=True)
        again, details = self._check_others(checked)
        state = "healthy" if again is None else f"still failing: {again.said}"
        return replace(self.result(APPLY, False, f"{rolled} ({state}){details}"), rolled_back=True)

    def _check_others(self, checked: set[str]) -> tuple[HealthAnswer | None, str]:
        """Every service with a health URL not checked yet: the first failure, and all said."""
        failed, details = None, ""
        for service in self.view.health:
            if service not in checked:
                answer = self._health(service)
                details += _said(answer)
                if answer is not None and not answer.ok and failed is None:
                    failed = answer
        return failed, details

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

    def _health(self, service: str) -> HealthAnswer | None:
        """The service's health URL asked after ``up``; None without one."""
        url = self.view.health.get(service)
        if url is None:
            return None
        answer = self.health(url, float(self.rebuild.health_timeout_s))
        log.info("health", service=service, ok=answer.ok, detail=answer.detail)
        return answer

    def result(self, service: str, ok: bool, detail: str) -> RebuildResult:
        return RebuildResult(service, ok, iso_time(self.wall()), detail)


def _said(answer: HealthAnswer | None) -> str:
    return "" if answer is None else f"; health: {answer.detail}"


def unknown_services(project: ComposeProject, services: Sequence[str]) -> list[str]:
    return [s for s in services if s not in project.services]
