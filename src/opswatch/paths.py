"""Where a config's state lives: control socket, manifest, pause flag, lock, logs.

``$OPSWATCH_STATE_DIR`` if set, else the platform's state and runtime folders. Each config gets
its own subfolder (named after the config's absolute path), so two configs never share a socket.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from opswatch.errors import StateError

STATE_ENV = "OPSWATCH_STATE_DIR"


@dataclass(frozen=True)
class StatePaths:
    state: Path  # manifest, pause flag, lock, saved conflicts
    runtime: Path  # the control socket; mode 0700

    @property
    def socket(self) -> Path:
        return self.runtime / "control.sock"

    @property
    def manifest(self) -> Path:
        return self.state / "manifest.sqlite"

    @property
    def pause_file(self) -> Path:
        return self.state / "paused.json"

    @property
    def lock_file(self) -> Path:
        return self.runtime / "daemon.lock"

    @property
    def history(self) -> Path:
        """The deploy history: ``history.sqlite``, records and the bytes of each version."""
        return self.state / "history"

    @property
    def conflicts(self) -> Path:
        return self.state / "conflicts"

    def ensure(self) -> StatePaths:
        """Create both folders (private) or say in one line why they can't be used."""
        for folder in (self.state, self.runtime):
            try:
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(folder, 0o700)
            except OSError as exc:
                raise _unusable(folder, exc.strerror or str(exc)) from None
            if not os.access(folder, os.W_OK | os.X_OK):
                raise _unusable(folder, "not writable")
        return self


def _unusable(folder: Path, reason: str) -> StateError:
    return StateError(
        f"cannot use the state folder {folder}: {reason}; set {STATE_ENV} to a folder you can write"
    )


def config_key(config_path: Path) -> str:
    """A short, stable, readable folder name for one config file."""
    absolute = os.path.abspath(config_path)
    digest = hashlib.sha256(absolute.encode()).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(absolute).parent.name)[:24] or "root"
    return f"{stem}-{digest}"


def state_paths(config_path: Path) -> StatePaths:
    key = config_key(config_path)
    base = os.environ.get(STATE_ENV)
    if base:
        folder = Path(base) / key
        return StatePaths(state=folder, runtime=folder)
    state = Path(platformdirs.user_state_dir("opswatch", appauthor=False)) / key
    if sys.platform.startswith("linux") and not os.environ.get("XDG_RUNTIME_DIR"):
        # No runtime dir (a cron job, a container): the state folder is private (0700) too.
        return StatePaths(state=state, runtime=state)
    runtime = Path(platformdirs.user_runtime_dir("opswatch", appauthor=False)) / key
    return StatePaths(state=state, runtime=runtime)


def write_atomically(path: Path, text: str, *, mode: int = 0o666) -> None:
    """Replace the file at ``path`` with ``text`` at once: a crash never leaves half a file.

    The temp file is new (``O_EXCL``, a random name beside the target) and gets ``mode`` (less
    the umask) before a byte is written; an ``OSError`` leaves the old file as it was.
    """
    import secrets  # rare path: a config, known_hosts or the pause flag written

    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
