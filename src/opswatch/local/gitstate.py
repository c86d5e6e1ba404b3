"""Whether the repository's git HEAD moved: the branch-switch half of the big-batch guard.

A ``git checkout`` rewrites many watched files at once; sending them unasked would deploy another
branch. Git rewrites ``HEAD`` when it switches (after the working tree), so comparing its content
at batch time with the last content seen tells a switch from ordinary edits. Commits on a branch
leave ``HEAD`` alone (it names the branch, not the commit).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
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


@dataclass(frozen=True)
class GitState:
    """Where the local repository stood when a batch went: recorded in the deploy history."""

    commit: str | None = None
    branch: str | None = None  # None: detached HEAD or no repository
    dirty: bool | None = None  # tracked files differ from the commit; None: not known


GIT_TIMEOUT_S = 5.0


def git_state(root: Path) -> GitState:
    """One ``git status`` (commit, branch and dirtiness at once); outside git or without git,
    nothing is known, which is no error."""
    if find_git_dir(root) is None:
        return GitState()
    command = ["git", "-C", str(root), "status", "--porcelain=v2", "--branch", "-uno", "-z"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return GitState()
    if done.returncode != 0:
        return GitState()
    return parse_status(done.stdout.decode("utf-8", "replace"))


def parse_status(output: str) -> GitState:
    """``git status --porcelain=v2 --branch -z`` output: headers first, then changed entries."""
    commit = branch = None
    dirty = False
    for record in output.split("\0"):
        if record.startswith("# branch.oid "):
            oid = record.removeprefix("# branch.oid ").strip()
            commit = oid if oid != "(initial)" else None
        elif record.startswith("# branch.head "):
            head = record.removeprefix("# branch.head ").strip()
            branch = head if head != "(detached)" else None
        elif record[:2] in ("1 ", "2 ", "u "):
            dirty = True
    return GitState(commit, branch, dirty)
