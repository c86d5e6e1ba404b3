"""The local side: walking the watched folders and reading what ``lstat`` says about a file.

Symlinks are followed only when they stay inside the watched folder they live in: a link to
``/etc/passwd`` or ``~/.ssh`` is never read, whatever the rules say.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from opswatch.core.rules import IGNORE_FILE, Router, Verdict
from opswatch.model import LocalFile, Skip


@dataclass
class LocalIndex:
    files: dict[str, LocalFile] = field(default_factory=dict)  # routed files only
    refused: list[Skip] = field(default_factory=list)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def watched_folder_of(path: str, folders: tuple[str, ...]) -> str | None:
    for folder in folders:
        if folder == "" or path.startswith(folder + "/"):
            return folder
    return None


def local_file(root: Path, path: str, folders: tuple[str, ...]) -> LocalFile | Skip | None:
    """What is at ``path`` now: a regular file, a refusal (an escaping link), or None (gone)."""
    full = os.path.join(root, path)
    try:
        info = os.lstat(full)
        if stat.S_ISLNK(info.st_mode):
            folder = watched_folder_of(path, folders)
            bound = os.path.realpath(os.path.join(root, folder or ""))
            if not _within(os.path.realpath(full), bound):
                return Skip(path, f"symlink leads outside {folder or '.'}/")
            info = os.stat(full)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return Skip(path, f"cannot read: {exc.strerror}")
    if not stat.S_ISREG(info.st_mode):
        return None
    return LocalFile(size=info.st_size, mtime_ns=info.st_mtime_ns, mode=stat.S_IMODE(info.st_mode))


def read_ignore_files(root: Path, folders: tuple[str, ...]) -> dict[str, list[str]]:
    """Every ``.opswatchignore`` in the watched folders, by the folder holding it."""
    found: dict[str, list[str]] = {}
    for folder in folders:
        for current, dirs, files in os.walk(os.path.join(root, folder)):
            dirs[:] = [d for d in dirs if d != ".git"]
            if IGNORE_FILE in files:
                rel = os.path.relpath(current, root).replace(os.sep, "/")
                found["" if rel == "." else rel] = read_ignore_file(Path(current) / IGNORE_FILE)
    return found


def read_ignore_file(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def scan(
    root: Path, router: Router, folders: tuple[str, ...], *, within: str | None = None
) -> LocalIndex:
    """Every routed regular file under the watched folders (or only under ``within``),
    pruning excluded folders early."""
    index = LocalIndex()
    for folder in folders if within is None else (within,):
        base = os.path.join(root, folder)
        for current, dirs, names in os.walk(base):
            rel_dir = os.path.relpath(current, root).replace(os.sep, "/")
            prefix = "" if rel_dir == "." else rel_dir + "/"
            kept = []
            for name in sorted(dirs):
                reason = router.excluded_folder(prefix + name)
                if reason is None:
                    kept.append(name)
                elif reason.startswith("never"):
                    index.refused.append(Skip(prefix + name + "/", reason))
            dirs[:] = kept
            for name in sorted(names):
                _index_one(index, root, prefix + name, router, folders)
    return index


def _index_one(
    index: LocalIndex, root: Path, path: str, router: Router, folders: tuple[str, ...]
) -> None:
    decision = router.decide(path)
    if decision.verdict is Verdict.REFUSED:
        index.refused.append(Skip(path, decision.reason))
        return
    if decision.verdict is not Verdict.ROUTED:
        return
    found = local_file(root, path, folders)
    if isinstance(found, Skip):
        index.refused.append(found)
    elif found is not None:
        index.files[path] = found
