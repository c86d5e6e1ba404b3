"""`opswatch init`'s rules for build sources: which are proposed, merged, or left out and why."""

from __future__ import annotations

from pathlib import Path

from opswatch.config import Rule
from opswatch.local.buildrules import SourceRule, propose_source_rules, read_build_needs

COMPOSE = """\
services:
  gateway:
    build:
      context: ..
      dockerfile: docs/ops/Dockerfile.gateway
  api:
    build: ./api
"""
GATEWAY = """\
FROM node
COPY integrations/coda/src/package.json integrations/coda/src/tsconfig.json ./
COPY integrations/coda/src/ ./src/
COPY tools/a.sh tools/b.sh /bin/
COPY scripts/*.sh /bin/
COPY docs/ops/runbooks/ /srv/
COPY docs/ops/certs/site.pem /etc/
COPY missing/ /m/
COPY $DIR/x /x
"""
FILES = {
    "docs/ops/docker-compose.production.yml": COMPOSE,
    "docs/ops/Dockerfile.gateway": GATEWAY,
    "docs/ops/runbooks/deploy.md": "# deploy\n",
    "docs/ops/certs/site.pem": "cert\n",
    "integrations/coda/src/package.json": "{}\n",
    "integrations/coda/src/tsconfig.json": "{}\n",
    "tools/a.sh": "#!/bin/sh\n",
    "tools/b.sh": "#!/bin/sh\n",
    "scripts/run.sh": "#!/bin/sh\n",
    "ops/api/Dockerfile": "FROM python\nCOPY . /app\n",
    "ops/api/app.py": "print()\n",
}
OPS_RULES = [
    Rule("docs/ops", ("docker-compose.production.yml",), ("ops",)),
    Rule("docs/ops", ("Dockerfile.*", "runbooks/"), ("docs/ops",)),
]


def test_rules_for_every_source_merged_per_folder(tmp_path: Path) -> None:
    for relative, content in FILES.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(content)
    needs = read_build_needs(tmp_path, "docs/ops/docker-compose.production.yml", "ops")
    assert [n.service for n in needs] == ["gateway", "api"]
    plan = propose_source_rules(tmp_path, needs, OPS_RULES)
    assert [(r.source, r.match, r.to) for r in plan.rules] == [
        ("integrations/coda/src", None, "integrations/coda/src"),
        ("tools", ("a.sh", "b.sh"), "tools"),
        ("scripts", ("*.sh",), "scripts"),
        ("ops/api", None, "ops/api"),
    ]
    first: SourceRule = plan.rules[0]
    assert first.why == (
        "gateway: COPY integrations/coda/src/package.json",
        "gateway: COPY integrations/coda/src/tsconfig.json",
        "gateway: COPY integrations/coda/src/",
    )
    assert plan.notes == (
        "gateway: $DIR/x: depends on ARG or ENV; not analysed",
        'gateway: COPY docs/ops/certs/site.pem: stays here (never: matches "certs/")',
        "gateway: COPY missing/: missing is not in this repository; no rule proposed",
    )
