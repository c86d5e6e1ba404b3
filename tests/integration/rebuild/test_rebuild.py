"""Rebuilds end to end: real sshd, real watchdog, a stand-in `docker` on the server's PATH.

The stand-in records, per call, its working folder, COMPOSE_FILE, its arguments and the last
line of the watched Dockerfile as the server had it at that moment (proof of "after it landed").
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import StartDaemon
from helpers import wait_until
from opswatch.cli.main import cli
from opswatch.cli.rebuild import run_rebuild
from opswatch.config import load_config
from opswatch.daemon.engine import Daemon
from opswatch.demo.sshd import LocalSshd
from opswatch.rebuild.health import check_health
from opswatch.rebuild.worker import RebuildHook
from opswatch.ssh.remote import SshRemote, connected_remote

GATEWAY = "coda-mcp-gateway"
DOCKERFILE = f"docs/ops/Dockerfile.{GATEWAY}"
COMPOSE = "docs/ops/docker-compose.production.yml"
GATEWAY_SOURCES = "integrations/mcp/servers/coda"
DEMO_SOURCES = "docs/ops/runbooks"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Call:
    cwd: str
    compose_file: str
    args: str
    seen: str  # last line of the watched remote file when docker ran


class DockerStub:
    """Writes `remote_bin/docker`; `calls()` reads what it recorded."""

    def __init__(self, remote_bin: Path, log: Path) -> None:
        self.path = remote_bin / "docker"
        self.log = log

    def install(self, *, watch: Path | None = None, then: str = "") -> None:
        watched = str(watch) if watch else "/dev/null"
        self.path.write_text(
            "#!/bin/sh\n"
            f"seen=$(tail -n 1 '{watched}' 2>/dev/null)\n"
            'printf \'%s\\t%s\\t%s\\t%s\\n\' "$PWD" "${COMPOSE_FILE-}" "$*" "$seen"'
            f" >> '{self.log}'\n"
            f"{then}\n"
        )
        self.path.chmod(0o755)

    def calls(self) -> list[Call]:
        if not self.log.exists():
            return []
        return [Call(*line.split("\t")) for line in self.log.read_text().splitlines()]


@pytest.fixture
def docker(remote_bin: Path, tmp_path: Path) -> Iterator[DockerStub]:
    stub = DockerStub(remote_bin, tmp_path / "docker.log")
    yield stub
    stub.path.unlink(missing_ok=True)  # the session's sshd is shared


@dataclass(frozen=True)
class Seeded:
    """The seed repository and a remote root on the shared sshd; ``write`` writes its config."""

    repo: Path
    remote_root: Path
    write: Callable[..., Path]


@pytest.fixture
def seeded(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: Callable[..., Path]
) -> Seeded:
    def write(**overrides: Any) -> Path:
        return write_config(repo, sshd_server, remote_root, **overrides)

    return Seeded(repo, remote_root, write)


def rebuild_table(**overrides: Any) -> dict[str, Any]:
    return {"mode": "auto", "compose_dir": "ops", "compose_file": COMPOSE, **overrides}


@pytest.fixture
def start_synced(start_daemon: StartDaemon) -> StartDaemon:
    """The real daemon after a one-shot sync: its start finds nothing to send or rebuild."""

    def start(config_path: Path, *, presync: bool = True) -> Daemon:
        return start_daemon(config_path, presync=presync)

    return start


def rebuild_hook(daemon: Daemon) -> RebuildHook:
    return next(h for h in daemon.after_batch if isinstance(h, RebuildHook))


def settled(daemon: Daemon, uploaded: int) -> Callable[[], bool]:
    """The batch that brings `uploaded` to this count was handled and no rebuild is pending."""
    hook = rebuild_hook(daemon)
    return lambda: daemon.status().uploaded >= uploaded and hook.worker.idle


class Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first request, 200 after; GET only when `head` is False."""

    answers: list[int]

    def _answer(self) -> None:
        self.send_response(self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._answer()

    def log_message(self, *args: Any) -> None:
        pass


class FlakyWithHead(Flaky):
    def do_HEAD(self) -> None:
        self._answer()


@pytest.fixture
def health_server() -> Iterator[Callable[..., str]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(answers: list[int], *, head: bool = True) -> str:
        base = FlakyWithHead if head else Flaky
        handler = type("Handler", (base,), {"answers": list(answers)})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/sse"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


# -- the daemon ------------------------------------------------------------------------------


def test_a_dockerfile_edit_builds_then_ups_that_service_once_after_it_landed(
    seeded: Seeded,
    start_synced: StartDaemon,
    docker: DockerStub,
    health_server: Callable[..., str],
) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    url = health_server([503, 200])
    service = {"name": GATEWAY, "health": url}
    config = seeded.write(rebuild=rebuild_table(service=[service], health_timeout_s=30))
    docker.install(watch=remote_root / DOCKERFILE)
    (remote_root / GATEWAY_SOURCES).mkdir(parents=True)  # what its Dockerfile copies
    daemon = start_synced(config)
    (repo / DOCKERFILE).write_text((repo / DOCKERFILE).read_text() + "# edit 1\n")
    wait_until(lambda: daemon.status().rebuilds, 30)
    wait_until(lambda: rebuild_hook(daemon).worker.idle)
    ops = str(remote_root / "ops")
    compose_file = "docker-compose.production.yml"
    assert docker.calls() == [
        Call(ops, compose_file, f"compose build {GATEWAY}", "# edit 1"),
        Call(ops, compose_file, f"compose up -d {GATEWAY}", "# edit 1"),
    ]
    result = daemon.status().to_json()["rebuilds"]
    assert result == [
        {
            "service": GATEWAY,
            "ok": True,
            "at": result[0]["at"],
            "detail": result[0]["detail"],
            "batch": daemon.status().to_json()["last_batch"]["id"],  # type: ignore[index]
            "rolled_back": False,
        }
    ]
    assert "answered HTTP 200 (try 2)" in result[0]["detail"]


def test_a_compose_edit_checks_then_applies(
    seeded: Seeded,
    start_synced: StartDaemon,
    docker: DockerStub,
) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    config = seeded.write(rebuild=rebuild_table())
    docker.install(watch=remote_root / "ops/docker-compose.production.yml")
    daemon = start_synced(config)
    (repo / COMPOSE).write_text((repo / COMPOSE).read_text() + "# edit 2\n")
    wait_until(lambda: daemon.status().rebuilds, 30)
    assert [(c.args, c.seen) for c in docker.calls()] == [
        ("compose config -q", "# edit 2"),
        ("compose up -d", "# edit 2"),
    ]
    (result,) = daemon.status().rebuilds
    assert (result.service, result.ok) == ("*", True)


def test_a_file_no_dockerfile_copies_or_an_injection_name_runs_nothing(
    seeded: Seeded,
    start_synced: StartDaemon,
    docker: DockerStub,
) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    config = seeded.write(rebuild=rebuild_table())
    docker.install()
    daemon = start_synced(config)
    (repo / "docs/ops/quality_gates/check.sh").write_text("#!/bin/sh\necho changed\n")
    wait_until(settled(daemon, 1))
    injection = "Dockerfile.$(touch injected)"
    (repo / "docs/ops" / injection).write_text("FROM scratch\n")
    wait_until(settled(daemon, 2))
    assert (remote_root / "docs/ops" / injection).is_file()
    assert docker.calls() == []
    assert daemon.status().rebuilds == ()
    for folder in (remote_root, remote_root / "ops", remote_root / "docs/ops", Path.home()):
        assert not (folder / "injected").exists()


def test_a_when_folder_no_rule_sends_is_watched_and_rebuilds_without_sending(
    seeded: Seeded,
    start_synced: StartDaemon,
    docker: DockerStub,
) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    (repo / "src/api").mkdir(parents=True)
    (repo / "src/api/main.py").write_text("print('v1')\n")
    services = [
        {"name": "demo", "when": ["src/**"]},
        {"name": GATEWAY, "when": ["certs/**"]},  # never looked at: it can never match
    ]
    config = seeded.write(rebuild=rebuild_table(service=services))
    dry = CliRunner().invoke(cli, ["--config", str(config), "sync", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert 'when "certs/**" never matches: certs/ is never looked at' in dry.output
    assert 'when "src/**"' not in dry.output
    docker.install()
    daemon = start_synced(config)
    (repo / "src/api/main.py").write_text("print('v2')\n")
    wait_until(lambda: daemon.status().rebuilds, 30)
    wait_until(lambda: rebuild_hook(daemon).worker.idle)
    assert [c.args for c in docker.calls()] == ["compose build demo", "compose up -d demo"]
    assert not (remote_root / "src").exists(), "a when pattern rebuilds; only rules send"
    assert daemon.status().uploaded == 0


def test_the_first_copy_rebuilds_nothing_the_next_edit_does(
    seeded: Seeded,
    start_synced: StartDaemon,
    docker: DockerStub,
) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    config = seeded.write(rebuild=rebuild_table())
    docker.install()
    daemon = start_synced(config, presync=False)
    wait_until(settled(daemon, 5))
    assert (remote_root / DOCKERFILE).is_file() and docker.calls() == []
    (repo / "docs/ops/Dockerfile.demo").write_text("FROM scratch\n")
    wait_until(lambda: daemon.status().rebuilds, 30)
    assert [c.args for c in docker.calls()] == ["compose build demo", "compose up -d demo"]


def test_mode_off_runs_nothing(
    seeded: Seeded,
    start_synced: StartDaemon,
    docker: DockerStub,
) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    config = seeded.write(rebuild=rebuild_table(mode="off"))
    docker.install()
    daemon = start_synced(config)
    assert not any(isinstance(h, RebuildHook) for h in daemon.after_batch)
    (repo / DOCKERFILE).write_text("FROM scratch\n# off\n")
    wait_until(lambda: daemon.status().uploaded >= 1)
    assert (remote_root / DOCKERFILE).read_text().endswith("# off\n")
    assert docker.calls() == []


def test_a_failing_build_is_reported_and_skips_up(
    seeded: Seeded,
    start_synced: StartDaemon,
    docker: DockerStub,
) -> None:
    repo = seeded.repo
    config = seeded.write(rebuild=rebuild_table())
    docker.install(then='echo "step 3/5: npm ci: no such package" >&2; exit 1')
    daemon = start_synced(config)
    (repo / DOCKERFILE).write_text("FROM scratch\n# broken\n")
    wait_until(lambda: daemon.status().rebuilds, 30)
    (result,) = daemon.status().rebuilds
    assert (result.service, result.ok) == (GATEWAY, False)
    assert result.detail.splitlines() == [
        "build failed (exit 1)",
        "step 3/5: npm ci: no such package",
    ]
    assert [c.args for c in docker.calls()] == [f"compose build {GATEWAY}"]
    wait_until(
        lambda: (daemon.status().last_error or "").startswith(f"rebuild {GATEWAY}: build failed")
    )


# -- `opswatch rebuild` ----------------------------------------------------------------------


def test_rebuild_command_exit_codes(
    seeded: Seeded,
    docker: DockerStub,
) -> None:
    remote_root = seeded.remote_root
    config = seeded.write(rebuild=rebuild_table())
    (remote_root / "ops").mkdir()
    (remote_root / DEMO_SOURCES).mkdir(parents=True)  # what its Dockerfile copies
    runner = CliRunner()
    docker.install()
    done = runner.invoke(cli, ["--config", str(config), "rebuild", "demo"])
    assert (done.exit_code, done.output.splitlines()[-1]) == (0, "demo: ok: build, up: ok")
    assert [c.args for c in docker.calls()] == ["compose build demo", "compose up -d demo"]
    done = runner.invoke(cli, ["--config", str(config), "rebuild", "--json", "demo"])
    (result,) = json.loads(done.stdout)
    assert (done.exit_code, result["service"], result["ok"]) == (0, "demo", True)
    docker.install(then="echo nope; exit 1")
    done = runner.invoke(cli, ["--config", str(config), "rebuild", "demo"])
    assert done.exit_code == 1
    assert "demo: FAILED: build failed (exit 1)" in done.output
    done = runner.invoke(cli, ["--config", str(config), "rebuild", "ghost"])
    assert done.exit_code == 2 and "'ghost' is not a service of" in done.output
    done = runner.invoke(cli, ["--config", str(config), "rebuild", "demo;touch x"])
    assert done.exit_code == 2 and "is not a compose service name" in done.output


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_a_build_past_its_timeout_is_stopped_on_the_server(
    repo: Path,
    sshd_server: LocalSshd,
    remote_root: Path,
    write_config: Callable[..., Path],
    docker: DockerStub,
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    config = write_config(repo, sshd_server, remote_root, rebuild=rebuild_table(timeout_s=1))
    (remote_root / "ops").mkdir()
    (remote_root / DEMO_SOURCES).mkdir(parents=True)
    docker.install(then=f"sleep 600 & echo $$ $! > '{pids}'; wait")
    (result,) = run_rebuild(load_config(config), ("demo",))
    assert not result.ok
    assert result.detail.startswith("build timed out after 1 s (stopped on the server)")
    shell, sleeper = map(int, pids.read_text().split())
    wait_until(lambda: not alive(shell) and not alive(sleeper), message="the build to be gone")


# -- the command runner ----------------------------------------------------------------------


@pytest.fixture
def connected(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: Callable[..., Path]
) -> Iterator[SshRemote]:
    config = load_config(write_config(repo, sshd_server, remote_root))
    with connected_remote(config.remote) as remote:
        yield remote


def test_5_mib_on_both_streams_does_not_deadlock(connected: SshRemote) -> None:
    line = "x" * 1023
    both = f"(yes {line} | head -c {5 * MIB} >&2) & yes {line} | head -c {5 * MIB}; wait; exit 7"
    lines: list[str] = []
    result = connected.run(both, timeout=60, on_line=lines.append)
    assert (result.exit_status, result.timed_out) == (7, False)
    assert (result.stdout_bytes, result.stderr_bytes) == (5 * MIB, 5 * MIB)
    assert len(lines) == 2 * 5 * MIB // 1024
    assert result.output[-1] == line


def test_a_command_past_its_deadline_leaves_no_process(
    connected: SshRemote, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    command = f"sh -c 'sleep 600 & echo $$ $! > {pids}; wait'; echo never"
    result = connected.run(command, timeout=1)
    assert result.timed_out and result.exit_status == -1
    assert "never" not in result.output
    shell, sleeper = map(int, pids.read_text().split())
    wait_until(lambda: not alive(shell) and not alive(sleeper), message="the command to be gone")


def test_exit_status_and_output_come_back(connected: SshRemote) -> None:
    result = connected.run("echo out; echo err >&2; exit 3", timeout=30)
    assert (result.exit_status, sorted(result.output)) == (3, ["err", "out"])
    assert not result.ok


# -- health ----------------------------------------------------------------------------------


def test_health_waits_for_a_status_below_500(health_server: Callable[..., str]) -> None:
    ok, detail = check_health(health_server([503, 503, 200]), 30)
    assert ok and "answered HTTP 200 (try 3)" in detail


def test_health_falls_back_to_get(health_server: Callable[..., str]) -> None:
    ok, detail = check_health(health_server([503, 200], head=False), 30)
    assert ok and "answered HTTP 200 (try 2)" in detail


def test_health_gives_up_after_its_timeout(health_server: Callable[..., str]) -> None:
    ok, detail = check_health(health_server([503]), 1)
    assert not ok and "HTTP 503 after" in detail


def test_health_of_a_closed_port_is_a_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ok, detail = check_health(f"http://127.0.0.1:{port}/", 0.5)
    assert not ok and "refused" in detail.lower()
