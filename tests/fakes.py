"""A server in memory and a clock by hand, for the daemon's state machine in the fast suite.

`FakeRemote` is a plain implementation of the `Remote` protocol the engine uses, over a dict.
It proves what the engine decides (hold, retry, pause, reconcile, conflicts, reconnect), never
that uploads work: those are proven against a real OpenSSH sshd in tests/integration.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from opswatch.errors import ConnectError, OpswatchError, RemoteError, RemoteFileMissing
from opswatch.model import RemoteFile
from opswatch.ssh.transfer import UploadJob, UploadOutcome


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class StoredFile:
    content: bytes
    mode: int
    mtime_s: int


class FakeRemote:
    """The `Remote` protocol over a dict of remote path → file.

    `connect_errors` are raised by the next connects, in order; `failing` maps a remote path to
    the error each upload of it gets; `drop()` cuts the link as a dying server would.
    """

    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self.connect_errors: list[BaseException] = []
        self.probe_errors: list[BaseException] = []
        self.failing: dict[str, RemoteError] = {}
        self.connects = 0
        self.uploads: list[str] = []  # remote paths, in the order they landed
        self._up = False

    # -- the connection ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._up

    def connect(self) -> None:
        self.connects += 1
        if self.connect_errors:
            raise self.connect_errors.pop(0)
        self._up = True

    def close(self) -> None:
        self._up = False

    def abort(self) -> None:
        self._up = False

    def drop(self) -> None:
        self._up = False

    def probe(self, timeout: float) -> None:
        self._check()
        if self.probe_errors:
            error = self.probe_errors.pop(0)
            if isinstance(error, OpswatchError):
                self._up = False
            raise error

    def _check(self) -> None:
        if not self._up:
            raise ConnectError("connection to fake lost")

    # -- files -------------------------------------------------------------------------------

    def stat_many(self, paths: Sequence[str]) -> dict[str, RemoteFile | None]:
        self._check()
        return {path: self._stat(path) for path in paths}

    def list_folders(self, folders: Sequence[str]) -> Iterator[tuple[str, dict[str, RemoteFile]]]:
        self._check()
        for folder in folders:
            yield (
                folder,
                {
                    posixpath.basename(path): self._stat(path)  # type: ignore[misc]
                    for path in self.files
                    if posixpath.dirname(path) == folder
                },
            )

    def upload_many(self, jobs: Sequence[UploadJob]) -> list[UploadOutcome]:
        self._check()
        outcomes = []
        for job in jobs:
            if job.remote in self.failing:
                outcomes.append(UploadOutcome(job, error=self.failing[job.remote]))
                continue
            content = job.source.read_bytes()
            self.files[job.remote] = StoredFile(content, job.mode, job.mtime_ns // 1_000_000_000)
            self.uploads.append(job.remote)
            digest = hashlib.sha256(content).hexdigest()
            outcomes.append(UploadOutcome(job, sha256=digest, size=len(content)))
        return outcomes

    def remove(self, path: str) -> None:
        self._check()
        self.files.pop(path, None)

    def remove_folder(self, path: str) -> bool:
        self._check()
        return not any(p.startswith(path + "/") for p in self.files)

    def read(self, path: str) -> bytes:
        self._check()
        return self.files[path].content

    def set_mtime(self, path: str, mtime_s: int) -> None:
        self._check()
        stored = self.files.get(path)
        if stored is None:
            raise RemoteFileMissing(path)
        self.files[path] = StoredFile(stored.content, stored.mode, mtime_s)

    # -- what someone else does on the server ------------------------------------------------

    def edit(self, path: str, content: bytes) -> None:
        """Change a file on the server behind opswatch's back (a hotfix)."""
        old = self.files[path]
        self.files[path] = StoredFile(content, old.mode, old.mtime_s + 60)

    def _stat(self, path: str) -> RemoteFile | None:
        stored = self.files.get(path)
        if stored is None:
            return None
        return RemoteFile(size=len(stored.content), mtime_s=stored.mtime_s, mode=stored.mode)
