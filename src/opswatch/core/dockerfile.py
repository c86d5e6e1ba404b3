"""What a Dockerfile takes from its build context: the sources of its ``COPY`` and ``ADD``.

Pure: Dockerfile text in, sources out. Read as BuildKit reads it: parser directives
(``# syntax``, ``# escape``) at the top, comment lines dropped, lines joined at the escape
character, heredoc bodies (``RUN <<EOF`` … ``EOF``) skipped, flags (``--chown``, ``--chmod``,
``--link``, ``--exclude`` …) before the arguments, the JSON form as well as the plain one.
``--from=`` copies from a stage or an image, not from the context, and is left out; so are
ADD's URLs and heredoc sources. A source that depends on ``ARG`` or ``ENV`` (``$VAR``) is
reported as not analysed rather than guessed.

``DockerIgnore`` is a context's ``.dockerignore``: patterns anchored at the context root,
``**`` across folders, ``!`` re-includes, the last match wins (pathspec's gitignore engine,
each pattern anchored with a leading ``/`` because dockerignore patterns never float).
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pathspec

DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(\S+)\s*$")
HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
GLOB_CHARS = frozenset("*?[")
URL_PREFIXES = ("http://", "https://", "git@", "git://")


@dataclass(frozen=True)
class CopySource:
    """One source of a ``COPY``/``ADD``, relative to the build context."""

    instruction: str  # "COPY" or "ADD"
    written: str  # as the Dockerfile has it
    path: str  # normalised; "" is the whole context
    line: int  # 1-based line of the instruction
    excludes: tuple[str, ...] = ()  # the instruction's --exclude patterns

    @property
    def is_glob(self) -> bool:
        return any(char in GLOB_CHARS for char in self.path)

    @property
    def label(self) -> str:
        """How messages name it: ``COPY integrations/…/package.json``."""
        return f"{self.instruction} {self.written}"

    def copies(self, relative: str) -> bool:
        """Whether the context file ``relative`` is taken by this source (before .dockerignore)."""
        if not self._selects(relative):
            return False
        if not self.excludes:
            return True
        # BuildKit matches --exclude against the paths the source brings, below the source.
        below = relative[len(self.path) + 1 :] if relative.startswith(self.path + "/") else relative
        return not pathspec.GitIgnoreSpec.from_lines(self.excludes).match_file(below)

    def _selects(self, relative: str) -> bool:
        if self.path == "":
            return True
        if not self.is_glob:
            return relative == self.path or relative.startswith(self.path + "/")
        # A glob matches whole path segments; a matched folder brings everything below it.
        pattern = self.path.split("/")
        parts = relative.split("/")
        if len(parts) < len(pattern):
            return False
        return all(fnmatch.fnmatchcase(p, g) for p, g in zip(parts, pattern, strict=False))

    @property
    def static_prefix(self) -> str:
        """The folder part before the first glob segment ("" for the context root)."""
        kept: list[str] = []
        for segment in self.path.split("/"):
            if any(char in GLOB_CHARS for char in segment):
                break
            kept.append(segment)
        return "/".join(kept)


@dataclass(frozen=True)
class NotAnalysed:
    line: int
    text: str  # the instruction, shortened
    reason: str


@dataclass(frozen=True)
class DockerfileSources:
    sources: tuple[CopySource, ...] = ()
    not_analysed: tuple[NotAnalysed, ...] = ()


@dataclass(frozen=True)
class _Instruction:
    line: int
    keyword: str
    rest: str


def _escape_char(lines: Sequence[str]) -> str:
    """The ``# escape=`` directive, read only from the leading directive lines."""
    for text in lines:
        found = DIRECTIVE.match(text.strip())
        if found is None:
            break
        if found.group(1).lower() == "escape" and found.group(2) in ("\\", "`"):
            return found.group(2)
    return "\\"


def _instructions(text: str) -> Iterator[_Instruction]:
    """Logical instructions: comments dropped, continuations joined, heredoc bodies skipped."""
    lines = text.splitlines()
    escape = _escape_char(lines)
    index = 0
    while index < len(lines):
        start = index
        stripped = lines[index].strip()
        index += 1
        if not stripped or stripped.startswith("#"):
            continue
        parts = [stripped]
        while parts[-1].endswith(escape) and index < len(lines):
            parts[-1] = parts[-1][:-1]
            following = lines[index].strip()
            index += 1
            if following and not following.startswith("#"):
                parts.append(following)
        joined = " ".join(p.strip() for p in parts if p.strip())
        for marker in HEREDOC.finditer(joined):
            index = _skip_heredoc(lines, index, marker.group(3), strip_tabs=bool(marker.group(1)))
        keyword, _, rest = joined.partition(" ")
        yield _Instruction(start + 1, keyword.upper(), rest.strip())


def _skip_heredoc(lines: Sequence[str], index: int, word: str, *, strip_tabs: bool) -> int:
    while index < len(lines):
        body = lines[index].lstrip("\t") if strip_tabs else lines[index]
        index += 1
        if body == word:
            break
    return index


def _split_flags(rest: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        name, _, value = word[2:].partition("=")
        key = name.lower()
        flags[key] = value if key not in flags else flags[key] + "\0" + value
        rest = rest.lstrip()
    return flags, rest


def _arguments(rest: str) -> list[str] | None:
    """The JSON form's list, else the plain form's words (quotes around a word removed)."""
    if rest.startswith("["):
        try:
            parsed = json.loads(rest)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
            return parsed
    words = rest.split()
    return [w[1:-1] if len(w) > 1 and w[0] == w[-1] and w[0] in "\"'" else w for w in words]


def _normalise(source: str) -> str | None:
    """Relative to the context ("" for all of it); None when it climbs out of it."""
    path = posixpath.normpath(source.lstrip("/") or ".")
    if path == ".." or path.startswith("../"):
        return None
    return "" if path == "." else path


def _sources_of(item: _Instruction) -> tuple[list[CopySource], list[NotAnalysed]]:
    flags, rest = _split_flags(item.rest)
    if "from" in flags:
        return [], []  # another stage or an image: nothing from the context
    args = _arguments(rest) or []
    if len(args) < 2:
        return [], []  # `COPY <<EOF /dest` after its heredoc, or a malformed line
    shown = f"{item.keyword} {rest}"[:120]
    excludes = tuple(p for p in flags.get("exclude", "").split("\0") if p)
    found: list[CopySource] = []
    skipped: list[NotAnalysed] = []
    for written in args[:-1]:
        if written.startswith("<<") or (item.keyword == "ADD" and written.startswith(URL_PREFIXES)):
            continue
        if "$" in written:
            skipped.append(NotAnalysed(item.line, shown, f"{written}: depends on ARG or ENV"))
            continue
        path = _normalise(written)
        if path is None:
            skipped.append(NotAnalysed(item.line, shown, f"{written}: outside the build context"))
            continue
        found.append(CopySource(item.keyword, written, path, item.line, excludes))
    return found, skipped


def read_dockerfile(text: str) -> DockerfileSources:
    """The context sources every ``COPY`` and ``ADD`` of ``text`` takes, in file order."""
    sources: list[CopySource] = []
    skipped: list[NotAnalysed] = []
    for item in _instructions(text):
        if item.keyword not in ("COPY", "ADD"):
            continue
        found, not_analysed = _sources_of(item)
        sources += found
        skipped += not_analysed
    return DockerfileSources(tuple(sources), tuple(skipped))


class DockerIgnore:
    """A build context's ``.dockerignore``: which context paths never reach the build."""

    def __init__(self, lines: Sequence[str] = ()) -> None:
        patterns: list[str] = []
        for raw in lines:
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            negate = text.startswith("!")
            body = posixpath.normpath(text.lstrip("!").strip()).lstrip("/")
            if body in ("", "."):
                continue
            patterns.append(("!/" if negate else "/") + body)
        self.patterns = tuple(patterns)
        self._spec = pathspec.GitIgnoreSpec.from_lines(patterns)

    def excludes(self, relative: str) -> bool:
        return bool(self.patterns) and self._spec.match_file(relative)
