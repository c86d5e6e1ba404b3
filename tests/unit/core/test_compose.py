"""Which services a change affects: table-driven over compose files as they land on the server."""

from __future__ import annotations

from typing import Any

import pytest

from opswatch.core.compose import (
    ChangedFile,
    affected,
    compose_file_env,
    compose_target,
    load_compose,
    own_context,
    read_project,
)
from opswatch.errors import LocalFileError
from opswatch.model import valid_service_name

ROOT = "/root/portfolio"
COMPOSE_DIR = f"{ROOT}/ops"
COMPOSE_REMOTE = f"{COMPOSE_DIR}/docker-compose.production.yml"
COMPOSE_LOCAL = "docs/ops/docker-compose.production.yml"

SEED = """\
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
  worker:
    build:
      context: ./worker
      dockerfile: ../../docs/ops/Dockerfile.worker
  inline:
    build:
      context: ./inline
      dockerfile_inline: "FROM alpine"
  remote-git:
    build: https://github.com/example/app.git#main
  db:
    image: postgres:16
  here:
    build: .
"""


def changed(local: str, *remotes: str) -> ChangedFile:
    return ChangedFile(local, remotes)


def dockerfile(name: str) -> ChangedFile:
    return changed(f"docs/ops/{name}", f"{ROOT}/docs/ops/{name}")


COMPOSE = changed(COMPOSE_LOCAL, COMPOSE_REMOTE)
RUNBOOK = changed("docs/ops/runbooks/deploy.md", f"{ROOT}/docs/ops/runbooks/deploy.md")
WHEN = {"coda-mcp-gateway": ["integrations/mcp/servers/coda/src/**"], "db": ["db/*.sql"]}

GATEWAY = "coda-mcp-gateway"
CODA_SRC = "integrations/mcp/servers/coda"


def in_ops(relative: str) -> ChangedFile:
    """A file that lands in the compose folder (its local path does not matter here)."""
    return changed(f"local/{relative}", f"{COMPOSE_DIR}/{relative}")


CASES: list[tuple[str, list[ChangedFile], tuple[str, ...], bool]] = [
    ("a Dockerfile: its service", [dockerfile(f"Dockerfile.{GATEWAY}")], (GATEWAY,), False),
    ("the other Dockerfile", [dockerfile("Dockerfile.demo")], ("demo",), False),
    ("a Dockerfile no service uses", [dockerfile("Dockerfile.old")], (), False),
    ("the injection file name", [dockerfile("Dockerfile.$(touch x)")], (), False),
    ("a runbook: nothing", [RUNBOOK], (), False),
    ("the compose file: apply", [COMPOSE], (), True),
    ("compose file and a Dockerfile", [COMPOSE, dockerfile("Dockerfile.demo")], ("demo",), True),
    ("in an own context", [in_ops("api/main.py")], ("api",), False),
    ("deep in an own context", [in_ops("api/src/a/b.py")], ("api",), False),
    ("next to an own context", [in_ops("api2/main.py")], (), False),
    ("dockerfile outside its context", [dockerfile("Dockerfile.worker")], ("worker",), False),
    ("inline dockerfile, own context", [in_ops("inline/a")], ("inline",), False),
    # `context: ..` and `build: .` are the compose folder or its ancestor: not a folder of their own
    ("under the context `..` only", [dockerfile("quality_gates/c.sh")], (), False),
    ("under the context `.` only", [in_ops("notes.txt")], (), False),
    ("`when` glob, deep", [changed(f"{CODA_SRC}/src/a/b.ts")], (GATEWAY,), False),
    ("`when` glob, outside", [changed(f"{CODA_SRC}/README.md")], (), False),
    ("`when` on a service without build", [changed("db/init.sql")], ("db",), False),
    (
        "compose file order",
        [dockerfile("Dockerfile.demo"), in_ops("api/a")],
        ("demo", "api"),
        False,
    ),
    ("nothing changed", [], (), False),
]


@pytest.mark.parametrize(
    ("changes", "services", "apply"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_affected(changes: list[ChangedFile], services: tuple[str, ...], apply: bool) -> None:
    project = read_project(load_compose(SEED, "compose"), COMPOSE_REMOTE)
    result = affected(
        project, changes, compose_dir=COMPOSE_DIR, compose_local=COMPOSE_LOCAL, when=WHEN
    )
    assert (result.services, result.apply) == (services, apply)
    assert bool(result) == bool(services or apply)


def test_builds_resolve_like_docker_compose_on_the_server() -> None:
    project = read_project(load_compose(SEED, "compose"), COMPOSE_REMOTE)
    found = {b.service: (b.context, b.dockerfile) for b in project.builds}
    assert found == {
        "coda-mcp-gateway": (ROOT, f"{ROOT}/docs/ops/Dockerfile.coda-mcp-gateway"),
        "demo": (ROOT, f"{ROOT}/docs/ops/Dockerfile.demo"),
        "api": (f"{COMPOSE_DIR}/api", f"{COMPOSE_DIR}/api/Dockerfile"),
        "worker": (f"{COMPOSE_DIR}/worker", f"{ROOT}/docs/ops/Dockerfile.worker"),
        "inline": (f"{COMPOSE_DIR}/inline", None),
        "remote-git": (None, None),
        "here": (COMPOSE_DIR, f"{COMPOSE_DIR}/Dockerfile"),
    }  # fmt: skip
    assert project.services == (
        "coda-mcp-gateway", "demo", "api", "worker", "inline", "remote-git", "db", "here"
    )  # fmt: skip


NAME_CASES = [
    ("coda-mcp-gateway", True),
    ("web_1", True),
    ("My.Service", True),
    ("_private", True),
    ("x", True),
    ("-rm", False),
    ("", False),
    ("a b", False),
    ("a$(touch x)", False),
    ("a;rm -rf /", False),
    ("a/b", False),
    ("ü", False),
    (42, False),
]


@pytest.mark.parametrize(("name", "valid"), NAME_CASES, ids=[repr(n) for n, _ in NAME_CASES])
def test_service_names_follow_compose_rules(name: object, valid: bool) -> None:
    assert valid_service_name(name) is valid


def test_invalid_service_names_are_skipped_and_reported() -> None:
    text = 'services:\n  "web$(touch x)":\n    build: ./web\n  ok:\n    build: ./ok\n'
    project = read_project(load_compose(text, "compose"), COMPOSE_REMOTE)
    assert project.services == ("ok",)
    assert [b.service for b in project.builds] == ["ok"]
    assert len(project.problems) == 1 and "not a compose service name" in project.problems[0]
    changes = [changed("x", f"{COMPOSE_DIR}/web$(touch x)/Dockerfile")]
    assert not affected(project, changes, compose_dir=COMPOSE_DIR)


def test_when_for_a_service_the_compose_file_lacks_is_a_problem() -> None:
    project = read_project(load_compose(SEED, "compose"), COMPOSE_REMOTE)
    result = affected(
        project, [changed("src/a.py")], compose_dir=COMPOSE_DIR, when={"ghost": ["src/**"]}
    )
    assert not result
    assert any("ghost" in problem for problem in result.problems)


OWN_CONTEXT_CASES: list[tuple[str, bool]] = [
    (ROOT, False),  # the ancestor of the compose folder
    ("/", False),
    (COMPOSE_DIR, False),
    (f"{COMPOSE_DIR}/api", True),
    (f"{ROOT}/integrations/mcp", True),
    (f"{ROOT}/op", True),  # a prefix of the compose folder's name is not its ancestor
]


@pytest.mark.parametrize(("context", "own"), OWN_CONTEXT_CASES)
def test_own_context(context: str, own: bool) -> None:
    assert own_context(context, (COMPOSE_DIR,)) is own


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("services: [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("!!python/object/apply:os.system ['true']", "not valid YAML"),
    ],
)
def test_bad_compose_files_are_local_file_errors(text: str, message: str) -> None:
    with pytest.raises(LocalFileError, match=message):
        load_compose(text, "compose.yml")


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"services": ["a"]}, "services: expected a mapping"),
        ({"services": {"a": {"build": 3}}}, "build: expected a path or a mapping"),
        ({"services": {"a": {"build": {"context": 1}}}}, "must be strings"),
    ],
)
def test_malformed_entries_are_problems(document: dict[str, Any], problem: str) -> None:
    project = read_project(document, COMPOSE_REMOTE)
    assert any(problem in p for p in project.problems)


def test_an_empty_compose_file_has_no_services() -> None:
    project = read_project(load_compose("", "compose"), COMPOSE_REMOTE)
    assert project.services == () and project.problems == ()


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ([COMPOSE_REMOTE], COMPOSE_REMOTE),
        ([f"{ROOT}/docs/ops/c.yml", COMPOSE_REMOTE], COMPOSE_REMOTE),
        ([f"{ROOT}/docs/ops/c.yml"], f"{ROOT}/docs/ops/c.yml"),
        ([], None),
    ],
)
def test_compose_target_prefers_the_compose_dir(targets: list[str], expected: str | None) -> None:
    assert compose_target(targets, COMPOSE_DIR) == expected


def test_compose_file_env_is_the_bare_name_in_the_compose_dir() -> None:
    assert compose_file_env(COMPOSE_REMOTE, COMPOSE_DIR) == "docker-compose.production.yml"
    elsewhere = f"{ROOT}/docs/ops/c.yml"
    assert compose_file_env(elsewhere, COMPOSE_DIR) == elsewhere
