"""Build sources end to end: real sshd, real watchdog, a stand-in `docker` on the server's PATH.

The seed's compose file builds with `context: ..` (the repository root on the server) and its
gateway's Dockerfile copies `integrations/mcp/servers/coda/src/…`: those files belong to the
gateway's build as much as its Dockerfile does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from build_seed import (
    COMPOSE,
    GATEWAY,
    PACKAGE,
    SOURCE_RULE,
    SOURCES,
    DockerRecorder,
    add_sources,
    aim_at,
    recording_docker,
    run_init,
)
from conftest import SEED_RULES, StartDaemon
from helpers import wait_until
from opswatch.cli.main import cli
from opswatch.config import load_config
from opswatch.daemon.engine import Daemon
from opswatch.demo.sshd import LocalSshd
from opswatch.rebuild.worker import RebuildHook

GAP = f"{GATEWAY}: COPY {PACKAGE}: not on the server and no rule sends it"


@pytest.fixture
def recorded_docker(remote_bin: Path, tmp_path: Path) -> Iterator[DockerRecorder]:
    yield from recording_docker(remote_bin, tmp_path)


@pytest.fixture
def sourced(repo: Path) -> Path:
    return add_sources(repo)


@pytest.fixture
def configure(
    sourced: Path, sshd_server: LocalSshd, remote_root: Path, write_config: Callable[..., Path]
) -> Callable[..., Path]:
    def write(*, rules: list[dict[str, Any]], **rebuild: Any) -> Path:
        table = {"mode": "auto", "compose_dir": "ops", "compose_file": COMPOSE, **rebuild}
        return write_config(sourced, sshd_server, remote_root, rule=rules, rebuild=table)

    return write


def opswatch(config: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def idle(daemon: Daemon, uploaded: int) -> Callable[[], bool]:
    hook = next(h for h in daemon.after_batch if isinstance(h, RebuildHook))
    return lambda: daemon.status().uploaded >= uploaded and hook.worker.idle


def test_editing_a_copied_source_rebuilds_exactly_its_service(
    sourced: Path,
    remote_root: Path,
    configure: Callable[..., Path],
    start_daemon: StartDaemon,
    recorded_docker: DockerRecorder,
) -> None:
    config = configure(rules=[*SEED_RULES, SOURCE_RULE])
    daemon = start_daemon(config, presync=True)
    assert daemon.status().build_gaps == ()
    (sourced / SOURCES / "index.ts").write_text("export const hello = 2;\n")
    wait_until(lambda: daemon.status().rebuilds, 30)
    wait_until(idle(daemon, 1))
    assert (remote_root / SOURCES / "index.ts").read_text() == "export const hello = 2;\n"
    assert recorded_docker.calls() == [f"compose build {GATEWAY}", f"compose up -d {GATEWAY}"]
    (result,) = daemon.status().rebuilds
    assert (result.service, result.ok) == (GATEWAY, True)

    # A runbook is what the demo's Dockerfile copies: it rebuilds the demo, and only it.
    (sourced / "docs/ops/runbooks/deploy.md").write_text("# Deploy\n\nchanged\n")
    wait_until(lambda: len(recorded_docker.calls()) == 4, 30)
    wait_until(idle(daemon, 2))
    assert recorded_docker.calls()[2:] == ["compose build demo", "compose up -d demo"]

    # A file under the sources' folder that no Dockerfile copies rebuilds nothing.
    (sourced / "docs/ops/quality_gates/check.sh").write_text("#!/bin/sh\necho changed\n")
    wait_until(idle(daemon, 3))
    assert len(recorded_docker.calls()) == 4


def test_a_source_no_rule_sends_is_a_gap_everywhere_and_fails_the_build_fast(
    sourced: Path,
    remote_root: Path,
    configure: Callable[..., Path],
    start_daemon: StartDaemon,
    recorded_docker: DockerRecorder,
) -> None:
    # nothing sends integrations/…; a `when` there, as a new user would write it, is watched
    when = {"name": GATEWAY, "when": [f"{SOURCES}/**"]}
    config = configure(rules=SEED_RULES, service=[when])

    dry = opswatch(config, "sync", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"gap       {GAP}" in dry.output.splitlines()
    assert "never matches" not in dry.output
    dry_json = json.loads(opswatch(config, "sync", "--dry-run", "--json").stdout)
    gaps = [(g["service"], g["source"]) for g in dry_json["build_gaps"]]
    assert gaps == [(GATEWAY, PACKAGE), (GATEWAY, f"{SOURCES}/")]

    done = opswatch(config, "sync", "--json")
    assert done.exit_code == 0, done.output
    assert len(json.loads(done.stdout)["build_gaps"]) == 2

    verified = opswatch(config, "verify")
    assert verified.exit_code == 1
    assert f"GAP      {GAP}" in verified.output.splitlines()

    rebuilt = opswatch(config, "rebuild", GATEWAY)
    assert rebuilt.exit_code == 1
    assert f"{GATEWAY}: FAILED: {GAP}" in rebuilt.output.splitlines()
    assert recorded_docker.calls() == []

    daemon = start_daemon(config)
    wait_until(lambda: len(daemon.status().to_json()["build_gaps"]) == 2)  # type: ignore[arg-type]
    first = daemon.status().build_gaps[0]
    assert (first["service"], first["source"]) == (GATEWAY, PACKAGE)
    dockerfile = sourced / "docs/ops/Dockerfile.coda-mcp-gateway"
    dockerfile.write_text(dockerfile.read_text() + "# edit\n")
    wait_until(lambda: daemon.status().rebuilds, 30)
    (result,) = daemon.status().rebuilds
    assert not result.ok and result.detail.splitlines()[0] == GAP
    assert recorded_docker.calls() == []
    assert not (remote_root / SOURCES).exists()

    # On the server already (a clone, say): not a gap, and the build goes ahead.
    (remote_root / SOURCES).mkdir(parents=True)
    (remote_root / PACKAGE).write_text("{}\n")
    assert json.loads(opswatch(config, "sync", "--json").stdout)["build_gaps"] == []
    assert opswatch(config, "rebuild", GATEWAY).exit_code == 0
    assert recorded_docker.calls() == [f"compose build {GATEWAY}", f"compose up -d {GATEWAY}"]


def test_a_never_listed_source_stays_refused_and_the_gap_says_why(
    sourced: Path,
    configure: Callable[..., Path],
    recorded_docker: DockerRecorder,
) -> None:
    (sourced / "docs/ops/Dockerfile.demo").write_text(
        "FROM nginx:alpine\nCOPY docs/ops/certs/site.pem /etc/ssl/site.pem\n"
        "COPY docs/ops/.env /app/.env\n"
    )
    everything = {"from": "docs/ops", "to": "docs/ops"}
    config = configure(rules=[SEED_RULES[0], everything])
    done = opswatch(config, "sync", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert not any("certs" in path or ".env" in path for path in report["uploaded"])
    reasons = {g["source"]: g["reason"] for g in report["build_gaps"] if g["service"] == "demo"}
    assert reasons == {
        "docs/ops/certs/site.pem": (
            'not on the server, and opswatch never sends it (never: matches "certs/"; '
            "no rule overrides never)"
        ),
        "docs/ops/.env": (
            'not on the server, and opswatch never sends it (never: matches ".env"; '
            "no rule overrides never)"
        ),
    }
    rebuilt = opswatch(config, "rebuild", "demo")
    assert rebuilt.exit_code == 1 and "opswatch never sends it" in rebuilt.output
    assert recorded_docker.calls() == []


def test_init_writes_rules_that_bring_every_build_its_sources(
    sourced: Path,
    sshd_server: LocalSshd,
    remote_root: Path,
    tmp_path: Path,
    recorded_docker: DockerRecorder,
) -> None:
    (sourced / SOURCES / ".env").write_text("CODA_TOKEN=secret\n")
    done = run_init(sourced, "--host", "droplet", "--remote-root", "/root/portfolio")
    assert done.returncode == 0, done.stderr
    assert f"{SOURCES}/  → {SOURCES}/  (build sources)" in done.stdout
    assert f"      for {GATEWAY}: COPY {PACKAGE}" in done.stdout
    config = sourced / "opswatch.toml"
    text = config.read_text()
    assert f"# for {GATEWAY}: COPY {SOURCES}/\n[[rule]]\n" in text
    rule = next(r for r in load_config(config).rules if r.source == SOURCES)
    assert (rule.match, rule.to) == (None, (SOURCES,))

    aim_at(config, sshd_server, remote_root, tmp_path)
    synced = opswatch(config, "sync", "--json")
    assert synced.exit_code == 0, synced.output
    assert json.loads(synced.stdout)["build_gaps"] == []
    assert (remote_root / PACKAGE).is_file() and (remote_root / SOURCES / "index.ts").is_file()
    assert not (remote_root / SOURCES / ".env").exists()
    rebuilt = opswatch(config, "rebuild", GATEWAY, "demo")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert recorded_docker.calls() == [
        f"compose build {GATEWAY}",
        f"compose up -d {GATEWAY}",
        "compose build demo",
        "compose up -d demo",
    ]
