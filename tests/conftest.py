"""Shared fixtures: a real sshd on 127.0.0.1, a repository laid out like the seed, its config."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from helpers import wait_until
from opswatch.daemon.engine import Daemon
from opswatch.demo.sshd import LocalSshd

# `pytest --hypothesis-profile=long`: the field test (and every property test) runs many
# examples; the default suite keeps each property test short.
settings.register_profile("long", max_examples=300, deadline=None)

WriteConfig = Callable[..., Path]
MakeSshd = Callable[..., LocalSshd]

SSHD_FIXTURES = {"sshd_server", "remote_bin", "own_sshd", "make_sshd"}

MISSING_SSHD = (
    "OpenSSH's sshd (and ssh-keygen) are needed by the integration tests and were not found. "
    "Run the test command from the README, `bash tests/run.sh`: it installs them."
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real sshd, so `-m "not sshd"` selects the quick ones."""
    for item in items:
        if SSHD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.sshd)


def _require_sshd() -> None:
    # A skipped integration test would hide a missing feature: fail loudly instead.
    if not LocalSshd.available():
        pytest.fail(MISSING_SSHD, pytrace=False)


# -- environment ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Per-test state folder; no config, agent or ssh settings leak in from the developer's setup.

    The state folder is made under a short base: it holds a Unix socket, whose path may not
    exceed about 100 bytes (pytest's tmp_path on macOS is already longer than that).
    """
    short_base = "/tmp" if Path("/tmp").is_dir() else None
    state_dir = Path(tempfile.mkdtemp(prefix="opswatch-state-", dir=short_base))
    monkeypatch.setenv("OPSWATCH_STATE_DIR", str(state_dir))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.delenv("OPSWATCH_CONFIG", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    yield state_dir
    shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def state_dir(_isolated_environment: Path) -> Path:
    """The folder OPSWATCH_STATE_DIR points to in this test."""
    return _isolated_environment


# -- sshd ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSshd]:
    """One sshd for the whole session; tests must not stop, restart or re-key it (use own_sshd).

    Its sessions find executables in `remote_bin` first (e.g. a stand-in `docker`).
    """
    _require_sshd()
    workdir = tmp_path_factory.mktemp("sshd")
    (workdir / "bin").mkdir()
    server = LocalSshd(workdir, path_prepend=[workdir / "bin"])
    with server:
        yield server


@pytest.fixture
def remote_bin(sshd_server: LocalSshd) -> Path:
    """The folder at the front of PATH of commands run through `sshd_server` (shared: clean up)."""
    return sshd_server.workdir / "bin"


@pytest.fixture
def remote_root(tmp_path: Path) -> Path:
    """A fresh, empty folder to use as `remote.root`."""
    root = (tmp_path / "remote").resolve()
    root.mkdir()
    return root


@pytest.fixture
def make_sshd(tmp_path: Path) -> Iterator[MakeSshd]:
    """Start a private sshd: `make_sshd(path_prepend=…, extra_config=…, sftp_command=…,
    sftp_subsystem=False)`."""
    _require_sshd()
    servers: list[LocalSshd] = []

    def make(
        *,
        path_prepend: Sequence[Path] = (),
        extra_config: Sequence[str] = (),
        sftp_command: str | None = None,
        sftp_subsystem: bool = True,
    ) -> LocalSshd:
        workdir = tmp_path / f"sshd-{len(servers)}"
        server = LocalSshd(
            workdir,
            path_prepend=path_prepend,
            extra_config=extra_config,
            sftp_command=sftp_command,
            sftp_subsystem=sftp_subsystem,
        )
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def own_sshd(make_sshd: MakeSshd) -> LocalSshd:
    """A private, running sshd this test may stop, restart, cut off or re-key."""
    return make_sshd()


# -- repository and config -------------------------------------------------------------------

COMPOSE_FILE = """\
services:
  coda-mcp-gateway:
    build:
      context: ..
      dockerfile: docs/ops/Dockerfile.coda-mcp-gateway
    ports:
      - "8080:8080"
  demo:
    build:
      context: ..
      dockerfile: docs/ops/Dockerfile.demo
"""

SEED_FILES = {
    "docs/ops/Dockerfile.coda-mcp-gateway": (
        "FROM node:20-slim\nWORKDIR /app\n"
        'COPY integrations/mcp/servers/coda/ ./\nRUN npm ci\nCMD ["node", "dist/index.js"]\n'
    ),
    "docs/ops/Dockerfile.demo": (
        "FROM nginx:alpine\nCOPY docs/ops/runbooks/ /usr/share/nginx/html/\n"
    ),
    "docs/ops/docker-compose.production.yml": COMPOSE_FILE,
    "docs/ops/runbooks/deploy.md": "# Deploy\n\n1. Push the ops files.\n2. Rebuild what changed.\n",
    "docs/ops/quality_gates/check.sh": "#!/bin/sh\nset -eu\necho quality gates passed\n",
    "docs/ops/.env": "SECRET=hunter2\n",
    "docs/ops/data/db.sqlite": "SQLite format 3\0not really a database\n",
    "docs/ops/certs/site.pem": (
        "-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n"
    ),
}

SEED_RULES = [
    {"from": "docs/ops", "match": ["docker-compose.production.yml"], "to": "ops"},
    {
        "from": "docs/ops",
        "match": ["Dockerfile.*", "runbooks/", "quality_gates/"],
        "to": "docs/ops",
    },
]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository laid out like the seed, secrets included (they must never be uploaded)."""
    root = (tmp_path / "repo").resolve()
    for relative, content in SEED_FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (root / "docs/ops/quality_gates/check.sh").chmod(0o755)
    return root


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """`write_config(repo, sshd, remote_root, **overrides) -> Path` writes `repo/opswatch.toml`.

    Each override is merged into its table (`sync={"delete": True}`, `rebuild={...}`); a value
    of None removes the key; `rule=[...]` replaces the rules. `remote.ssh_config` is an empty
    file so the developer's ~/.ssh/config never applies.
    """
    empty_ssh_config = tmp_path / "ssh_config.empty"
    empty_ssh_config.touch()

    def write(repo: Path, sshd: LocalSshd, remote_root: Path, **overrides: Any) -> Path:
        tables: dict[str, Any] = {
            "remote": {
                "host": sshd.host,
                "port": sshd.port,
                "user": sshd.user,
                "root": str(remote_root),
                "known_hosts": str(sshd.known_hosts),
                "identity_file": str(sshd.client_key),
                "ssh_config": str(empty_ssh_config),
            },
            "sync": {"debounce_ms": 100, "max_delay_ms": 1000},
            "rule": SEED_RULES,
        }
        for name, value in overrides.items():
            tables[name] = _merged(tables.get(name), value)
        text = toml_document(tables)
        tomllib.loads(text)  # the writer below is tiny: prove its output parses
        path = repo / "opswatch.toml"
        path.write_text(text)
        return path

    return write


def _merged(base: Any, override: Any) -> Any:
    if not isinstance(base, Mapping) or not isinstance(override, Mapping):
        return override
    merged = {**base, **override}
    return {key: value for key, value in merged.items() if value is not None}


# -- a tiny TOML writer (str, int, float, bool, Path, lists of them, tables, arrays of tables) --


def toml_document(tables: Mapping[str, Any]) -> str:
    """TOML text for a mapping of top-level tables and arrays of tables."""
    blocks: list[str] = []
    for name, value in tables.items():
        blocks.extend(_toml_tables(name, value))
    return "\n".join(blocks)


def _toml_tables(name: str, value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return _toml_table(f"[{name}]", name, value)
    if isinstance(value, list) and all(isinstance(item, Mapping) for item in value):
        return [block for item in value for block in _toml_table(f"[[{name}]]", name, item)]
    raise TypeError(f"top-level TOML value {name} must be a table or an array of tables")


def _toml_table(header: str, name: str, table: Mapping[str, Any]) -> list[str]:
    lines = [header]
    nested: list[str] = []
    for key, value in table.items():
        if _is_table(value):
            nested.extend(_toml_tables(f"{name}.{key}", value))
        else:
            lines.append(f"{_toml_key(key)} = {toml_value(value)}")
    return ["\n".join(lines) + "\n", *nested]


def _toml_key(key: str) -> str:
    bare = key and all(char.isascii() and (char.isalnum() or char in "-_") for char in key)
    return key if bare else json.dumps(key, ensure_ascii=False)


def _is_table(value: Any) -> bool:
    if isinstance(value, Mapping):
        return True
    return bool(value) and isinstance(value, list) and isinstance(value[0], Mapping)


def toml_value(value: Any) -> str:
    """A TOML scalar or inline array; JSON's string escapes are valid TOML basic strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


# -- the daemon on a thread of the test process -------------------------------------------------

StartDaemon = Callable[..., "Daemon"]


@pytest.fixture
def start_daemon() -> Iterator[StartDaemon]:
    """`start_daemon(config_path, *, presync=False, settle=True) -> Daemon`: the real daemon as
    `opswatch run` builds it (engine thread, watcher, SshRemote), stopped after the test.

    `presync` runs a one-shot `opswatch sync` first, so that the start finds nothing to send;
    `settle` waits until the first reconcile is done and the daemon is watching.
    """
    from opswatch.cli.sync import run_sync
    from opswatch.config import load_config
    from opswatch.daemon.run import build_daemon
    from opswatch.model import State
    from opswatch.paths import state_paths

    running: list[tuple[Daemon, threading.Thread]] = []

    def start(config_path: Path, *, presync: bool = False, settle: bool = True) -> Daemon:
        config = load_config(config_path)
        paths = state_paths(config.source)
        if presync:
            assert run_sync(config, paths, dry_run=False, force=False, as_json=True) == 0
        daemon = build_daemon(config, paths)
        thread = threading.Thread(target=daemon.run, name="engine", daemon=True)
        thread.start()
        running.append((daemon, thread))
        if settle:
            wait_until(
                lambda: daemon.status().state is State.WATCHING and daemon.status().last_sync,
                message="the daemon's first reconcile",
            )
        return daemon

    yield start
    for daemon, thread in running:
        daemon.stop()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the engine did not stop"
