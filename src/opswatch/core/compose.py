"""Which compose services a set of changed files affects: pure, over the parsed compose file.

Paths are resolved the way docker compose resolves them on the server: ``build.context``
against the folder the compose file lands in, ``build.dockerfile`` against the context. A
service is affected by a changed file when

* its Dockerfile is the file's remote path,
* the file lies under its build context and that context is a folder of its own (not the
  compose folder, ``remote.root/compose_dir`` or one of their ancestors: the seed's
  ``context: ..`` holds the whole repository, and every edit would rebuild every service),
* the file's remote path is one its Dockerfile ``COPY``/``ADD``s from the context (``needs``,
  from ``core.builds``: exact, whatever the context, ``..`` included),
* the file's local path matches one of the service's ``when`` patterns. These are
  gitignore-style (pathspec ``GitIgnoreSpec``), relative to ``local.root``, like every other
  pattern in the config: ``src/**`` is everything below ``src``, a pattern without a slash
  matches at any depth.

A changed compose file means ``apply`` (``docker compose up -d``: compose recreates what changed).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pathspec
import yaml

from opswatch.core.dockerfile import CopySource
from opswatch.errors import LocalFileError
from opswatch.model import valid_service_name

APPLY = "*"  # the key under which an `apply` (the whole project) is reported
DEFAULT_DOCKERFILE = "Dockerfile"


@dataclass(frozen=True)
class BuildSpec:
    """Where a service's image comes from on the server; None where no file is involved."""

    service: str
    context: str | None  # absolute remote folder; None for a git or URL context
    dockerfile: str | None  # absolute remote path; None for dockerfile_inline or a URL context


@dataclass(frozen=True)
class ComposeProject:
    """The services of one compose file, as they land on the server."""

    compose_remote: str  # absolute remote path of the compose file
    services: tuple[str, ...] = ()  # valid names, in file order
    builds: tuple[BuildSpec, ...] = ()
    problems: tuple[str, ...] = ()  # what was skipped and why

    @property
    def folder(self) -> str:
        return posixpath.dirname(self.compose_remote)


@dataclass(frozen=True)
class ChangedFile:
    local: str  # relative to local.root
    remotes: tuple[str, ...]  # absolute remote paths it landed at


@dataclass(frozen=True)
class Affected:
    services: tuple[str, ...] = ()  # in compose file order
    apply: bool = False
    reasons: tuple[tuple[str, str], ...] = ()  # (service, why) for the log
    problems: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(self.services) or self.apply


class CopiedSources(Protocol):
    """A service's build sources (``core.builds.BuildNeeds``)."""

    @property
    def service(self) -> str: ...
    def copied_by(self, remote_path: str) -> CopySource | None: ...


MAX_NESTING = 64  # compose files nest a handful deep; PyYAML's composer recurses per level


def load_compose(text: str, source: str) -> Mapping[str, Any]:
    """The compose YAML as a mapping (``safe_load``: no tags, no objects); ``source`` names it."""
    try:
        _check_nesting(text, source)
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LocalFileError(f"{source}: not valid YAML: {exc}") from exc
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise LocalFileError(
            f"{source}: expected a mapping at the top, got {type(document).__name__}"
        )
    return document


def _check_nesting(text: str, source: str) -> None:
    """Refuse a document nested deeper than ``MAX_NESTING`` before composing it: the parser's
    event stream is iterative, the composer would hit Python's recursion limit."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise LocalFileError(f"{source}: nested deeper than {MAX_NESTING} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def compose_target(targets: Sequence[str], compose_dir: str) -> str | None:
    """The remote copy of the compose file compose runs with: the one in ``compose_dir`` if any."""
    for target in targets:
        if posixpath.dirname(target) == compose_dir:
            return target
    return targets[0] if targets else None


def compose_file_env(compose_remote: str, compose_dir: str) -> str:
    """``COMPOSE_FILE`` as seen from ``compose_dir``: the bare name when it lies there."""
    if posixpath.dirname(compose_remote) == compose_dir:
        return posixpath.basename(compose_remote)
    return compose_remote


def _is_url(context: str) -> bool:
    return "://" in context or context.startswith(("git@", "github.com/"))


def _build_spec(service: str, build: object, folder: str) -> BuildSpec | str:
    """A service's ``build`` entry resolved on the server, or a problem text."""
    if isinstance(build, str):
        build = {"context": build}
    if not isinstance(build, Mapping):
        return f"service {service}: build: expected a path or a mapping"
    context = build.get("context", ".")
    dockerfile = build.get("dockerfile", DEFAULT_DOCKERFILE)
    if not isinstance(context, str) or not isinstance(dockerfile, str):
        return f"service {service}: build.context and build.dockerfile must be strings"
    if _is_url(context):
        return BuildSpec(service, None, None)
    context_path = posixpath.normpath(posixpath.join(folder, context))
    if "dockerfile_inline" in build:
        return BuildSpec(service, context_path, None)
    dockerfile_path = posixpath.normpath(posixpath.join(context_path, dockerfile))
    return BuildSpec(service, context_path, dockerfile_path)


def read_project(compose: Mapping[str, Any], compose_remote: str) -> ComposeProject:
    """The services of a parsed compose file that lands at ``compose_remote``."""
    raw = compose.get("services") or {}
    if not isinstance(raw, Mapping):
        return ComposeProject(compose_remote, problems=("services: expected a mapping",))
    folder = posixpath.dirname(compose_remote)
    names: list[str] = []
    builds: list[BuildSpec] = []
    problems: list[str] = []
    for name, spec in raw.items():
        if not valid_service_name(name):
            problems.append(f"{name!r} is not a compose service name; skipped")
            continue
        names.append(name)
        build = spec.get("build") if isinstance(spec, Mapping) else None
        if build is None:
            continue
        resolved = _build_spec(name, build, folder)
        if isinstance(resolved, str):
            problems.append(resolved)
        else:
            builds.append(resolved)
    return ComposeProject(compose_remote, tuple(names), tuple(builds), tuple(problems))


def _within(path: str, folder: str) -> bool:
    return folder == "/" or path == folder or path.startswith(folder + "/")


def own_context(context: str, compose_folders: Iterable[str]) -> bool:
    """A context that is not the compose folder or an ancestor of it: a folder of its own."""
    return not any(_within(folder, context) for folder in compose_folders)


def affected(
    project: ComposeProject,
    changed: Iterable[ChangedFile],
    *,
    compose_dir: str,
    compose_local: str | None = None,
    when: Mapping[str, Sequence[str]] | None = None,
    needs: Iterable[CopiedSources] = (),
) -> Affected:
    """The services ``changed`` affects, and whether the compose file itself changed."""
    changed = list(changed)
    remotes = {remote for file in changed for remote in file.remotes}
    apply = project.compose_remote in remotes or any(f.local == compose_local for f in changed)
    reasons: dict[str, str] = {}
    compose_folders = (project.folder, compose_dir)
    for build in project.builds:
        if build.dockerfile is not None and build.dockerfile in remotes:
            reasons.setdefault(build.service, f"Dockerfile {build.dockerfile} changed")
        if build.context is not None and own_context(build.context, compose_folders):
            inside = sorted(r for r in remotes if _within(r, build.context) and r != build.context)
            if inside:
                reasons.setdefault(build.service, f"{inside[0]} in its build context changed")
    for need in needs:
        for remote in sorted(remotes):
            source = need.copied_by(remote)
            if source is not None:
                reasons.setdefault(need.service, f"{remote} changed ({source.label})")
                break
    problems = list(project.problems)
    for service, patterns in (when or {}).items():
        if service not in project.services:
            problems.append(f"rebuild.service {service!r} is not a service of the compose file")
            continue
        spec = pathspec.GitIgnoreSpec.from_lines(list(patterns))
        matched = sorted(f.local for f in changed if spec.match_file(f.local))
        if matched:
            reasons.setdefault(service, f"{matched[0]} matches rebuild.service.when")
    ordered = tuple(s for s in project.services if s in reasons)
    return Affected(ordered, apply, tuple((s, reasons[s]) for s in ordered), tuple(problems))
