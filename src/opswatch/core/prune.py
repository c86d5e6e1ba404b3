"""Which remote folders may have become empty once files were removed (``sync.delete``).

Pure: the removed files (local and remote path) and the rules in; the folders to try out,
deepest first. Only folders opswatch made for the files a rule sends are candidates: those
strictly between a removed file and its rule's ``to`` folder. The ``to`` folders themselves and
``remote.root`` never are. Whether a candidate is really empty is the server's answer: an
``rmdir`` fails on a folder that still holds anything, files opswatch does not manage included.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence

from opswatch.config import Rule


def _below(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder`` when it lies strictly inside it."""
    if folder in ("", "."):
        return path
    return path[len(folder) + 1 :] if path.startswith(folder + "/") else None


def _levels(local: str, rules: Sequence[Rule]) -> int:
    """How many folders lie between ``local`` and its rule's ``from`` (the fewest, if several
    rules' folders hold it: a deeper ``from`` means a ``to`` nearer the file)."""
    depths = [rel.count("/") for rule in rules if (rel := _below(local, rule.source)) is not None]
    return min(depths, default=0)


def emptied_folders(
    removed: Iterable[tuple[str, str]], rules: Sequence[Rule], remote_root: str
) -> list[str]:
    """The remote folders that removing ``removed`` ((local, remote) pairs) may have emptied,
    deepest first."""
    kept = {remote_root.rstrip("/") or "/"}
    kept |= {posixpath.normpath(posixpath.join(remote_root, to)) for r in rules for to in r.to}
    found: set[str] = set()
    for local, remote in removed:
        folder = posixpath.dirname(remote)
        for _ in range(_levels(local, rules)):
            if folder in kept or folder in ("", "/"):
                break
            found.add(folder)
            folder = posixpath.dirname(folder)
    return sorted(found, key=lambda f: (-f.count("/"), f))
