"""What each compose build takes from its context on the server, and what of it is missing.

Pure: the compose project (``core.compose``), the Dockerfiles' and ``.dockerignore``s' text and
the answers of a remote ``stat`` in; ``BuildNeeds`` and ``BuildGap``s out. Paths are resolved
as docker compose resolves them on the server: the context against the compose file's remote
folder, the Dockerfile against the context, each source against the context.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from opswatch.config import Rule
from opswatch.core.compose import BuildSpec
from opswatch.core.dockerfile import (
    CopySource,
    DockerfileSources,
    DockerIgnore,
    NotAnalysed,
    read_dockerfile,
)

NO_RULE = "not on the server and no rule sends it"


@dataclass(frozen=True)
class BuildNeeds:
    """One service's build: where it runs on the server and the context files it copies."""

    service: str
    context: str  # absolute remote folder
    dockerfile: str  # absolute remote path
    sources: tuple[CopySource, ...] = ()
    not_analysed: tuple[NotAnalysed, ...] = ()
    problem: str | None = None  # the Dockerfile could not be read here
    ignore: DockerIgnore = field(default_factory=DockerIgnore, compare=False)

    def remote(self, source: CopySource) -> str:
        """What must exist on the server: the file or folder, or a glob's fixed folder."""
        relative = source.static_prefix if source.is_glob else source.path
        return posixpath.normpath(posixpath.join(self.context, relative))

    def copied_by(self, remote_path: str) -> CopySource | None:
        """The source that takes ``remote_path`` into the build, if one does."""
        if not remote_path.startswith(self.context.rstrip("/") + "/"):
            return None
        relative = posixpath.relpath(remote_path, self.context)
        if self.ignore.excludes(relative):
            return None
        return next((s for s in self.sources if s.copies(relative)), None)


@dataclass(frozen=True)
class BuildGap:
    """A source a build needs that the server lacks, and why opswatch will not bring it."""

    service: str
    source: CopySource
    remote: str
    reason: str

    @property
    def message(self) -> str:
        return f"{self.service}: {self.source.label}: {self.reason}"

    def to_json(self) -> dict[str, object]:
        return {
            "service": self.service,
            "source": self.source.written,
            "instruction": self.source.instruction,
            "remote": self.remote,
            "reason": self.reason,
        }


def needs_of(
    build: BuildSpec, dockerfile: str | None, dockerignore: str | None, problem: str | None = None
) -> BuildNeeds | None:
    """A service's needs from its Dockerfile's text (None: unreadable) and its ignore file."""
    if build.context is None or build.dockerfile is None:
        return None  # a git or URL context, or an inline Dockerfile: no local file involved
    parsed = read_dockerfile(dockerfile) if dockerfile is not None else DockerfileSources()
    ignore = DockerIgnore(dockerignore.splitlines() if dockerignore else ())
    return BuildNeeds(
        build.service,
        build.context,
        build.dockerfile,
        parsed.sources,
        parsed.not_analysed,
        problem,
        ignore,
    )


def ignore_file_candidates(build: BuildSpec) -> tuple[str, ...]:
    """Where BuildKit looks for the ignore file: ``<Dockerfile>.dockerignore`` first."""
    assert build.context is not None
    shared = posixpath.join(build.context, ".dockerignore")
    if build.dockerfile is None:
        return (shared,)
    return (build.dockerfile + ".dockerignore", shared)


def local_for_remote(
    remote: str, rules: Sequence[Rule], remote_root: str, targets: Callable[[str], Sequence[str]]
) -> str | None:
    """The local path (relative to local.root) whose copy lands at ``remote``.

    First the rules, read backwards (a rule's remote folder holding ``remote``, checked by
    routing the candidate forwards); else the same place below local.root as below
    remote.root, the layout in which a compose file's ``context: ..`` is the repository.
    """
    for rule in rules:
        for to in rule.to:
            folder = posixpath.normpath(posixpath.join(remote_root, to))
            if not remote.startswith(folder.rstrip("/") + "/"):
                continue
            candidate = posixpath.join(rule.source, posixpath.relpath(remote, folder))
            if remote in targets(candidate):
                return candidate
    root = remote_root.rstrip("/")
    if remote == root:
        return ""
    if remote.startswith(root + "/"):
        return remote[len(root) + 1 :]
    return None


@dataclass(frozen=True)
class Sending:
    """What the rules do with a source's local files: some go, some are refused by never."""

    sent: bool
    never: str | None = None  # the never reason of a refused file, when nothing is sent


def gaps(
    needs: Iterable[BuildNeeds],
    present: Mapping[str, bool],
    sending: Callable[[BuildNeeds, CopySource], Sending],
    *,
    include_sent: bool = False,
) -> list[BuildGap]:
    """The sources missing on the server (``present``: remote path → exists) that no rule sends.

    ``include_sent``: also those a rule sends but that have not landed (the check before a
    build, where anything missing makes it fail).
    """
    found: list[BuildGap] = []
    for need in needs:
        for source in need.sources:
            remote = need.remote(source)
            if present.get(remote, False):
                continue
            how = sending(need, source)
            if how.sent and not include_sent:
                continue
            found.append(BuildGap(need.service, source, remote, _reason(how)))
    return found


def _reason(how: Sending) -> str:
    if how.sent:
        return "not on the server yet (a rule sends it: it has not landed)"
    if how.never is not None:
        return (
            f"not on the server, and opswatch never sends it ({how.never}; no rule overrides never)"
        )
    return NO_RULE
