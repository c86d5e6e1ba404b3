"""Which files a command's PATH arguments name: each file itself, and everything under a folder.

``opswatch sync PATH…`` and ``opswatch verify PATH…`` take paths as git does: relative to the
folder the command runs in, turned here into paths relative to the repository (``local.root``).
Pure path arithmetic: nothing here looks at the file system.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePath

from opswatch.errors import UsageError


@dataclass(frozen=True)
class Selection:
    """The repository-relative paths named on the command line; none named selects everything."""

    paths: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        return not self.paths

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        return self.everything or any(_under(path, named) for named in self.paths)

    def unmatched(self, candidates: Iterable[str]) -> list[str]:
        """The named paths that select none of ``candidates``, in the order they were named."""
        found = list(candidates)
        return [named for named in self.paths if not any(_under(c, named) for c in found)]


EVERYTHING = Selection()


def _under(path: str, named: str) -> bool:
    return named == "." or path == named or path.startswith(named + "/")


def parse_selection(args: Sequence[str], cwd: PurePath, root: PurePath) -> Selection:
    """Each argument, relative to ``cwd`` unless absolute, made relative to ``root``.

    A path outside the repository is bad usage (exit 2), as it is for git.
    """
    named: list[str] = []
    for arg in args:
        if "\0" in arg or not arg:
            raise UsageError(f"{arg!r}: not a path")
        absolute = posixpath.normpath(posixpath.join(cwd.as_posix(), PurePath(arg).as_posix()))
        relative = posixpath.relpath(absolute, posixpath.normpath(root.as_posix()))
        if relative == ".." or relative.startswith("../"):
            raise UsageError(f"{arg}: outside the repository ({root})")
        named.append(relative)
    return Selection(tuple(dict.fromkeys(named)))
