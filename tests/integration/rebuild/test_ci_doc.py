"""docs/ci.md's job, run as written: every `run:` step in a fresh home and state folder, against
the real sshd, with the secrets it names set from the test's server.

The steps run as GitHub Actions runs them (`bash --noprofile --norc -eo pipefail`, `$GITHUB_ENV`
read between steps, `${{ … }}` expressions replaced); the install step is left out: the test runs
the opswatch under test, from this environment's PATH.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from build_seed import (
    GATEWAY,
    PACKAGE,
    SOURCE_RULE,
    SOURCES,
    DockerRecorder,
    add_sources,
    recording_docker,
)
from conftest import SEED_RULES
from opswatch.demo.sshd import LocalSshd

DOC = Path(__file__).resolve().parents[3] / "docs" / "ci.md"
EXPRESSION = re.compile(r"\$\{\{\s*([\w.]+)\s*\}\}")


@pytest.fixture
def recorded_docker(remote_bin: Path, tmp_path: Path) -> Iterator[DockerRecorder]:
    yield from recording_docker(remote_bin, tmp_path)


@pytest.fixture
def sourced(repo: Path) -> Path:
    return add_sources(repo)


def job_steps() -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The deploy job's env and steps, from the one YAML block of docs/ci.md."""
    (block,) = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    job = yaml.safe_load(block)["jobs"]["deploy"]
    return job["env"], job["steps"]


@dataclass
class Runner:
    """One CI run: a fresh home, temp folder and $GITHUB_ENV; the secrets; the checkout."""

    workspace: Path
    base: Path
    secrets: dict[str, str]

    def __post_init__(self) -> None:
        self.home = self.base / "home"
        self.temp = self.base / "runner-temp"
        self.github_env = self.base / "github_env"
        for folder in (self.home, self.temp):
            folder.mkdir(parents=True)
        self.github_env.touch()

    def expand(self, text: str) -> str:
        values = {"runner.temp": str(self.temp)}
        values.update({f"secrets.{k}": v for k, v in self.secrets.items()})
        return EXPRESSION.sub(lambda m: values.get(m.group(1), ""), text)

    def environment(self, *tables: dict[str, str]) -> dict[str, str]:
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "HOME": str(self.home),
            "RUNNER_TEMP": str(self.temp),
            "GITHUB_ENV": str(self.github_env),
            "LANG": "C.UTF-8",
        }
        for table in tables:
            env.update({k: self.expand(str(v)) for k, v in table.items()})
        for line in self.github_env.read_text().splitlines():
            name, _, value = line.partition("=")
            env[name] = value
        return env

    def run(self) -> dict[str, subprocess.CompletedProcess[str]]:
        """Every step in order, stopping at the first that fails (``if: always()`` still runs)."""
        job_env, steps = job_steps()
        done: dict[str, subprocess.CompletedProcess[str]] = {}
        failed = False
        for step in steps:
            if "run" not in step or step["name"] == "Install opswatch":
                continue
            if failed and step.get("if") != "always()":
                continue
            result = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                cwd=self.workspace,
                env=self.environment(job_env, step.get("env", {})),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            done[step["name"]] = result
            failed = failed or result.returncode != 0
        return done


def secrets_for(sshd: LocalSshd) -> dict[str, str]:
    return {
        "DROPLET_HOST": sshd.host,
        "DROPLET_PORT": str(sshd.port),
        "DROPLET_USER": sshd.user,
        "DROPLET_HOST_KEY": sshd.known_hosts.read_text().strip(),
        "DEPLOY_KEY": sshd.client_key.read_text(),
    }


def codes(done: dict[str, subprocess.CompletedProcess[str]]) -> dict[str, int]:
    return {name: result.returncode for name, result in done.items()}


def write_repo_config(repo: Path, remote_root: Path, rules: list[dict[str, Any]]) -> None:
    """The repository's own config: an ssh alias, no key or known_hosts of its own."""
    from conftest import toml_document

    rebuild = {
        "mode": "off",
        "compose_dir": "ops",
        "compose_file": "docs/ops/docker-compose.production.yml",
    }
    text = toml_document(
        {"remote": {"host": "droplet", "root": str(remote_root)}, "rule": rules, "rebuild": rebuild}
    )
    (repo / "opswatch.toml").write_text(text)


def test_the_ci_job_deploys_from_a_fresh_environment(
    sourced: Path,
    sshd_server: LocalSshd,
    remote_root: Path,
    tmp_path: Path,
    recorded_docker: DockerRecorder,
) -> None:
    write_repo_config(sourced, remote_root, [*SEED_RULES, SOURCE_RULE])
    runner = Runner(sourced, tmp_path / "run-1", secrets_for(sshd_server))
    done = runner.run()
    assert codes(done) == {
        "SSH access (host key pinned, deploy key in an agent)": 0,
        "Sync the ops files": 0,
        "Verify the server's copy and the builds' sources": 0,
        "Rebuild, redeploy, check health": 0,
        "Stop the agent": 0,
    }, {name: r.stderr[-800:] for name, r in done.items()}
    assert (remote_root / PACKAGE).is_file()
    assert not (remote_root / "docs/ops/.env").exists()
    assert recorded_docker.calls() == [
        f"compose build {GATEWAY}",
        f"compose up -d {GATEWAY}",
        "compose build demo",
        "compose up -d demo",
    ]
    assert not (runner.home / ".ssh" / "id_ed25519").exists()  # the key stayed in the agent
    assert (runner.temp / "opswatch-state").is_dir()  # the state went where the job put it


def test_a_build_source_no_rule_sends_fails_the_job_before_any_build(
    sourced: Path,
    sshd_server: LocalSshd,
    remote_root: Path,
    tmp_path: Path,
    recorded_docker: DockerRecorder,
    state_dir: Path,
) -> None:
    write_repo_config(sourced, remote_root, SEED_RULES)
    done = Runner(sourced, tmp_path / "run-1", secrets_for(sshd_server)).run()
    assert codes(done) == {
        "SSH access (host key pinned, deploy key in an agent)": 0,
        "Sync the ops files": 0,
        "Verify the server's copy and the builds' sources": 1,
        "Stop the agent": 0,
    }
    verify = done["Verify the server's copy and the builds' sources"].stdout
    assert f"GAP      {GATEWAY}: COPY {PACKAGE}: not on the server and no rule sends it" in verify
    assert recorded_docker.calls() == []
    assert not (remote_root / SOURCES).exists()


def test_a_changed_host_key_stops_the_job(
    sourced: Path,
    sshd_server: LocalSshd,
    remote_root: Path,
    tmp_path: Path,
    recorded_docker: DockerRecorder,
    make_sshd: Callable[..., LocalSshd],
) -> None:
    write_repo_config(sourced, remote_root, [*SEED_RULES, SOURCE_RULE])
    secrets = secrets_for(sshd_server)
    other = make_sshd()  # another server's key pinned for this one: refused, never trusted
    secrets["DROPLET_HOST_KEY"] = (
        other.known_hosts.read_text().strip().replace(f"]:{other.port} ", f"]:{sshd_server.port} ")
    )
    done = Runner(sourced, tmp_path / "run-1", secrets).run()
    sync = done["Sync the ops files"]
    assert sync.returncode == 1
    assert sync.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Verify the server's copy and the builds' sources" not in done
    assert not list(remote_root.iterdir()) and recorded_docker.calls() == []
