"""The demo site: a sample repository, a throwaway sshd on 127.0.0.1 and the real daemon.

Everything lives in one temporary folder: ``repo/`` (laid out like the seed, secrets included),
``server/portfolio/`` (what the "droplet" holds), ``sshd/`` (``LocalSshd``: a real OpenSSH sshd
run as the current user) and ``state/`` (the daemon's own ``OPSWATCH_STATE_DIR``). The daemon is
``opswatch run`` in a child process, exactly what a service manager would start.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from opswatch.config import load_config
from opswatch.core.rules import Router
from opswatch.demo.sshd import LocalSshd, LocalSshdError
from opswatch.errors import OpswatchError
from opswatch.local.scan import LocalTree, scan

COMPOSE = """\
services:
  demo-gateway:
    build:
      context: ..
      dockerfile: docs/ops/Dockerfile.demo-gateway
    ports:
      - "8080:8080"
    env_file: ../docs/ops/.env
"""

SAMPLE_FILES = {
    "docs/ops/Dockerfile.demo-gateway": (
        "FROM node:20-slim\nWORKDIR /app\nCOPY integrations/demo/ ./\nRUN npm ci\n"
        'CMD ["node", "index.js"]\n'
    ),
    "docs/ops/docker-compose.production.yml": COMPOSE,
    "docs/ops/runbooks/deploy.md": "# Deploy\n\n1. Save the file.\n2. opswatch puts it there.\n",
    "docs/ops/quality_gates/check.sh": "#!/bin/sh\nset -eu\necho quality gates passed\n",
    "docs/ops/quality_gates/smoke.sh": "#!/bin/sh\ncurl -fsS http://127.0.0.1:8080/health\n",
    "docs/ops/.env": "API_TOKEN=not-for-the-server\n",
    "docs/ops/data/app.db": "SQLite format 3\0demo\n",
    "docs/ops/certs/site.pem": "-----BEGIN CERTIFICATE-----\ndemo\n-----END CERTIFICATE-----\n",
    "README.md": "# demo repository\n\nEdit files under docs/ops/ and watch them land.\n",
}
EXECUTABLE = ("docs/ops/quality_gates/check.sh",)

CONFIG = """\
# Written by `opswatch demo`: the seed's layout, against a throwaway sshd on 127.0.0.1.
[local]
root = "."

[remote]
host = "127.0.0.1"
port = {port}
user = {user}
root = {remote_root}
known_hosts = {known_hosts}
identity_file = {identity_file}
ssh_config = {ssh_config}

[sync]
debounce_ms = 300

[[rule]]
from = "docs/ops"
match = ["docker-compose.production.yml"]
to = "ops"

[[rule]]
from = "docs/ops"
match = ["Dockerfile.*", "runbooks/", "quality_gates/"]
to = "docs/ops"
"""

INSTALL_SSHD = (
    "the demo runs a real OpenSSH sshd on 127.0.0.1 (as you, no root) and none was found; "
    "install OpenSSH's server (the system service need not be enabled): "
    "Debian/Ubuntu `sudo apt-get install openssh-server`, Fedora `sudo dnf install "
    "openssh-server`, Arch `sudo pacman -S openssh`, Alpine `sudo apk add openssh-server`, "
    "macOS: built in (/usr/sbin/sshd); from a clone of opswatch, `bash scripts/demo.sh` "
    "installs it"
)
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def _toml(value: str | Path) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


@dataclass
class DemoSite:
    base: Path
    sshd: LocalSshd
    daemon: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def repo(self) -> Path:
        return self.base / "repo"

    @property
    def remote_root(self) -> Path:
        return self.base / "server" / "portfolio"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def config(self) -> Path:
        return self.repo / "opswatch.toml"

    @property
    def log_path(self) -> Path:
        return self.base / "daemon.log"

    def env(self) -> dict[str, str]:
        """The environment of every opswatch command aimed at this site."""
        env = dict(os.environ)
        env.pop("OPSWATCH_CONFIG", None)
        env["OPSWATCH_STATE_DIR"] = str(self.state)
        return env

    def opswatch(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``opswatch -c CONFIG ARGS…`` the way a user would, from the repository."""
        command = [sys.executable, "-m", "opswatch", "-c", str(self.config), *args]
        return subprocess.run(
            command,
            cwd=self.repo,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def write_sample_repo(repo: Path) -> None:
    for relative, content in SAMPLE_FILES.items():
        path = repo / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(0o755 if relative in EXECUTABLE else 0o644)


def write_config(site: DemoSite) -> None:
    empty = site.base / "ssh_config.empty"  # the user's ~/.ssh/config must not apply
    empty.touch()
    site.config.write_text(
        CONFIG.format(
            port=site.sshd.port,
            user=_toml(site.sshd.user),
            remote_root=_toml(site.remote_root),
            known_hosts=_toml(site.sshd.known_hosts),
            identity_file=_toml(site.sshd.client_key),
            ssh_config=_toml(empty),
        )
    )


def start_daemon(site: DemoSite) -> None:
    site.state.mkdir(mode=0o700, exist_ok=True)
    site._log = open(site.log_path, "ab")  # noqa: SIM115 - closed by stop_daemon()
    command = [sys.executable, "-m", "opswatch", "-c", str(site.config), "--log-format", "json"]
    site.daemon = subprocess.Popen(
        # debug: the follower shows what `never` kept home, logged at that level
        [*command, "--log-level", "debug", "run"],
        cwd=site.repo,
        env=site.env(),
        stdin=subprocess.DEVNULL,
        stdout=site._log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the demo, which stops the daemon in order
    )


def stop_daemon(site: DemoSite) -> int | None:
    process, site.daemon = site.daemon, None
    code = None
    if process is not None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait(timeout=STOP_TIMEOUT_S)
    if site._log is not None:
        site._log.close()
        site._log = None
    return code


def wait_for(
    condition: Callable[[], bool], timeout: float, site: DemoSite | None = None
) -> float | None:
    """Seconds until ``condition`` held, or None after ``timeout``; fails if the daemon died."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if site is not None and site.daemon is not None and site.daemon.poll() is not None:
            raise OpswatchError(f"the daemon exited ({site.daemon.returncode}):\n{site.log_tail()}")
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.01)


def same_file(local: Path, remote: Path) -> bool:
    """Same bytes and the same permission bits."""
    try:
        if (local.stat().st_mode & 0o777) != (remote.stat().st_mode & 0o777):
            return False
        return local.read_bytes() == remote.read_bytes()
    except OSError:
        return False


def routed_pairs(site: DemoSite) -> list[tuple[Path, Path]]:
    """(local file, its server copy) for every file the demo config's rules route now."""
    config = load_config(site.config)
    router = Router.from_config(config)
    index = scan(LocalTree(config.local_root, config.watched_folders, router))
    return [
        (config.local_root / path, Path(target))
        for path in index.files
        for target in router.decide(path).targets
    ]


def wait_ready(site: DemoSite) -> float:
    """Wait until the daemon's first reconcile put every routed sample file on the server."""
    pairs = routed_pairs(site)
    took = wait_for(lambda: all(same_file(a, b) for a, b in pairs), READY_TIMEOUT_S, site)
    if took is None:
        raise OpswatchError(
            f"the first sync did not land within {READY_TIMEOUT_S:.0f} s:\n{site.log_tail()}"
        )
    return took


SHORT_TEMP = 40  # characters: what the socket's path may spend on the temp folder


def _base_folder() -> Path:
    # The state folder holds a Unix socket, whose path must stay short (108 bytes on Linux, 104
    # on macOS, whose TMPDIR alone is about 50): $TMPDIR when it is short enough, else /tmp.
    chosen: str | None = tempfile.gettempdir()
    if len(tempfile.gettempdir()) > SHORT_TEMP:
        chosen = "/tmp" if Path("/tmp").is_dir() and os.access("/tmp", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="opswatch-demo-", dir=chosen)).resolve()


@contextmanager
def demo_site(*, keep: bool = False) -> Iterator[DemoSite]:
    """A running site; on exit the daemon and sshd stop and (unless ``keep``) the folder goes."""
    if not LocalSshd.available():
        raise OpswatchError(INSTALL_SSHD)
    base = _base_folder()
    site: DemoSite | None = None
    try:
        site = DemoSite(base, LocalSshd(base / "sshd"))
        write_sample_repo(site.repo)
        site.remote_root.mkdir(parents=True)
        try:
            site.sshd.start()
        except LocalSshdError as exc:
            raise OpswatchError(f"the throwaway sshd did not start: {exc}") from exc
        write_config(site)
        start_daemon(site)
        yield site
    finally:
        if site is not None:
            stop_daemon(site)
            with suppress(LocalSshdError):
                site.sshd.stop()
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
