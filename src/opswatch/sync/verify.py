"""``opswatch verify``: the server's sha256 of every routed file against the local file's.

The remote side is hashed by ``sha256sum -z`` in as few commands as the argument limits allow, on
the one SSH transport; where the server runs no shell or has no ``sha256sum``, a file that was not
hashed there is read over SFTP and hashed here.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import structlog

from opswatch.config import Config
from opswatch.core.builds import BuildGap
from opswatch.core.keyblock import KEY_REFUSAL
from opswatch.core.rules import Router
from opswatch.core.selection import EVERYTHING, Selection
from opswatch.errors import ConnectError, LocalFileError, RemoteCommandError, RemoteFileMissing
from opswatch.local.builds import SourceCheck
from opswatch.local.content import read_content
from opswatch.local.scan import LocalTree, read_ignore_files, scan
from opswatch.ssh.remote import SshRemote
from opswatch.sync.progress import progress_bar

log = structlog.get_logger("opswatch.verify")

Progress = Callable[[int, int], None]

# One remote command travels as a single argument twice (ssh's exec request, then `sh -c`);
# Linux caps one argument at 128 KiB, so a batch of paths stays well below that.
COMMAND_BUDGET = 64 * 1024
COMMAND_BASE_TIMEOUT_S = 60.0
HASH_RATE = 20 * 1024 * 1024  # bytes per second the deadline allows for a slow disk
NO_SHA256SUM = 127


@dataclass(frozen=True)
class Target:
    local: str  # relative to local.root
    remote: str  # absolute on the server
    sha256: str
    size: int


@dataclass
class VerifyReport:
    checked: int = 0
    differ: list[tuple[Target, str]] = field(default_factory=list)  # (target, remote sha256)
    missing: list[Target] = field(default_factory=list)
    unreadable_locally: dict[str, str] = field(default_factory=dict)
    unselected: list[str] = field(default_factory=list)  # named paths no rule selects
    refused: dict[str, str] = field(default_factory=dict)  # local path → why it is never sent
    hashed_remotely: int = 0
    read_over_sftp: int = 0
    build_gaps: list[BuildGap] = field(default_factory=list)  # a build would miss these
    no_remote_hash: str | None = None  # why the server could not hash (SFTP-only, no -z …)

    @property
    def ok(self) -> bool:
        return not self.differ and not self.missing and not self.unselected and not self.build_gaps

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "matching": self.checked - len(self.differ) - len(self.missing),
            "differ": [
                {"path": t.local, "remote": t.remote, "local_sha256": t.sha256, "remote_sha256": r}
                for t, r in self.differ
            ],
            "missing": [{"path": t.local, "remote": t.remote} for t in self.missing],
            "unreadable_locally": self.unreadable_locally,
            "unselected": self.unselected,
            "refused": [{"path": p, "reason": r} for p, r in self.refused.items()],
            "hashed_remotely": self.hashed_remotely,
            "read_over_sftp": self.read_over_sftp,
            "build_gaps": [gap.to_json() for gap in self.build_gaps],
            "no_remote_hash": self.no_remote_hash,
        }


# -- pure helpers --------------------------------------------------------------------------


def _cost(relative: str) -> int:
    """What one path adds to the command once quoted, and quoted again by the exec wrapper."""
    return len(shlex.quote(shlex.quote(relative))) + 1


def batches(paths: Sequence[str], budget: int = COMMAND_BUDGET) -> Iterator[list[str]]:
    """``paths`` in order, cut so each batch's quoted length stays under ``budget``."""
    batch: list[str] = []
    used = 0
    for path in paths:
        cost = _cost(path)
        if batch and used + cost > budget:
            yield batch
            batch, used = [], 0
        batch.append(path)
        used += cost
    if batch:
        yield batch


def hash_command(root: str, relatives: Iterable[str]) -> str:
    """``sha256sum -z`` of ``relatives`` below ``root``; exit 127 when there is no sha256sum
    that knows ``-z`` (BusyBox's and macOS's do not: their names would come back escaped).

    Errors (a missing file) go to /dev/null: a path absent from the output was not hashed.
    """
    quoted = " ".join(shlex.quote(r) for r in relatives)
    return (
        f"cd -- {shlex.quote(root)} || exit 126; "
        f"printf '' | sha256sum -z >/dev/null 2>&1 || exit {NO_SHA256SUM}; "
        f"sha256sum -z -- {quoted} 2>/dev/null; exit 0"
    )


def _record(text: str) -> tuple[str, str] | None:
    digest, sep, name = text[:64], text[64:66], text[66:]
    if len(digest) != 64 or sep not in ("  ", " *") or not name:
        return None
    if any(c not in "0123456789abcdefABCDEF" for c in digest):
        return None
    return name, digest.lower()


def parse_sha256sum_z(output: str) -> dict[str, str]:
    """``HASH  NAME\\0`` records (``-z``: names unescaped, any byte but NUL) → name: hash.

    Text a login script printed ahead of the first record is skipped, line by line.
    """
    found: dict[str, str] = {}
    for text in output.split("\0"):
        parsed = _record(text)
        rest = text
        while parsed is None and "\n" in rest:
            rest = rest.partition("\n")[2]
            parsed = _record(rest)
        if parsed is not None:
            found[parsed[0]] = parsed[1]
    return found


# -- the check -----------------------------------------------------------------------------


def local_targets(
    config: Config, report: VerifyReport, only: Selection = EVERYTHING
) -> list[Target]:
    """Every (routed local file, remote path) pair under ``only``, with the local sha256."""
    router = Router.from_config(
        config, read_ignore_files(config.local_root, config.watched_folders)
    )
    tree = LocalTree(
        config.local_root,
        config.watched_folders,
        router,
        allow_hard_links=config.sync.allow_hard_links,
    )
    index = scan(tree)
    targets = []
    for path, info in index.files.items():
        if path not in only:
            continue
        try:
            with tree.open(path, info) as handle:
                content = read_content(handle)
        except LocalFileError as exc:
            report.unreadable_locally[path] = str(exc)
            continue
        except OSError as exc:
            report.unreadable_locally[path] = exc.strerror or str(exc)
            continue
        if content.holds_key:  # never sent, so no server copy to compare: not drift
            report.refused[path] = KEY_REFUSAL
            continue
        for remote in router.decide(path).targets:
            targets.append(Target(path, remote, content.sha256, info.size))
    return targets


def _remote_hash_batch(
    remote: SshRemote, root: str, batch: list[Target], report: VerifyReport
) -> dict[str, str] | None:
    """remote path → sha256 for what ``sha256sum`` hashed; None when it could not run at all
    (the reason noted in ``report``)."""
    relatives = [posixpath.relpath(t.remote, root) for t in batch]
    chunks: list[str] = []
    timeout = COMMAND_BASE_TIMEOUT_S + sum(t.size for t in batch) / HASH_RATE
    try:
        result = remote.run(
            hash_command(root, relatives), timeout=timeout, on_line=chunks.append, keep_lines=1
        )
    except (ConnectError, RemoteCommandError) as exc:
        if not remote.connected:
            raise
        log.info("no_remote_shell", error=str(exc))  # an sftp-only account, say
        report.no_remote_hash = str(exc)
        return None
    if result.timed_out or result.exit_status == NO_SHA256SUM:
        log.info("no_remote_sha256sum", exit_status=result.exit_status)
        report.no_remote_hash = (
            "hashing on the server timed out"
            if result.timed_out
            else "the server has no `sha256sum -z` (GNU coreutils)"
        )
        return None
    by_name = parse_sha256sum_z("\n".join(chunks))
    return {
        t.remote: by_name[rel] for t, rel in zip(batch, relatives, strict=True) if rel in by_name
    }


def _sftp_sha256(remote: SshRemote, path: str) -> str | None:
    """Read the file over SFTP and hash it here; None when it is not there."""
    try:
        return hashlib.sha256(remote.read(path)).hexdigest()
    except RemoteFileMissing:
        return None


def remote_hashes(
    remote: SshRemote, root: str, targets: list[Target], report: VerifyReport, progress: Progress
) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    by_relative = {posixpath.relpath(t.remote, root): t for t in targets}
    use_shell = True
    done = 0
    for relatives in batches(list(by_relative), COMMAND_BUDGET):
        batch = [by_relative[r] for r in relatives]
        hashed = _remote_hash_batch(remote, root, batch, report) if use_shell else None
        if hashed is None:
            use_shell = False  # one failure to run says the next batch fails too
            hashed = {}
        report.hashed_remotely += len(hashed)
        found.update(hashed)
        done += len(hashed)
        progress(done, len(targets))
        for target in batch:
            if target.remote not in hashed:
                # Not hashed there: missing, unreadable, or no sha256sum. SFTP tells which.
                found[target.remote] = _sftp_sha256(remote, target.remote)
                report.read_over_sftp += 1
                done += 1
                progress(done, len(targets))
    return found


def verify(
    config: Config,
    remote: SshRemote,
    *,
    show_progress: bool = True,
    only: Selection = EVERYTHING,
) -> VerifyReport:
    """Hash both sides of every routed file (under ``only``); ``remote`` is connected and stays
    so."""
    report = VerifyReport()
    targets = local_targets(config, report, only)
    report.unselected = only.unmatched(t.local for t in targets)
    report.checked = len(targets)
    with progress_bar("verifying", len(targets), enabled=show_progress) as advance:
        found = remote_hashes(remote, config.remote.root, targets, report, advance)
    for target in targets:
        there = found.get(target.remote)
        if there is None:
            report.missing.append(target)
        elif there != target.sha256:
            report.differ.append((target, there))
    if only.everything:  # a check of named paths is about them, not about the builds
        ignore_files = read_ignore_files(config.local_root, config.watched_folders)
        router = Router.from_config(config, ignore_files)
        report.build_gaps = SourceCheck(config, router, remote.stat_many).gaps()
    log.info(
        "verified",
        checked=report.checked,
        differ=len(report.differ),
        missing=len(report.missing),
        build_gaps=len(report.build_gaps),
        hashed_remotely=report.hashed_remotely,
        read_over_sftp=report.read_over_sftp,
    )
    return report
