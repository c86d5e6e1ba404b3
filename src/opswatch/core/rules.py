"""Which files go where: first-match routing, ignore patterns, and ``never``, which always wins.

Pure: paths in, decisions out. Paths are POSIX and relative to ``local.root``; folders are
matched with a trailing ``/`` so that folder patterns such as ``data/`` apply at any depth.
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pathspec

from opswatch.config import Config, Rule, pattern_problem
from opswatch.errors import ConfigError
from opswatch.model import Refusal

BUILTIN_IGNORE = (
    # vim: swap files, backups, and the probe file it writes to test a folder
    "*.swp",
    "*.swo",
    "*.swx",
    ".*.sw?",
    "4913",
    "*~",
    # emacs: lock files and autosaves
    ".#*",
    "\\#*#",  # a leading "#" would make the pattern a comment
    # JetBrains "safe write"
    "*___jb_tmp___",
    "*___jb_old___",
    # other editors and tools
    ".DS_Store",
    "*.tmp",
    ".git/",
    "__pycache__/",
    ".opswatchignore",
)

BUILTIN_NEVER = (
    ".env",
    ".env.*",
    "*.env",
    ".envrc",
    "data/",
    "certs/",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.ppk",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
)

IGNORE_FILE = ".opswatchignore"


class Verdict(enum.Enum):
    ROUTED = "routed"
    IGNORED = "ignored"
    REFUSED = "refused"  # matched ``never``
    UNROUTED = "unrouted"  # no rule selects it


DECISIONS_KEPT = 4096  # remembered answers of Router.decide (a burst's worth), then forgotten


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    targets: tuple[str, ...] = ()  # absolute remote paths, when routed
    reason: str = ""
    refusal: Refusal | None = None  # when REFUSED


def ignore_file_patterns(lines: Sequence[str], source: str) -> list[str]:
    """The lines of an ignore file, checked: an invalid pattern raises ``ConfigError`` naming
    ``source`` and the line (a bad pattern must stop the folder, not the daemon)."""
    for number, line in enumerate(lines, 1):
        if (problem := pattern_problem(line)) is not None:
            raise ConfigError([f"{source}:{number}: {problem}"])
    return list(lines)


def valid_name(path: str) -> bool:
    """Was the name valid UTF-8? Names are read with surrogateescape; the wire carries UTF-8."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _spec(lines: Iterable[str]) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines(list(lines))


def ancestors(path: str) -> list[str]:
    """``a/b/c`` → ``["a/", "a/b/"]``: the folders a path lies in, as folder patterns see them."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


def _under(path: str, folder: str) -> str | None:
    """The part of ``path`` below ``folder``, or None when it is not below it."""
    if folder == "":
        return path
    if path.startswith(folder + "/"):
        return path[len(folder) + 1 :]
    return None


class Router:
    """Decides for each local path whether it is synced, to which remote paths, and why not."""

    def __init__(
        self,
        rules: Sequence[Rule],
        remote_root: str,
        *,
        ignore: Sequence[str] = (),
        never: Sequence[str] = (),
        ignore_files: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.rules = tuple(rules)
        self.remote_root = remote_root
        self._never_patterns = (*BUILTIN_NEVER, *never)
        # Case-insensitive: on macOS and Windows ".ENV" is the same file, and "ID_RSA" the
        # same key wherever it lives.
        self._never = _spec(p.lower() for p in self._never_patterns)
        self._never_each = [_spec([p.lower()]) for p in self._never_patterns]
        self._ignore = _spec((*BUILTIN_IGNORE, *ignore))
        self._matches = [_spec(rule.match) if rule.match is not None else None for rule in rules]
        self._ignore_files: dict[str, pathspec.GitIgnoreSpec] = {}
        self.held: dict[str, str] = {}  # folder → why: its ignore file does not parse
        # decide() runs for every watcher event (a burst of 500 files is ~1 500 events) and
        # costs ~0.1 ms of pattern matching; its answer changes only with the ignore files.
        self._decided: dict[str, Decision] = {}
        self._never_folders: dict[str, str | None] = {}
        self._ignored_folders: dict[str, bool] = {}
        for folder, lines in (ignore_files or {}).items():
            self.set_ignore_file(folder, lines)

    @classmethod
    def from_config(
        cls, config: Config, ignore_files: Mapping[str, Sequence[str]] | None = None
    ) -> Router:
        return cls(
            config.rules,
            config.remote.root,
            ignore=config.sync.ignore,
            never=config.sync.never,
            ignore_files=ignore_files,
        )

    def set_ignore_file(self, folder: str, lines: Sequence[str] | None) -> None:
        """Install (or with ``None`` drop) the patterns of ``folder/.opswatchignore``."""
        self._decided.clear()
        self._ignored_folders.clear()
        self.held.pop(folder, None)
        if lines is None:
            self._ignore_files.pop(folder, None)
        else:
            self._ignore_files[folder] = _spec(lines)

    def hold(self, folder: str, reason: str) -> None:
        """Send nothing from ``folder`` until its ignore file is fixed (``set_ignore_file``):
        with its patterns unknown, any file in it might be one the user meant to keep back."""
        self._decided.clear()
        self.held[folder] = reason

    def _held_reason(self, path: str) -> str | None:
        for folder, reason in self.held.items():
            if folder == "" or path.startswith(folder + "/"):
                return reason
        return None

    def never_reason(self, path: str) -> str | None:
        for folder in ancestors(path):  # the same few folders for every file: remembered
            if folder not in self._never_folders:
                self._forget_if_full(self._never_folders)
                self._never_folders[folder] = self._never_one(folder)
            if reason := self._never_folders[folder]:
                return reason
        return self._never_one(path)

    def _never_one(self, candidate: str) -> str | None:
        lowered = candidate.lower()
        if not self._never.match_file(lowered):
            return None
        # Named after the first pattern in list order (gitignore's own answer is the last).
        for pattern, spec in zip(self._never_patterns, self._never_each, strict=True):
            if spec.match_file(lowered):
                return f'never: matches "{pattern}"'
        return None

    def is_ignored(self, path: str) -> bool:
        for folder in ancestors(path):
            if folder not in self._ignored_folders:
                self._forget_if_full(self._ignored_folders)
                self._ignored_folders[folder] = self._ignored_one(folder)
            if self._ignored_folders[folder]:
                return True
        return self._ignored_one(path)

    def _ignored_one(self, candidate: str) -> bool:
        if self._ignore.match_file(candidate):
            return True
        for folder, spec in self._ignore_files.items():
            rel = _under(candidate, folder)
            if rel and spec.match_file(rel):
                return True
        return False

    @staticmethod
    def _forget_if_full(memo: dict[str, Any]) -> None:
        if len(memo) >= DECISIONS_KEPT:
            memo.clear()

    def excluded_folder(self, folder: str) -> str | None:
        """Why a whole folder (no trailing slash) can be skipped by a walk, or None."""
        as_folder = folder + "/"
        if reason := self.never_reason(as_folder):
            return reason
        if self.is_ignored(as_folder):
            return "ignored"
        return None

    def targets(self, path: str) -> tuple[str, ...]:
        for rule, match in zip(self.rules, self._matches, strict=True):
            rel = _under(path, rule.source)
            if rel is None or not rel:
                continue
            if match is None or match.match_file(rel):
                return tuple(posixpath.join(self.remote_root, to, rel) for to in rule.to)
        return ()

    def decide(self, path: str) -> Decision:
        found = self._decided.get(path)
        if found is None:
            self._forget_if_full(self._decided)
            found = self._decided[path] = self._decide(path)
        return found

    def _decide(self, path: str) -> Decision:
        if ".." in path.split("/") or path.startswith("/"):
            return Decision(
                Verdict.REFUSED, reason='path escapes the root ("..")', refusal=Refusal.ESCAPES
            )
        if reason := self.never_reason(path):
            return Decision(Verdict.REFUSED, reason=reason, refusal=Refusal.NEVER)
        if held := self._held_reason(path):
            return Decision(Verdict.REFUSED, reason=f"held: {held}", refusal=Refusal.IGNORE_FILE)
        if not valid_name(path):
            return Decision(
                Verdict.REFUSED, reason="name is not valid UTF-8", refusal=Refusal.BAD_NAME
            )
        if self.is_ignored(path):
            return Decision(Verdict.IGNORED, reason="ignored")
        targets = self.targets(path)
        if not targets:
            return Decision(Verdict.UNROUTED, reason="no rule selects it")
        return Decision(Verdict.ROUTED, targets=targets)

    def watched(self, path: str) -> bool:
        """Is ``path`` inside one of the rules' ``from`` folders at all?"""
        return any(_under(path, rule.source) for rule in self.rules)
