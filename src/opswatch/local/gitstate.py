"""Whether the repository's git HEAD moved: the branch-switch half of the big-batch guard.

A ``git checkout`` rewrites many watched files at once; sending them unasked would deploy another
branch. Git rewrites ``HEAD`` when it switches (after the working tree), so comparing its content
at batch time with the last content seen tells a switch from ordinary edits. Commits on a branch
leave ``HEAD`` alone (it names the branch, not the commit).
"""

from __future__ import annotations

from pathlib import Path

GITDIR_PREFIX = "gitdir:"
SETTLE_S = 2.0


def find_git_dir(start: Path) -> Path | None:
    """The git folder of the repository holding ``start``, looking upward; None outside git.

    A ``.git`` *file* (worktrees, submodules) names the real folder in a ``gitdir:`` line.
    """
    for folder in (start, *start.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():
            try:
                text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
            except OSError:
                return None
            if not text.startswith(GITDIR_PREFIX):
                return None
            target = Path(text[len(GITDIR_PREFIX) :].strip())
            return target if target.is_absolute() else folder / target
    return None


class HeadWatch:
    """Remembers the content of ``HEAD``; ``moved()`` says whether it changed since last asked."""

    def __init__(self, start: Path) -> None:
        git_dir = find_git_dir(start)
        self.head_file = git_dir / "HEAD" if git_dir is not None else None
        self.last = self.read()

    def read(self) -> str | None:
        if self.head_file is None:
            return None
        try:
            return self.head_file.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return None  # between git's unlink and rename, or no repository any more

    def moved(self) -> bool:
        """True once per change of HEAD: the caller holds that batch, the next ones go."""
        now = self.read()
        if now is None or now == self.last:
            return False
        self.last = now
        return True

    def settle(self, now: float, quiet_s: float = SETTLE_S) -> None:
        """Accept a HEAD that changed ``quiet_s`` ago while nothing was pending.

        Called only while no change waits: a switch that touched no watched file then never
        holds a later, unrelated edit. Git writes HEAD after the working tree, so by then the
        watcher has long queued whatever the switch changed.
        """
        if self.head_file is None:
            return
        try:
            changed_at = self.head_file.stat().st_mtime
        except OSError:
            return
        if now - changed_at >= quiet_s:
            self.last = self.read() or self.last

    def describe(self) -> str:
        """``main`` for a branch, the short commit for a detached HEAD."""
        head = self.last or "?"
        if head.startswith("ref: "):
            return head[5:].removeprefix("refs/heads/")
        return head[:12]
