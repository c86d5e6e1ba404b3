"""The local side: walking the watched folders; what each file is, ``guarded`` decides."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from opswatch.core.rules import IGNORE_FILE, Verdict, ignore_file_patterns
from opswatch.errors import ConfigError, LocalFileError
from opswatch.local.guarded import LocalTree, read_small, watched_folder_of
from opswatch.model import LocalFile, Refusal, Skip

__all__ = [
    "LocalIndex",
    "LocalTree",
    "read_ignore_file",
    "read_ignore_files",
    "scan",
    "watched_folder_of",
]


@dataclass
class LocalIndex:
    files: dict[str, LocalFile] = field(default_factory=dict)  # routed files only
    refused: list[Skip] = field(default_factory=list)
    # Folders the walk could not read: what they hold is unknown, never "deleted".
    unknown: list[str] = field(default_factory=list)

    def in_unknown(self, path: str) -> bool:
        return any(path.startswith(folder + "/") for folder in self.unknown)


def read_ignore_files(root: Path, folders: tuple[str, ...]) -> dict[str, list[str]]:
    """Every ``.opswatchignore`` in the watched folders, by the folder holding it; one that
    cannot be read or does not parse raises ``ConfigError`` naming it (and the line)."""
    found: dict[str, list[str]] = {}
    for folder in folders:
        for current, dirs, files in os.walk(os.path.join(root, folder)):
            dirs[:] = [d for d in dirs if d != ".git"]
            if IGNORE_FILE in files:
                rel = os.path.relpath(current, root).replace(os.sep, "/")
                holder = "" if rel == "." else rel
                found[holder] = read_ignore_file(root, f"{holder}/{IGNORE_FILE}".lstrip("/"))
    return found


def read_ignore_file(root: Path, path: str) -> list[str]:
    """The checked patterns of one ignore file (``path`` relative to ``root``)."""
    try:
        data = read_small(root, path)
    except LocalFileError as exc:
        raise ConfigError([str(exc)]) from exc
    return ignore_file_patterns(data.decode("utf-8", errors="replace").splitlines(), path)


def scan(tree: LocalTree, *, within: str | None = None) -> LocalIndex:
    """Every routed regular file under the watched folders (or only under ``within``),
    pruning excluded folders early."""
    index = LocalIndex()
    router = tree.router
    for folder in tree.folders if within is None else (within,):
        base = os.path.join(tree.root, folder)

        def unreadable(exc: OSError, base: str = base) -> None:
            # An unreadable folder is "unknown", never "empty": nothing under it is deleted.
            if isinstance(exc, FileNotFoundError) and exc.filename == base:
                return  # the watched folder itself is gone: its files were deleted
            rel = os.path.relpath(str(exc.filename), tree.root).replace(os.sep, "/")
            index.unknown.append(rel)
            index.refused.append(
                Skip(
                    rel + "/", f"cannot read the folder: {exc.strerror}", refusal=Refusal.UNREADABLE
                )
            )

        for current, dirs, names in os.walk(base, onerror=unreadable):
            rel_dir = os.path.relpath(current, tree.root).replace(os.sep, "/")
            prefix = "" if rel_dir == "." else rel_dir + "/"
            kept = []
            for name in sorted(dirs):
                reason = router.excluded_folder(prefix + name)
                if reason is None and os.path.islink(os.path.join(current, name)):
                    _index_one(index, tree, prefix + name)  # not walked: said why
                elif reason is None:
                    kept.append(name)
                elif router.never_reason(prefix + name + "/"):
                    index.refused.append(Skip(prefix + name + "/", reason, refusal=Refusal.NEVER))
            dirs[:] = kept
            for name in sorted(names):
                _index_one(index, tree, prefix + name)
    return index


def _index_one(index: LocalIndex, tree: LocalTree, path: str) -> None:
    decision = tree.router.decide(path)
    if decision.verdict is Verdict.REFUSED:
        index.refused.append(Skip(path, decision.reason, refusal=decision.refusal))
        return
    if decision.verdict is not Verdict.ROUTED:
        return
    found = tree.inspect(path, walked=True)
    if isinstance(found, Skip):
        index.refused.append(found)
    elif found is not None:
        index.files[path] = found
