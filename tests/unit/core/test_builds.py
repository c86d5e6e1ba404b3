"""What each build needs from the server: resolution, matching, gaps. Pure, table-driven."""

from __future__ import annotations

import pytest

from opswatch.config import Rule
from opswatch.core.builds import (
    BuildNeeds,
    Sending,
    gaps,
    local_for_remote,
    needs_of,
)
from opswatch.core.compose import ChangedFile, affected, load_compose, read_project
from opswatch.core.dockerfile import CopySource
from opswatch.core.rules import Router

ROOT = "/root/portfolio"
COMPOSE_REMOTE = f"{ROOT}/ops/docker-compose.production.yml"
SEED_COMPOSE = """\
services:
  coda-mcp-gateway:
    build:
      context: ..
      dockerfile: docs/ops/Dockerfile.coda-mcp-gateway
  demo:
    build:
      context: ..
      dockerfile: docs/ops/Dockerfile.demo
  api:
    build: ./api
"""
GATEWAY = (
    "FROM node:20-slim\nWORKDIR /app\n"
    "COPY integrations/mcp/servers/coda/src/package.json ./\n"
    "COPY integrations/mcp/servers/coda/src/ ./src/\n"
)
DEMO = "FROM nginx:alpine\nCOPY docs/ops/runbooks/ /usr/share/nginx/html/\n"
API = "FROM python:3.12\nCOPY . /app\n"
RULES = (
    Rule("docs/ops", ("docker-compose.production.yml",), ("ops",)),
    Rule("docs/ops", ("Dockerfile.*", "runbooks/"), ("docs/ops",)),
    Rule("integrations/mcp/servers/coda", None, ("integrations/mcp/servers/coda",)),
    Rule("services/api", None, ("ops/api",)),
)


def project_needs() -> list[BuildNeeds]:
    project = read_project(load_compose(SEED_COMPOSE, "compose"), COMPOSE_REMOTE)
    texts = {"coda-mcp-gateway": GATEWAY, "demo": DEMO, "api": API}
    found = []
    for build in project.builds:
        ignore = "*.pyc\n__pycache__\n" if build.service == "api" else None
        need = needs_of(build, texts[build.service], ignore)
        assert need is not None
        found.append(need)
    return found


def test_context_and_dockerfile_resolve_as_compose_does_on_the_server() -> None:
    gateway, demo, api = project_needs()
    assert (gateway.context, gateway.dockerfile) == (
        ROOT,
        f"{ROOT}/docs/ops/Dockerfile.coda-mcp-gateway",
    )
    assert gateway.remote(gateway.sources[0]) == (
        f"{ROOT}/integrations/mcp/servers/coda/src/package.json"
    )
    assert (api.context, api.dockerfile) == (f"{ROOT}/ops/api", f"{ROOT}/ops/api/Dockerfile")
    assert demo.remote(demo.sources[0]) == f"{ROOT}/docs/ops/runbooks"


@pytest.mark.parametrize(
    ("remote", "services"),
    [
        (f"{ROOT}/integrations/mcp/servers/coda/src/index.ts", ["coda-mcp-gateway"]),
        (f"{ROOT}/integrations/mcp/servers/coda/src/package.json", ["coda-mcp-gateway"]),
        (f"{ROOT}/integrations/mcp/servers/coda/README.md", []),  # not copied
        (f"{ROOT}/docs/ops/runbooks/deploy.md", ["demo"]),
        (f"{ROOT}/docs/ops/quality_gates/check.sh", []),
        (f"{ROOT}/ops/api/app.py", ["api"]),
        (f"{ROOT}/ops/api/app.pyc", ["api"]),  # under its own context: the context rule
    ],
)
def test_a_copied_file_affects_exactly_its_service(remote: str, services: list[str]) -> None:
    project = read_project(load_compose(SEED_COMPOSE, "compose"), COMPOSE_REMOTE)
    found = affected(
        project,
        [ChangedFile("x", (remote,))],
        compose_dir=f"{ROOT}/ops",
        needs=project_needs(),
    )
    assert list(found.services) == services


def test_dockerignore_keeps_a_file_out_of_the_sources() -> None:
    api = project_needs()[2]
    assert api.copied_by(f"{ROOT}/ops/api/app.py") is not None
    assert api.copied_by(f"{ROOT}/ops/api/__pycache__/x.py") is None
    assert api.copied_by(f"{ROOT}/ops/api/cache/__pycache__/x.py") is not None  # anchored
    assert api.copied_by(f"{ROOT}/ops/api/app.pyc") is None
    assert api.copied_by(f"{ROOT}/ops/other/app.py") is None


@pytest.mark.parametrize(
    ("remote", "local"),
    [
        (f"{ROOT}/ops/docker-compose.production.yml", "docs/ops/docker-compose.production.yml"),
        (f"{ROOT}/docs/ops/Dockerfile.demo", "docs/ops/Dockerfile.demo"),
        (f"{ROOT}/ops/api/Dockerfile", "services/api/Dockerfile"),
        # no rule lands there: the same place below local.root as below remote.root
        (f"{ROOT}/integrations/other/x", "integrations/other/x"),
        (f"{ROOT}/docs/ops/.dockerignore", "docs/ops/.dockerignore"),
        (ROOT, ""),
        ("/elsewhere/x", None),
    ],
)
def test_local_for_remote(remote: str, local: str | None) -> None:
    router = Router(RULES, ROOT)
    assert local_for_remote(remote, RULES, ROOT, router.targets) == local


def test_gaps_are_missing_sources_no_rule_sends() -> None:
    needs = project_needs()
    package = f"{ROOT}/integrations/mcp/servers/coda/src/package.json"
    present = {f"{ROOT}/docs/ops/runbooks": True, f"{ROOT}/ops/api": True}

    def sending(need: BuildNeeds, source: CopySource) -> Sending:
        if source.path.endswith("src"):
            return Sending(True)  # the folder: a rule sends it
        return Sending(False)

    (gap,) = gaps(needs, present, sending)
    assert gap.remote == package
    assert gap.message == (
        "coda-mcp-gateway: COPY integrations/mcp/servers/coda/src/package.json: "
        "not on the server and no rule sends it"
    )
    before_build = gaps(needs, present, sending, include_sent=True)
    assert [g.source.path for g in before_build] == [
        "integrations/mcp/servers/coda/src/package.json",
        "integrations/mcp/servers/coda/src",
    ]
    assert "a rule sends it" in before_build[1].reason


def test_a_never_listed_source_says_so() -> None:
    needs = [n for n in project_needs() if n.service == "demo"]
    (gap,) = gaps(needs, {}, lambda n, s: Sending(False, 'never: matches "certs/"'))
    assert gap.reason == (
        'not on the server, and opswatch never sends it (never: matches "certs/"; '
        "no rule overrides never)"
    )
