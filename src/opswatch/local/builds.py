"""The builds' needs read from this machine, and the check of them against the server.

The compose file, the Dockerfiles and the ``.dockerignore`` files are read from their local
copies: the files that land where the server reads them (``core.builds.local_for_remote``).
``SourceCheck`` asks the server about every source in one batched ``stat`` (a callable, so each
caller passes the SFTP channel its own thread may use) and says which are missing and why.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from opswatch.config import Config
from opswatch.core.builds import (
    BuildGap,
    BuildNeeds,
    Sending,
    gaps,
    ignore_file_candidates,
    local_for_remote,
    needs_of,
)
from opswatch.core.compose import ComposeProject, compose_target, load_compose, read_project
from opswatch.core.dockerfile import CopySource
from opswatch.core.rules import Router, Verdict
from opswatch.errors import LocalFileError
from opswatch.local.guarded import read_small
from opswatch.model import RemoteFile

Targets = Callable[[str], tuple[str, ...]]
StatMany = Callable[[Sequence[str]], Mapping[str, RemoteFile | None]]
# Compose files, Dockerfiles, .dockerignore: kilobytes; read guarded (no link, FIFO or device)
BUILD_FILE_CAP = 4 * 1024 * 1024
WALK_LIMIT = 20_000  # files looked at per source folder before the answer is "not sent"


def compose_remote(config: Config, targets: Targets) -> str | None:
    """Where the compose file lands: its copy in ``compose_dir``, else in its first target."""
    compose = config.rebuild.compose_file
    if compose is None:
        return None
    compose_dir = posixpath.join(config.remote.root, config.rebuild.compose_dir)
    fallback = posixpath.join(compose_dir, posixpath.basename(compose))
    return compose_target(targets(compose), compose_dir) or fallback


def read_compose_project(config: Config, targets: Targets) -> ComposeProject:
    """The compose file's services as they land; without one, the services the config names."""
    compose = config.rebuild.compose_file
    remote = compose_remote(config, targets)
    if compose is None or remote is None:
        return ComposeProject("", tuple(s.name for s in config.rebuild.services))
    data = read_small(config.local_root, compose, cap=BUILD_FILE_CAP)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LocalFileError(f"{compose}: not valid UTF-8 (byte {exc.start})") from exc
    return read_project(load_compose(text, compose), remote)


def _read(config: Config, targets: Targets, remote: str) -> tuple[str | None, str | None]:
    """(text, problem) of the local file that lands at ``remote``."""
    local = local_for_remote(remote, config.rules, config.remote.root, targets)
    if local is None:
        return None, f"{remote}: no local file lands there"
    try:
        data = read_small(config.local_root, local, cap=BUILD_FILE_CAP)
    except LocalFileError as exc:
        return None, str(exc)
    return data.decode("utf-8", errors="replace"), None


def read_needs(config: Config, targets: Targets, project: ComposeProject) -> list[BuildNeeds]:
    """Every build's needs; a Dockerfile that can't be read here gives needs with a problem."""
    found: list[BuildNeeds] = []
    for build in project.builds:
        if build.context is None or build.dockerfile is None:
            continue
        text, problem = _read(config, targets, build.dockerfile)
        ignore = None
        for candidate in ignore_file_candidates(build):
            ignore, _missing = _read(config, targets, candidate)
            if ignore is not None:
                break
        need = needs_of(build, text, ignore, problem)
        if need is not None:
            found.append(need)
    return found


class SourceCheck:
    """Which sources of the builds the server lacks, and whether the rules would bring them."""

    def __init__(self, config: Config, router: Router, stat: StatMany) -> None:
        self.config = config
        self.router = router
        self.stat = stat

    def needs(self, services: Sequence[str] | None = None) -> list[BuildNeeds]:
        project = read_compose_project(self.config, self.router.targets)
        found = read_needs(self.config, self.router.targets, project)
        return [n for n in found if services is None or n.service in services]

    def gaps(
        self, services: Sequence[str] | None = None, *, include_sent: bool = False
    ) -> list[BuildGap]:
        """Missing sources no rule sends (``include_sent``: every missing source)."""
        if self.config.rebuild.compose_file is None:
            return []
        needs = self.needs(services)
        paths = sorted({n.remote(s) for n in needs for s in n.sources})
        answers = self.stat(paths) if paths else {}
        present = {path: answers.get(path) is not None for path in paths}
        return gaps(needs, present, self.sending, include_sent=include_sent)

    def sending(self, need: BuildNeeds, source: CopySource) -> Sending:
        """Whether a rule sends a local file of ``source`` into the build context."""
        remote = need.remote(source)
        rules, root = self.config.rules, self.config.remote.root
        local = local_for_remote(remote, rules, root, self.router.targets)
        if local is None:
            return Sending(False)
        full = self.config.local_root / local
        if full.is_file() and not source.is_glob:
            return self._file(need, local)
        if full.is_dir():
            return self._folder(need, source, local, full)
        never = self.router.never_reason(local) or self.router.never_reason(local + "/")
        return Sending(False, never)

    def _file(self, need: BuildNeeds, local: str) -> Sending:
        decision = self.router.decide(local)
        if decision.verdict is Verdict.ROUTED:
            inside = need.context.rstrip("/") + "/"
            return Sending(any(t.startswith(inside) for t in decision.targets))
        return Sending(False, decision.reason if decision.verdict is Verdict.REFUSED else None)

    def _folder(self, need: BuildNeeds, source: CopySource, local: str, full: Path) -> Sending:
        never = self.router.never_reason(local + "/")
        if never is not None:
            return Sending(False, never)
        seen = 0
        for current, dirs, names in os.walk(full):
            rel_dir = os.path.relpath(current, self.config.local_root).replace(os.sep, "/")
            kept = []
            for name in sorted(dirs):
                reason = self.router.excluded_folder(f"{rel_dir}/{name}")
                if reason is None:
                    kept.append(name)
                elif reason.startswith("never"):
                    never = never or reason
            dirs[:] = kept
            for name in sorted(names):
                seen += 1
                if seen > WALK_LIMIT:
                    return Sending(False, never)
                path = f"{rel_dir}/{name}"
                decision = self.router.decide(path)
                if decision.verdict is Verdict.REFUSED:
                    never = never or decision.reason
                if any(need.copied_by(t) for t in decision.targets):
                    return Sending(True)
        return Sending(False, never)

    def before_build(self, service: str) -> str | None:
        """What a build of ``service`` would miss on the server, as lines; None when nothing."""
        try:
            missing = self.gaps([service], include_sent=True)
        except LocalFileError:
            return None  # no compose file to read here: the server's copy may still build
        if not missing:
            return None
        return "\n".join(gap.message for gap in missing)
