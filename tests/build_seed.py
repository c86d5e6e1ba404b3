"""The seed with its gateway's build sources (`context: ..`, `COPY integrations/…/package.json`),
a `docker` on the server's PATH that records its calls, and `opswatch init` aimed at the sshd."""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

from conftest import toml_document
from daemon_process import opswatch_command
from opswatch.demo.sshd import LocalSshd

GATEWAY = "coda-mcp-gateway"
COMPOSE = "docs/ops/docker-compose.production.yml"
SOURCES = "integrations/mcp/servers/coda/src"
PACKAGE = f"{SOURCES}/package.json"
GATEWAY_DOCKERFILE = f"""\
# syntax=docker/dockerfile:1
FROM node:20-slim AS build
WORKDIR /app
COPY {PACKAGE} ./
RUN npm ci
COPY --chown=node:node {SOURCES}/ ./src/
RUN npm run build
FROM node:20-slim
COPY --from=build /app/dist /app/dist
CMD ["node", "/app/dist/index.js"]
"""
SOURCE_RULE = {"from": SOURCES, "to": SOURCES}


class DockerRecorder:
    """`docker` on the server's PATH that records its arguments, one line per call."""

    def __init__(self, remote_bin: Path, log: Path) -> None:
        self.path = remote_bin / "docker"
        self.log = log
        self.path.write_text(f"#!/bin/sh\necho \"$*\" >> '{log}'\n")
        self.path.chmod(0o755)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def recording_docker(remote_bin: Path, tmp_path: Path) -> Iterator[DockerRecorder]:
    """For a fixture: the recorder, removed afterwards (the session's sshd is shared)."""
    stub = DockerRecorder(remote_bin, tmp_path / "docker.log")
    yield stub
    stub.path.unlink(missing_ok=True)


def add_sources(repo: Path) -> Path:
    """The seed repository with the gateway's sources and its Dockerfile as the issue has it."""
    files = {
        PACKAGE: '{"name": "coda-mcp-gateway"}\n',
        f"{SOURCES}/index.ts": "export const hello = 1;\n",
        "integrations/mcp/servers/coda/README.md": "not copied by any Dockerfile\n",
        "docs/ops/Dockerfile.coda-mcp-gateway": GATEWAY_DOCKERFILE,
    }
    for relative, content in files.items():
        path = repo / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return repo


def run_init(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*opswatch_command(), "init", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def aim_at(config: Path, sshd: LocalSshd, remote_root: Path, tmp_path: Path) -> None:
    """Point a written config at the test's sshd, keeping everything else it says."""
    doc = tomllib.loads(config.read_text())
    empty = tmp_path / "ssh_config.empty"
    empty.touch()
    doc["remote"].update(
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        root=str(remote_root),
        known_hosts=str(sshd.known_hosts),
        identity_file=str(sshd.client_key),
        ssh_config=str(empty),
    )
    config.write_text(toml_document(doc))
