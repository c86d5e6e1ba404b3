"""``opswatch init``'s rules for build sources: what each Dockerfile copies, sent where it builds.

The compose file goes to ``ops/`` on the server, so each build context resolves against that
folder there (the seed's ``context: ..`` is ``remote.root`` itself). Every source a Dockerfile
copies gets a rule sending the local file or folder to the same relative place below
``remote.root``; sources the ops rules already send, never-listed ones and ones missing here
get none, and the file says why.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from opswatch.config import Rule
from opswatch.core.builds import BuildNeeds, ignore_file_candidates, needs_of
from opswatch.core.compose import load_compose, read_project
from opswatch.core.dockerfile import CopySource
from opswatch.core.rules import Router
from opswatch.errors import LocalFileError

ROOT = "/remote-root"  # a stand-in for remote.root: only paths relative to it are written


@dataclass(frozen=True)
class SourceRule:
    """A proposed ``[[rule]]``, with the instructions that need it."""

    source: str  # local folder, relative to the repository
    match: tuple[str, ...] | None
    to: str  # relative to remote.root
    why: tuple[str, ...]  # "coda-mcp-gateway: COPY integrations/…"


@dataclass(frozen=True)
class SourcePlan:
    rules: tuple[SourceRule, ...] = ()
    notes: tuple[str, ...] = ()  # sources with no rule, and why


def _relative(remote: str) -> str:
    return posixpath.relpath(remote, ROOT) if remote != ROOT else ""


def _read(root: Path, relative: str) -> str | None:
    try:
        return (root / relative).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def read_build_needs(root: Path, compose_local: str, compose_remote_dir: str) -> list[BuildNeeds]:
    """The builds of the compose file as they would resolve once it lands in ``ops/``."""
    text = _read(root, compose_local)
    if text is None:
        return []
    remote = posixpath.join(ROOT, compose_remote_dir, posixpath.basename(compose_local))
    try:
        project = read_project(load_compose(text, compose_local), remote)
    except LocalFileError:
        return []
    found = []
    for build in project.builds:
        if build.context is None or build.dockerfile is None:
            continue
        dockerfile = _read(root, _relative(build.dockerfile))
        ignores = (_read(root, _relative(c)) for c in ignore_file_candidates(build))
        ignore = next((text for text in ignores if text is not None), None)
        need = needs_of(build, dockerfile, ignore)
        if need is not None and dockerfile is not None:
            found.append(need)
    return found


def _dockerfiles(root: Path, compose_local: str, compose_dir: str) -> list[str] | None:
    """The repository paths the compose file's Dockerfiles resolve to were it in ``compose_dir``;
    None when the file cannot be read."""
    text = _read(root, compose_local)
    if text is None:
        return None
    remote = posixpath.join(ROOT, compose_dir, posixpath.basename(compose_local))
    try:
        project = read_project(load_compose(text, compose_local), remote)
    except LocalFileError:
        return None
    return [_relative(b.dockerfile) for b in project.builds if b.dockerfile is not None]


def builds_beside_itself(root: Path, compose_local: str, moved_to: str) -> bool:
    """Whether the compose file's build paths are relative to itself: every Dockerfile it names
    exists here when resolved against the compose file's own folder, and some would not once
    the file moved to ``moved_to`` (``deploy/compose.yaml`` with ``build: .``). The seed's
    paths are written for the server's layout (``context: ..`` from ``ops/``) and stay put."""
    here = _dockerfiles(root, compose_local, posixpath.dirname(compose_local))
    there = _dockerfiles(root, compose_local, moved_to)
    if not here or there is None:
        return False
    exists = [(root / path).is_file() for path in here]
    return all(exists) and not all((root / path).is_file() for path in there)


def _proposal(need: BuildNeeds, source: CopySource) -> tuple[str, tuple[str, ...] | None]:
    """(folder, match) of a rule that sends ``source``, in repository paths."""
    relative = _relative(need.remote(source))
    if source.is_glob:
        rest = source.path[len(source.static_prefix) :].lstrip("/")
        return relative, (rest,)
    return relative, None


def propose_source_rules(root: Path, needs: list[BuildNeeds], ops_rules: list[Rule]) -> SourcePlan:
    """Rules sending every build's sources that the ``ops_rules`` don't already send."""
    router = Router(ops_rules, ROOT)
    wanted: dict[tuple[str, tuple[str, ...] | None], list[str]] = {}
    notes: list[str] = []
    for need in needs:
        notes += [f"{need.service}: {n.reason}; not analysed" for n in need.not_analysed]
        for source in need.sources:
            label = f"{need.service}: {source.label}"
            folder, match = _proposal(need, source)
            path = root / folder
            if folder == "":
                notes.append(f"{label}: the whole repository; no rule proposed, write your own")
                continue
            if not path.exists():
                notes.append(f"{label}: {folder} is not in this repository; no rule proposed")
                continue
            never = router.never_reason(folder) or router.never_reason(folder + "/")
            if never is not None:
                notes.append(f"{label}: stays here ({never})")
                continue
            if path.is_file() and router.targets(folder) == (need.remote(source),):
                continue  # the ops rules send it there already
            if path.is_dir() and _sent_whole(router, folder):
                continue
            if path.is_file():
                folder, match = posixpath.dirname(folder), (posixpath.basename(folder),)
            wanted.setdefault((folder, match), []).append(label)
    return SourcePlan(_merge(wanted), tuple(notes))


def _sent_whole(router: Router, folder: str) -> bool:
    """Whether the ops rules already send what lies in ``folder`` to the same place."""
    probe = f"{folder}/x"
    return router.targets(probe) == (posixpath.join(ROOT, probe),)


def _merge(wanted: dict[tuple[str, tuple[str, ...] | None], list[str]]) -> tuple[SourceRule, ...]:
    """One rule per folder: a folder's file names merged, a whole-folder rule covering them."""
    whole = sorted(folder for folder, match in wanted if match is None)

    def covering(folder: str) -> str | None:
        return next((w for w in whole if folder == w or folder.startswith(w + "/")), None)

    names: dict[str, list[str] | None] = {}
    why: dict[str, list[str]] = {}
    for (folder, match), labels in wanted.items():
        outer = covering(folder)
        key = outer if outer is not None else folder
        if outer is not None:
            names[key] = None
        elif (current := names.setdefault(key, [])) is not None:
            current.extend(m for m in match or () if m not in current)
        reasons = why.setdefault(key, [])
        reasons.extend(label for label in labels if label not in reasons)
    return tuple(
        SourceRule(folder, tuple(match) if match is not None else None, folder, tuple(why[folder]))
        for folder, match in names.items()
    )
