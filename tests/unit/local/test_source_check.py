"""SourceCheck over a local repository and an answered `stat`: which missing sources are gaps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from opswatch.config import parse_config
from opswatch.core.rules import Router
from opswatch.local.builds import SourceCheck
from opswatch.model import RemoteFile

ROOT = "/srv/app"
COMPOSE = "services:\n  web:\n    build:\n      context: ..\n      dockerfile: ops/Dockerfile\n"
DOCKERFILE = """\
FROM node
COPY app/package.json ./
COPY app/src/ ./src/
COPY conf/certs/ /etc/certs/
COPY conf/.env.production /app/.env
COPY vendor/ /vendor/
"""
FILES = {
    "ops/compose.yaml": COMPOSE,
    "ops/Dockerfile": DOCKERFILE,
    "app/package.json": "{}",
    "app/src/index.ts": "1",
    "conf/certs/site.pem": "cert",
    "conf/.env.production": "X=1",
}


def check_for(tmp_path: Path, rules: list[dict[str, object]], present: set[str]) -> SourceCheck:
    for relative, content in FILES.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(content)
    doc = {
        "remote": {"host": "h", "root": ROOT},
        "rule": [{"from": "ops", "match": ["compose.yaml"], "to": "ops"}, *rules],
        "rebuild": {"compose_file": "ops/compose.yaml", "compose_dir": "ops"},
    }
    config = parse_config(doc, tmp_path / "opswatch.toml")

    def stat(paths: Sequence[str]) -> Mapping[str, RemoteFile | None]:
        return {p: RemoteFile(0, 0, 0o644) if p in present else None for p in paths}

    return SourceCheck(config, Router.from_config(config), stat)


def test_gaps_name_what_no_rule_sends_and_why(tmp_path: Path) -> None:
    check = check_for(tmp_path, [{"from": "app/src", "to": "app/src"}], {f"{ROOT}/vendor"})
    assert [(g.source.written, g.reason) for g in check.gaps()] == [
        ("app/package.json", "not on the server and no rule sends it"),
        (
            "conf/certs/",
            'not on the server, and opswatch never sends it (never: matches "certs/"; '
            "no rule overrides never)",
        ),
        (
            "conf/.env.production",
            'not on the server, and opswatch never sends it (never: matches ".env.*"; '
            "no rule overrides never)",
        ),
    ]


def test_before_a_build_a_source_a_rule_sends_but_that_has_not_landed_counts(
    tmp_path: Path,
) -> None:
    everything = [{"from": "app", "to": "app"}, {"from": "conf", "to": "conf"}]
    present = {f"{ROOT}/vendor", f"{ROOT}/conf/certs", f"{ROOT}/conf/.env.production"}
    check = check_for(tmp_path, everything, present)
    assert check.gaps() == []
    waiting = "not on the server yet (a rule sends it: it has not landed)"
    assert check.before_build("web") == "\n".join(
        [f"web: COPY app/package.json: {waiting}", f"web: COPY app/src/: {waiting}"]
    )


def test_without_a_readable_compose_file_the_build_is_not_held_back(tmp_path: Path) -> None:
    check = check_for(tmp_path, [], set())
    (tmp_path / "ops/compose.yaml").unlink()
    assert check.before_build("web") is None
