"""``[[rebuild.service]] when`` patterns: the folders they name (watched beside the rules'),
whether a changed path matches one, and the patterns that can never match.

Pure, and light: the daemon imports it at start, so it loads no compose or YAML parser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import pathspec

from opswatch.config import Config


def when_folder(pattern: str) -> str | None:
    """The folder a ``when`` pattern names: its fixed part before the first glob (``src`` for
    ``src/**``, ``src/api`` for ``src/api/main.py``); "" for a file at the root or a glob from
    the root; None for a pattern that matches at any depth (no slash) or excludes (``!``)."""
    anchored = pattern.strip().rstrip("/")
    if pattern.startswith("!") or "/" not in anchored:  # gitignore: no slash, any depth
        return None
    return "/".join(_fixed_segments(anchored.lstrip("/").split("/")[:-1]))


def when_folders(services: Iterable[tuple[str, Sequence[str]]]) -> tuple[str, ...]:
    """The folders the ``when`` patterns name that can be watched (not the whole repository,
    nothing outside it)."""
    found = {when_folder(p) for _service, patterns in services for p in patterns}
    return tuple(sorted(f for f in found if f and not _outside(f)))


def _outside(folder: str) -> bool:
    return ".." in folder.split("/")


def unmatchable_when(
    services: Iterable[tuple[str, Sequence[str]]],
    watched: Sequence[str],
    never_reason: Callable[[str], str | None],
) -> list[str]:
    """``when`` patterns that can never match a change opswatch sees: outside local.root, in a
    folder ``never`` keeps out of sight, or naming no folder where no rule watches the root.

    ``watched`` is the rules' folders; a pattern without a slash matches at any depth in them.
    """
    found: list[str] = []
    for service, patterns in services:
        for pattern in patterns:
            folder = when_folder(pattern)
            why = _why_unmatchable(folder, watched, never_reason)
            if why is not None:
                found.append(f'rebuild.service {service}: when "{pattern}" never matches: {why}')
    return found


def _why_unmatchable(
    folder: str | None, watched: Sequence[str], never_reason: Callable[[str], str | None]
) -> str | None:
    if folder is None:
        return None
    if _outside(folder):
        return "it lies outside local.root"
    if folder == "":
        if "" in watched:
            return None
        return "it names no folder to watch (write its folder, e.g. src/**)"
    reason = never_reason(folder + "/")
    return None if reason is None else f"{folder}/ is never looked at ({reason})"


def _fixed_segments(segments: Sequence[str]) -> list[str]:
    kept: list[str] = []
    for segment in segments:
        if any(char in "*?[" for char in segment):
            break
        kept.append(segment)
    return kept


def watcher_folders(config: Config) -> tuple[str, ...]:
    """What the watcher watches: the rules' folders and, when rebuilds are automatic, the
    folders the ``when`` patterns name (a change there rebuilds; it is sent only if a rule
    selects it). Folders nested in another are left out."""
    folders = set(config.watched_folders)
    if config.rebuild.mode == "auto":
        folders |= set(when_folders((s.name, s.when) for s in config.rebuild.services))
    kept: list[str] = []
    for folder in sorted(folders):
        if not any(folder == outer or folder.startswith(outer + "/") for outer in kept):
            kept.append(folder)
    return tuple(kept)


class WhenPatterns:
    """Whether a local path matches some service's ``when`` patterns (each service's list on
    its own, so one service's ``!`` excludes nothing of another's)."""

    def __init__(self, config: Config) -> None:
        self._specs = (
            [pathspec.GitIgnoreSpec.from_lines(list(s.when)) for s in config.rebuild.services]
            if config.rebuild.mode == "auto"
            else []
        )

    def match(self, path: str) -> bool:
        return any(spec.match_file(path) for spec in self._specs)
